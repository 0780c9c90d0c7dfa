// Package security holds who may do what on a Nimbus server.
//
// This first version knows one kind of identity: API tokens. A token is 32
// random bytes, shown to the user once ("nmb_" + base64url) and stored only
// as its sha256, in the security KV bucket, with its name, the scopes it
// carries (read, invoke, deploy, secrets, admin; admin implies the others) and an
// optional expiry, and optionally a tenant: a token bound to a tenant is a
// key of that tenant and reaches only its apps (Identity.Reaches); one bound
// to none is node-wide. A token's public id is the first 12 hex digits of that
// hash: listings show ids, never secrets. The first start of a server
// creates an admin token; every control-plane API call must present a token
// ("Authorization: Bearer nmb_..."). Tokens are never logged.
//
// Revocation deletes the record. Verify caches answers only while Watch
// runs, and Watch drops a cached answer on every change to its record, on
// this node or any other sharing the store; the node that revokes drops it
// at once. So a revoked token is refused by the next call on the revoking
// node, and on the others as soon as the deletion reaches their watch.
package security
