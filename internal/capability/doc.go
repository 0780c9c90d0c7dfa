// Package capability holds what a function may do outside its sandbox, in
// terms no runtime owns: the grant grammar of nimbus.yaml's capabilities:
// lists, the identity of a calling invocation (Caller), and the services a
// function reaches: Log, KV and Publish. Runtimes reach the services through
// thin adapters that decode their own wire format and map the services'
// typed errors to their own status codes: the wasm host functions
// (internal/runtime/wasm/hostfn) and the process runtime's platform API
// (internal/runtime/process, api.go).
//
// It sits at the end of the request flow:
//
//	gateway -> scheduler -> runtime -> guest -> adapter -> capability services
//
// Guarantees:
//   - One grammar. Parse is the only parser of a grant ("log", "kv:B",
//     "kv:B:read", "publish:T"); the manifest validates with it and Grants
//     checks with it.
//   - Deny by default, checked in one place. Every service call names the
//     grant it needs and passes one check before it touches anything: a
//     call not granted returns a *DeniedError (matching ErrDenied) and
//     writes, once per grant and invocation, a warning to the invocation's
//     log (stream "log") naming the exact grant to add in nimbus.yaml, and
//     a slog warning with keys app, function, capability, host_function and
//     invocation. A nil Caller is denied. Arguments are validated before
//     the grant is checked (a bucket "counts:read" is malformed, not a
//     match for "kv:counts:read"), and nothing is done before either.
//   - Typed errors. Every error matches exactly one of ErrDenied,
//     ErrBadArgument, ErrTooLarge, ErrUnavailable, ErrNotFound,
//     ErrRevisionMismatch (a *RevisionMismatchError with the current
//     revision), ErrNoBucket or ErrNoTopic, and wraps its cause. Backend
//     failures the function cannot act on are logged and become
//     ErrUnavailable.
//   - Scope. kv and publish reach only the caller's app. The dead-letter
//     topic is closed to functions whatever they are granted. A published
//     event is durable when Publish returns, is not transactional with the
//     invocation, and carries a child of the invocation's traceparent
//     unless it has its own.
//
// The package imports no runtime: a service is usable, and tested, without
// WebAssembly.
//
// Adding a capability means a Kind here (and its grammar in Parse), a
// service whose methods call check first, an adapter per runtime, and the
// manifest schema and docs; see docs/functions.md.
package capability
