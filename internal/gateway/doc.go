// Package gateway is the HTTP ingress for functions: it matches a request to
// the route of an active app revision, enforces the request body limit,
// assigns the invocation id and W3C trace context, hands the invocation to
// the scheduler and writes the guest's response back.
//
// Routing uses net/http ServeMux patterns ("GET /users/{id}"). The routing
// table is immutable and swapped atomically when a revision is activated, so
// requests never see a half-built table and the hot path takes no lock.
//
// Flow: client -> gateway -> scheduler -> runtime.
package gateway
