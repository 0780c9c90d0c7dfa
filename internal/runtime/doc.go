// Package runtime defines what a function runtime is: something that loads a
// function's artifact once (compile, validate) and then creates instances that
// serve requests.
//
// It sits in the middle of the request flow:
//
//	gateway -> scheduler -> runtime -> guest -> host functions
//
// The scheduler owns instance lifetimes (pools, concurrency, scaling); a runtime
// only knows how to make and drive one instance. Implementations live in
// subpackages: wasm (wazero, the default) and, later, process. A node runs
// a Set of runtimes keyed by name; each function names its own
// (model.Function.Runtime).
//
// Guarantees every implementation keeps:
//   - Load rejects a broken artifact with an error that says why, before any
//     traffic reaches it.
//   - An Instance serves at most Module.MaxConcurrency requests at once (wasm:
//     one); the scheduler relies on this and never sends it more.
//   - Limits hold against hostile guests: memory cap, deadline, request and
//     response size. A limit breach fails that request with one of the typed
//     errors below and never takes down the process.
package runtime
