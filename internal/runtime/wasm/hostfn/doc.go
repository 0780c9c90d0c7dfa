// Package hostfn is the WebAssembly ABI adapter over the capability
// services (internal/capability): the host functions of the "nimbus"
// import module, the only door out of a wasm sandbox. Each Provider serves
// one capability kind (for example "log") over its service; a Registry,
// built explicitly from a list of providers, instantiates the module into a
// wazero runtime.
//
// It sits at the end of the request flow:
//
//	gateway -> scheduler -> runtime/wasm -> guest -> hostfn -> capability services
//
// An adapter does three things and nothing else: it decodes the guest's
// arguments (pointers and lengths into guest memory, wire encodings),
// calls the service on behalf of the invocation's capability.Caller (put
// in the context by the runtime with capability.WithCaller), and maps the
// service's typed error to the guest's status code by type (errors.Is and
// errors.As), writing out arguments. Grants, denial logging, validation of
// names and events, and backend errors are the services'.
//
// Guarantees:
//   - Every function of every provider is always importable, so a module
//     links whatever it was granted; the service checks the grant per call,
//     and a denied call returns CodeDenied, never a trap.
//   - Every pointer and length from the guest is hostile: an area outside
//     memory or an argument over its wire limit returns CodeBadArgument (or
//     CodeTooLarge for a value or event over its cap), never a host panic,
//     and is checked before the service is called, so nothing happens.
//   - Codes do not depend on error messages: the service's errors
//     (capability.ErrDenied, ...) map one to one to sdk/go/wire's codes.
//
// The status codes and the function signatures are part of the guest ABI;
// they are specified in sdk/go/wire.
//
// The package lives under runtime/wasm because it is the wasm runtime's
// half of the capability seam: it imports wazero and the ABI, and nothing
// but the wasm runtime imports it. A process runtime reaches the same
// services through its own adapter.
package hostfn
