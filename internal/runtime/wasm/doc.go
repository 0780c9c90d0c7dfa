// Package wasm is the WebAssembly runtime of Nimbus: it implements
// runtime.Runtime on wazero (compiler backend, WASI preview 1).
//
// It sits between the scheduler and the guest:
//
//	gateway -> scheduler -> runtime (this package) -> guest -> host functions
//
// # Contracts
//
// Load detects how a module talks to the host from its exports:
//
//   - SDK (runtime.ContractSDK): a WASI reactor exporting the Nimbus ABI
//     (nimbus_abi_v1, nimbus_alloc, nimbus_handle; specified in sdk/go/wire).
//     NewInstance instantiates it and runs _initialize (not _start): that is
//     the cold start. The first instance of a module then captures its
//     memory and mutable globals (snapshot.go); later instances are
//     restored from that image instead of running _initialize. An instance
//     serves requests in turn, one guest call each when the guest exports
//     nimbus_reuse_request_buffer; its stdout
//     and stderr go, line by line, to the LogSink of the request being served.
//   - WAGI (runtime.ContractWAGI): a WASI command exporting _start, spoken to
//     as CGI (RFC 3875, as WAGI does). The request is in the environment and
//     on stdin, which WASI fixes at instantiation, so NewInstance is cheap and
//     each Handle instantiates and runs the command; the response is CGI on
//     stdout (see parseCGI), stderr goes to the LogSink. Environment: the
//     RFC 3875 variables (REQUEST_METHOD, PATH_INFO = the whole request path,
//     SCRIPT_NAME = "", QUERY_STRING, CONTENT_TYPE, CONTENT_LENGTH,
//     SERVER_NAME, SERVER_PORT, SERVER_PROTOCOL, REMOTE_ADDR, REQUEST_URI,
//     GATEWAY_INTERFACE=CGI/1.1, HTTP_<HEADER> per header), WAGI's extras
//     (X_MATCHED_ROUTE, X_FULL_URL, X_RAW_PATH_INFO), route parameters as
//     X_PARAM_<NAME> (uppercased, non-alphanumerics as '_'), X_INVOCATION_ID
//     and TRACEPARENT, on top of the function's own env (CGI variables win).
//
// Imports are checked at Load: a module may import only
// wasi_snapshot_preview1 and the "nimbus" host module (package hostfn), with
// the signatures the host provides. Anything unusable fails Load with an
// error wrapping runtime.ErrInvalidModule that says why.
//
// # Limits
//
// Limits come complete from the function (model.Plan applies the
// defaults); Load refuses a Spec with a zero limit rather than guess one.
// The request body limit is the scheduler's to check, before a request
// reaches an instance (runtime.CheckRequestBody). The
// timeout is a context deadline, enforced by instrumentation rather than by
// wazero's CloseOnContextDone (off): Load rewrites every module (package
// wasmrw) so that each loop header and function entry decrements a fuel
// counter and, every fuelPerCheck of them, calls a host function that stops
// the guest when the call's context is done. That stops even a guest
// spinning in a loop or recursing without one, within microseconds of the
// check failing, and gives the Go scheduler and garbage collector a
// safepoint in a spinning guest. The same rewrite merges Go's tens of
// thousands of small data segments into a few, which is most of a Go
// guest's instantiation time. The compilation cache holds the rewritten
// modules (wazero keys it by their hash). Memory is capped per instance by a wazero
// memory allocator that refuses to grow past the limit and records the
// refusal, so a guest that dies of it (Go prints "out of memory" and exits)
// is reported precisely as ErrMemoryLimit. The allocator backs a memory
// with a private mapping of the whole limit (on Linux), over whose start
// the module's data segments (moved out of the module at load) or the
// snapshot are mapped copy-on-write from a memory file (image.go), so an
// instance costs the pages it writes and growing copies nothing. Functions
// loaded from one artifact share its compiled code and data image
// (code.go). With an artifact source (Config.Artifacts), only the
// artifacts in use and a budget of the most recently used idle ones stay
// compiled: an idle function's code is released and reloaded at its next
// instance, which concurrent first instances share. One wazero runtime therefore
// serves modules of every memory limit; all share one compilation cache,
// on disk when Config.CacheDir is set, so a restarted process does not
// recompile. A response over the limit is ErrResponseTooLarge; a WAGI
// guest is stopped as soon as its stdout (the response) passes the limit
// plus the CGI header allowance, so an endless writer fails fast naming
// that limit rather than its timeout. An SDK guest's stdout is log output:
// it is passed on line by line, the sink's budget decides what is kept, and
// when Handle returns the sink is flushed (runtime.LogFlusher). Traps,
// panics, non-zero exits and contract violations are ErrGuestFailed with the
// guest's reason (its panic line or last stderr line). Every pointer and
// length a guest returns is bounds-checked; a hostile guest fails its own
// request, never the process.
//
// # Concurrency
//
// Runtime and modules are safe for concurrent use; an instance serves one
// request at a time. After Handle returns an error, an SDK instance refuses
// further requests: the caller closes it and makes a new one.
package wasm
