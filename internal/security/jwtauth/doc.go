// Package jwtauth verifies the JSON Web Tokens that a route with auth type
// jwt requires (model.RouteAuth): a compact JWS signed by a key of the
// route's JSON Web Key Set, with one of the route's algorithms, from its
// issuer, for its audience, carrying an expiry that has not passed.
//
// Keys come inline (the manifest's jwks or jwks_file) or from a URL. A
// fetched set is cached; it is fetched again when it is older than
// Options.TTL, or when a token names a kid the set does not hold (the
// issuer rotated its keys), but never more often than once per
// Options.MinRefresh, so tokens with made-up kids cannot make the node
// hammer the issuer. A set that cannot be refetched keeps serving while it
// lasts; with none at all, Verify returns ErrKeysUnavailable. Responses are
// capped at model.MaxJWKSBytes.
//
// Signatures, algorithm checks and claim validation are go-jose's
// (github.com/go-jose/go-jose/v4); RATIONALE.md says why. "none" and HMAC
// are never accepted: model.CheckRouteAuth refuses them, and New too.
//
// It sits below the gateway, which maps its errors to 401 and 503 and
// forwards the verified subject and claims to the function.
package jwtauth
