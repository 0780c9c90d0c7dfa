package model

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
)

// Route auth types (RouteAuth.Type).
const (
	// AuthKey admits a request that carries an API key of the app's tenant
	// with the invoke scope ("Authorization: Bearer nmb_...").
	AuthKey = "key"
	// AuthJWT admits a request that carries a JWT signed by a key of the
	// route's JWKS, from its issuer, for its audience, not expired.
	AuthJWT = "jwt"
)

// JWTAlgorithms are the signature algorithms a JWT route may accept: the
// asymmetric ones of RFC 7518 and EdDSA (RFC 8037). HMAC is not among
// them (a JWKS publishes public keys; a shared secret in a manifest is a
// leaked one) and neither is "none".
var JWTAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// DefaultJWTAlgorithms are RouteAuth.Algorithms when a route names none.
var DefaultJWTAlgorithms = []string{"EdDSA", "ES256", "RS256"}

// Limits of a route's auth.
const (
	// MaxJWKSBytes caps an inline JWKS, and a fetched one.
	MaxJWKSBytes = 64 << 10
	// MaxAuthClaims caps the claims forwarded to the function.
	MaxAuthClaims = 16
	maxClaimName  = 64
	maxAuthString = 1024
)

// RouteAuth is what a route requires of a request before its function
// runs. nil (no auth) means the route is public.
//
// A route of type AuthKey sets nothing else. A route of type AuthJWT sets
// Issuer, Audience and exactly one of JWKSURL or JWKS.
type RouteAuth struct {
	// Type is AuthKey or AuthJWT.
	Type string `json:"type"`
	// Issuer must equal the token's iss claim.
	Issuer string `json:"issuer,omitempty"`
	// Audience must be one of the token's aud claim.
	Audience string `json:"audience,omitempty"`
	// JWKSURL is where the keys are fetched: https, or http to a loopback
	// address. Fetched through the node's egress guard, cached, and
	// fetched again (at a bounded rate) when a token names an unknown kid.
	JWKSURL string `json:"jwks_url,omitempty"`
	// JWKS is a JSON Web Key Set ({"keys": [...]}) given inline, for
	// nodes that cannot reach the issuer (the manifest's jwks_file fills
	// it).
	JWKS string `json:"jwks,omitempty"`
	// Algorithms are the signature algorithms accepted, a subset of
	// JWTAlgorithms, sorted; default DefaultJWTAlgorithms.
	Algorithms []string `json:"algorithms,omitempty"`
	// Claims are the claims forwarded to the function besides sub, each
	// as the request header X-Nimbus-Auth-Claim-<name>, sorted.
	Claims []string `json:"claims,omitempty"`
}

// Public reports whether the route admits every request.
func (rt Route) Public() bool { return rt.Auth == nil }

// Equal reports whether a and b are the same auth (both nil included).
func (a *RouteAuth) Equal(b *RouteAuth) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Type == b.Type && a.Issuer == b.Issuer && a.Audience == b.Audience && a.JWKSURL == b.JWKSURL &&
		a.JWKS == b.JWKS && slices.Equal(a.Algorithms, b.Algorithms) && slices.Equal(a.Claims, b.Claims)
}

