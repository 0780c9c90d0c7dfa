// Package scheduler decides which instance serves an invocation.
//
// It keeps, per active function revision, a pool of instances of the loaded
// module, loaded by the runtime the function names (model.Function.Runtime,
// one of the node's runtime.Set; a function whose runtime the node does not
// run is refused with ErrNoRuntime before activation). An invocation takes
// a free slot of a busy instance, an idle instance (warm), or creates one
// (cold) if the function is below max_instances, otherwise it waits,
// bounded by the function's timeout. An instance serves at most
// min(the function's concurrency, its module's MaxConcurrency) requests at
// once; for wasm that is one: an instance is either idle in the pool or
// held by exactly one invocation, never both, and never two. An instance
// whose request failed takes no new request and is closed once its last
// one returns, because the guest's state is unknown. Instances idle for
// longer than the idle timeout are closed, so a function scales to zero.
//
// The Scheduler is a component of the server (Validate loads the modules,
// Provision activates, Retire deactivates).
//
// Every invocation (the gateway's HTTP routes, the API's invoke, event
// and async deliveries) comes through Scheduler.Invoke, which is where it
// gets its id, trace context, log sink, deadline and metrics, and where its
// body meets the function's max_request_body (runtime.CheckRequestBody),
// before it takes a flow permit or an instance.
//
// Errors are typed (ErrNotFound, ErrBusy, ErrNoRuntime, the runtime's and
// flow control's); Reason names them for metrics, and the edge (package
// apierror) decides the HTTP status of each. The scheduler knows no HTTP
// status of its own: Options.Status labels failures in the metrics.
//
// Flow: gateway/api -> scheduler -> runtime.
package scheduler
