// Package hostfn holds the host functions: the only door out of a
// WebAssembly sandbox. Each Provider owns one capability (for example "log")
// and contributes functions to the "nimbus" import module; a Registry, built
// explicitly from a list of providers, instantiates that module into a
// wazero runtime.
//
// It sits at the end of the request flow:
//
//	gateway -> scheduler -> runtime -> guest -> host functions
//
// Guarantees:
//   - Every function of every provider is always importable, so a module
//     links whatever it was granted; grants are checked per call.
//   - A call is allowed only when the calling invocation's Call (carried in
//     the context the runtime passes to the guest) grants the provider's
//     capability. A denied call does not trap: it returns CodeDenied to the
//     guest, writes a warning to the invocation's log (stream "log", level
//     "warn") saying how to grant the capability in nimbus.yaml, and logs
//     through slog with keys app, function and capability.
//   - Functions treat every pointer and length from the guest as hostile:
//     out-of-range arguments return CodeBadArgument, never a host panic.
//
// The status codes and the function signatures are part of the guest ABI;
// they are specified in sdk/go/wire.
//
// Adding a capability (kv, publish, fetch, ...) means writing a Provider and
// listing it in NewDefaultRegistry and Capabilities.
package hostfn