// CheckRouteAuth validates a route's auth and returns it in canonical form
// (a copy: algorithms defaulted, algorithms and claims sorted and
// deduplicated). Errors say which field is wrong and how to fix it; they
// do not wrap ErrInvalid (the caller adds the route).
func CheckRouteAuth(a *RouteAuth) (*RouteAuth, error) {
	if a == nil {
		return nil, nil
	}
	c := *a
	switch a.Type {
	case AuthKey:
		if a.Issuer != "" || a.Audience != "" || a.JWKSURL != "" || a.JWKS != "" || len(a.Algorithms) > 0 || len(a.Claims) > 0 {
			return nil, fmt.Errorf("auth type %s takes no other fields (issuer, audience, jwks_url, jwks, algorithms and claims are for type %s)", AuthKey, AuthJWT)
		}
		return &c, nil
	case AuthJWT:
	case "":
		return nil, fmt.Errorf("auth needs a type: %s (an API key of the app's tenant) or %s (a JWT checked against a JWKS)", AuthKey, AuthJWT)
	default:
		return nil, fmt.Errorf("auth type %q is not known: use %s (an API key of the app's tenant) or %s (a JWT checked against a JWKS)", a.Type, AuthKey, AuthJWT)
	}
	for _, f := range []struct{ name, v, example string }{
		{"issuer", a.Issuer, "https://auth.example.com/"},
		{"audience", a.Audience, "orders-api"},
	} {
		if strings.TrimSpace(f.v) == "" {
			return nil, fmt.Errorf("auth type jwt needs %s: the value the token's %s claim must carry, such as %s", f.name, claimOf(f.name), f.example)
		}
		if len(f.v) > maxAuthString || strings.ContainsFunc(f.v, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			return nil, fmt.Errorf("auth %s must be at most %d bytes without control characters", f.name, maxAuthString)
		}
	}
	switch {
	case a.JWKSURL == "" && a.JWKS == "":
		return nil, fmt.Errorf("auth type jwt needs the issuer's keys: jwks_url (such as https://auth.example.com/.well-known/jwks.json) or jwks_file (a JWKS saved next to the manifest)")
	case a.JWKSURL != "" && a.JWKS != "":
		return nil, fmt.Errorf("auth has both jwks_url and jwks: give one")
	case a.JWKSURL != "":
		if err := CheckJWKSURL(a.JWKSURL); err != nil {
			return nil, err
		}
	default:
		if err := CheckJWKS([]byte(a.JWKS)); err != nil {
			return nil, fmt.Errorf("auth jwks: %w", err)
		}
	}
	c.Algorithms = DefaultJWTAlgorithms
	if len(a.Algorithms) > 0 {
		for _, alg := range a.Algorithms {
			if !slices.Contains(JWTAlgorithms, alg) {
				if strings.EqualFold(alg, "none") || strings.HasPrefix(strings.ToUpper(alg), "HS") {
					return nil, fmt.Errorf("auth algorithm %q is refused: a route accepts only signatures by a public key of the JWKS (%s)", alg, strings.Join(JWTAlgorithms, ", "))
				}
				return nil, fmt.Errorf("auth algorithm %q is not known: use %s", alg, strings.Join(JWTAlgorithms, ", "))
			}
		}
		c.Algorithms = slices.Compact(slices.Sorted(slices.Values(a.Algorithms)))
	} else {
		c.Algorithms = slices.Clone(DefaultJWTAlgorithms)
	}
	c.Claims = nil
	if len(a.Claims) > 0 {
		if len(a.Claims) > MaxAuthClaims {
			return nil, fmt.Errorf("auth forwards %d claims, over the limit of %d", len(a.Claims), MaxAuthClaims)
		}
		for _, cl := range a.Claims {
			if err := checkClaimName(cl); err != nil {
				return nil, err
			}
		}
		c.Claims = slices.Compact(slices.Sorted(slices.Values(a.Claims)))
	}
	return &c, nil
}

func claimOf(field string) string {
	if field == "issuer" {
		return "iss"
	}
	return "aud"
}

// checkClaimName: a claim becomes part of a header name, so letters,
// digits, '_' and '-' only; sub is always forwarded.
func checkClaimName(name string) error {
	ok := name != "" && len(name) <= maxClaimName
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = c == '_' || c == '-' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
	}
	if !ok {
		return fmt.Errorf("auth claim %q cannot be forwarded: a claim name becomes a header name, so use 1 to %d letters, digits, '_' and '-'", name, maxClaimName)
	}
	if name == "sub" {
		return fmt.Errorf("auth claim sub is always forwarded (as X-Nimbus-Auth-Subject): remove it from claims")
	}
	return nil
}

// CheckJWKSURL fails unless u is an https URL, or an http one to a
// loopback address (an issuer on the same machine, tests): keys fetched in
// the clear could be replaced on the way.
func CheckJWKSURL(u string) error {
	p, err := url.Parse(u)
	if err != nil || p.Host == "" || len(u) > maxAuthString {
		return fmt.Errorf("auth jwks_url %q is not an absolute URL, such as https://auth.example.com/.well-known/jwks.json", u)
	}
	if p.User != nil {
		return fmt.Errorf("auth jwks_url must not carry credentials")
	}
	switch p.Scheme {
	case "https":
		return nil
	case "http":
		host := p.Hostname()
		if ip := net.ParseIP(host); host == "localhost" || ip != nil && ip.IsLoopback() {
			return nil
		}
		return fmt.Errorf("auth jwks_url %q uses http: keys fetched in the clear could be replaced on the way; use https (http is accepted only for a loopback address)", u)
	default:
		return fmt.Errorf("auth jwks_url %q: scheme must be https", u)
	}
}

// CheckJWKS fails unless data is a JSON Web Key Set with at least one key,
// of at most MaxJWKSBytes. It checks the shape; the gateway parses the keys
// themselves when it provisions the route.
func CheckJWKS(data []byte) error {
	if len(data) > MaxJWKSBytes {
		return fmt.Errorf("the key set is %d bytes, over the limit of %d", len(data), MaxJWKSBytes)
	}
	var set struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return fmt.Errorf("not a JSON Web Key Set (RFC 7517, {\"keys\": [...]}): %w", err)
	}
	if len(set.Keys) == 0 {
		return fmt.Errorf("the key set has no keys: a JWKS is {\"keys\": [{\"kty\": ..., \"kid\": ...}]}")
	}
	for i, k := range set.Keys {
		if kty, _ := k["kty"].(string); kty == "" {
			return fmt.Errorf("key %d has no kty", i)
		}
		if k["kty"] == "oct" {
			return fmt.Errorf("key %d is a symmetric key (kty oct): a route verifies signatures of public keys only", i)
		}
		if _, private := k["d"]; private {
			return fmt.Errorf("key %d is a private key (it has \"d\"): publish only public keys", i)
		}
	}
	return nil
}
