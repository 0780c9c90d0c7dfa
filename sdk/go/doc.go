// Package nimbus is the Go guest SDK of Nimbus: it turns an ordinary
// net/http handler into a Nimbus WebAssembly function.
//
// A function registers its handler in init and has an empty main:
//
//	package main
//
//	import (
//		"fmt"
//		"net/http"
//
//		nimbus "github.com/nimbus-dev/nimbus/sdk/go"
//	)
//
//	func init() {
//		nimbus.HandleFunc(func(w http.ResponseWriter, r *http.Request) {
//			nimbus.Log(nimbus.LevelInfo, "greeting "+r.PathValue("name"))
//			fmt.Fprintf(w, "hello, %s\n", r.PathValue("name"))
//		})
//	}
//
//	func main() {}
//
// Build it as a WASI reactor (Go 1.24 or later):
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o hello.wasm .
//
// -buildmode=c-shared is what makes a reactor: the module exports
// _initialize (which runs the Go runtime and package init functions, but not
// main) instead of _start, and the //go:wasmexport functions of this package
// become callable after it. That is why the handler is registered in init:
// main never runs. A module built without -buildmode=c-shared exports _start
// and Nimbus rejects it with a message that says to add the flag.
//
// # What a handler sees
//
// The *http.Request carries the method, URL (path and query), headers, host,
// remote address and body of the invocation. Route parameters of the matched
// route ("GET /hello/{name}") are available with r.PathValue("name"), and
// r.Pattern holds the route. InvocationID and TraceParent return the
// invocation id and the W3C traceparent; the traceparent is also set as the
// Traceparent header when the caller did not send one, so tracing libraries
// pick it up. The response is what the handler writes; an unset status is 200
// and an unset Content-Type is sniffed, as in net/http. A handler that panics
// fails the invocation (the panic and stack go to the function's stderr log).
//
// # The lean API
//
// HandleRequest registers a handler of the SDK's own types instead:
// a *Request whose fields are read in place (no header or path-value map,
// one allocation per request) and a *Response written into buffers reused
// from one request to the next. In a Go guest compiled to wasm it is
// several times less work per request than a net/http handler; it has the
// same defaults (status 200, a sniffed Content-Type, the Traceparent
// header) and the same failure on a panic.
//
// # Host functions and capabilities
//
// Log writes a structured log line. Like every host function it needs a
// capability granted in nimbus.yaml (capabilities: [log]); without it Log
// returns an error wrapping ErrDenied and the call has no other effect.
//
// Bucket gives a key-value bucket of the app (declared under buckets: in
// nimbus.yaml), with Get, Put (options TTL and IfRevision for per-key expiry
// and compare-and-swap), Delete, List and ListPage. Reads need the
// capability "kv:NAME:read", writes "kv:NAME":
//
//	counts := nimbus.Bucket("counts")
//	v, rev, err := counts.Get("orders.total")
//	if errors.Is(err, nimbus.ErrNotFound) { ... }
//	_, err = counts.Put("orders.total", next, nimbus.IfRevision(rev))
//	if errors.Is(err, nimbus.ErrRevisionMismatch) { ... retry ... }
//
// A Put that returned is on disk.
//
// Instances are reused: one instance serves many requests in turn, never two
// at once, so package-level state survives between requests of one instance
// but not between instances. Do not rely on it for anything but caches.
//
// Outside WebAssembly (go test on the host), the package builds too: Log
// writes to standard error, so handlers can be unit-tested with
// net/http/httptest; key-value calls return errors wrapping ErrUnavailable.
//
// The ABI between this package and the host is specified in package wire.
package nimbus
