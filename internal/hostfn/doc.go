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
//     capability. Scoped capabilities are granted per resource: "kv:counts"
//     allows reads and writes of bucket counts, "kv:counts:read" reads only;
//     the registry decodes the bucket a kv call names (Function.Scope) and
//     checks it before the function runs. A denied call does not trap: it returns CodeDenied to the
//     guest, writes one warning per grant and invocation to the
//     invocation's log (stream "log", level "warn") naming the exact grant
//     to add in nimbus.yaml, and logs through slog with keys app, function
//     and capability.
//   - Functions treat every pointer and length from the guest as hostile:
//     out-of-range arguments return CodeBadArgument, never a host panic.
//
// The status codes and the function signatures are part of the guest ABI;
// they are specified in sdk/go/wire.
//
// The kv functions (KVProvider) reach the calling app's buckets through a
// KVStore, a *state.Buckets in the server (NewDefaultRegistry(logger,
// WithKV(buckets))); without one they return CodeUnavailable.
//
// The publish function (PublishProvider, capability "publish:TOPIC")
// appends one CloudEvent to a topic of the calling app through a Publisher,
// the *server.Server in the server (WithPublisher(srv)); without one it
// returns CodeUnavailable. The dead-letter topic is closed to guests
// whatever they are granted. An event without a traceparent extension gets
// a child of the invocation's (Call.TraceParent), one without a source gets
// /nimbus/APP/FUNCTION. A publish is durable when it returns and is not
// transactional with the invocation: it stays published if the function
// fails afterwards.
//
// Adding a capability (fetch, ...) means writing a Provider and
// listing it in NewDefaultRegistry and Capabilities.
package hostfn
