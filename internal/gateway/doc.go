// Package gateway is the HTTP ingress for functions: it matches a request to
// the route of an active app revision, enforces the request body limit,
// assigns the invocation id and W3C trace context, hands the invocation to
// the scheduler and writes the guest's response back.
//
// Invocations is the one handler of an invocation over HTTP (read the body
// with the function's limit, queue it or run it, answer); the routes and
// the API's invoke endpoint each hold one, so the two cannot drift. Its
// failures are answered as apierror.FromInvocation maps them. A body over
// the limit is refused as it is read, without holding more than the limit
// in memory, and counted in the metrics (SetMetrics) as the scheduler
// counts its own failures.
//
// Bodies wraps the gateway's and the API's handlers: every request body
// must arrive at a minimum rate (a connection read deadline moved forward
// as bytes arrive; 408 body_too_slow), and the bodies of invocations,
// events and KV writes are charged to their app's share of the node's body
// budget (ChargeBody) before they are buffered, until the request ends
// (503 body_budget). Together they bound the memory that any number of
// clients, however slow, can make the node hold (docs/functions.md).
//
// Routing uses net/http ServeMux patterns ("GET /users/{id}"). The routing
// table is immutable and swapped atomically when a revision is activated, so
// requests never see a half-built table and the hot path takes no lock.
//
// The gateway is a component of the server (component.go): it keeps the
// revision of each app whose routes it serves and rebuilds the whole table
// from them. Validate checks a revision's routes against that table and the
// gateway's built-in routes (CloudEvents ingress at EventsPattern), so a
// deploy that would break the table is refused before it is recorded.
//
// Flow: client -> gateway -> scheduler -> runtime.
package gateway
