// Package security holds who may do what on a Nimbus server.
//
// This first version knows one kind of identity: API tokens. A token is 32
// random bytes, shown to the user once ("nmb_" + base64url) and stored only
// as its sha256, in the security KV bucket, with the scopes it carries. The
// first start of a server creates an admin token; every control-plane API
// call must present a token ("Authorization: Bearer nmb_..."). Tokens are
// never logged.
package security
