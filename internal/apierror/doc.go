// Package apierror is how every Nimbus HTTP surface (gateway and control
// plane API) reports a failure: a stable machine-readable code, an HTTP
// status, a message that says what was wrong and how to fix it, and the
// headers that go with it (Retry-After, Nimbus-Flow; X-Nimbus-Error on
// every one).
//
// Errors are mapped to HTTP in one place, here, at the edge (From, and
// FromInvocation for the failure of a named function): the packages below
// return typed errors (sentinels matched with errors.Is, types with
// errors.As) and know no HTTP. Write answers any error through From, so a
// handler returns the domain's error as it is. An edge handler may still
// build an *Error itself for what only it knows (a malformed query, its own
// body limit); From passes an *Error in the chain through unchanged.
//
// The package sits at the edge with gateway and api: it imports the domain
// packages whose errors it maps, and only gateway, api, the server's wiring
// and the client (for the wire format) import it.
package apierror
