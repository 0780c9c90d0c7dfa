// Package scheduler decides which instance serves an invocation.
//
// It keeps, per active function revision, a pool of instances of the loaded
// module. An invocation takes an idle instance (warm) or creates one (cold)
// if the function is below max_instances, otherwise it waits, bounded by the
// function's timeout. An instance serves one request at a time: it is either
// idle in the pool or held by exactly one invocation, never both, and never
// two. An instance whose request failed is closed, not reused, because the
// guest's state is unknown. Instances idle for longer than the idle timeout
// are closed, so a function scales to zero.
//
// Both doors into a function, the gateway's HTTP routes and the API's
// invoke, come through Scheduler.Invoke, which is where an invocation gets
// its id, trace context, log sink, deadline and metrics.
//
// Flow: gateway/api -> scheduler -> runtime.
package scheduler
