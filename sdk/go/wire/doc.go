// Package wire is the Nimbus guest ABI, version 1: how a host hands one HTTP
// request to a WebAssembly guest and gets one response back. It holds the
// encoder and decoder of the two messages and, in this comment, the
// specification an SDK in another language implements. It has no
// dependencies beyond the standard library and builds both for the host and
// for GOOS=wasip1.
//
// # Module shape
//
// A Nimbus SDK guest is a WASI preview 1 reactor (no _start). It exports:
//
//	memory                                     its linear memory
//	_initialize()                              optional; run once at instantiation
//	nimbus_abi_v1()                            marker: "I speak this ABI"; never called
//	nimbus_alloc(size i32) -> i32              returns a pointer to size writable bytes
//	nimbus_handle(ptr i32, len i32) -> i64     serves one request
//
// and may import WASI preview 1 (module "wasi_snapshot_preview1") and the
// Nimbus host functions (module "nimbus"). Nothing else links.
//
// # One request
//
//  1. The host encodes the request (EncodeRequest) into n bytes.
//  2. It calls nimbus_alloc(n) and writes the bytes at the returned pointer.
//     The buffer belongs to the guest; it stays valid until nimbus_handle
//     returns. A return of 0 for n > 0 is an allocation failure.
//  3. It calls nimbus_handle(ptr, n). The guest decodes, serves, encodes the
//     response (EncodeResponse) into memory it keeps alive until its next
//     call, and returns (respPtr << 32) | respLen as an unsigned 64-bit value.
//  4. The host bounds-checks respPtr and respLen against the guest's memory
//     and its response limit, copies the bytes out and decodes them. Anything
//     out of range, or undecodable, is a guest failure, never a host crash.
//
// An instance serves requests one at a time, in turn, for as long as the host
// keeps it. Guests must not rely on being kept or on being reused.
//
// # Encoding
//
// Integers are unsigned LEB128 varints (encoding/binary Uvarint). A string or
// a byte string is a varint length followed by that many bytes. A header
// list is a varint count followed by count (name, value) string pairs; a
// header with several values appears once per value, in order. A parameter
// list has the same shape. There are no optional fields and no trailing
// bytes.
//
//	request  = 0x01 method path raw_query host remote_addr route
//	           invocation_id traceparent headers params body
//	response = 0x02 status error headers body
//
// status is the HTTP status (0 means 200; otherwise 100..999). error is empty
// on success; a guest that failed to serve the request (a recovered panic,
// no handler registered) puts its reason there, and the host reports the
// request as failed with that reason instead of sending a response.
//
// # Host functions
//
// Host functions live in the "nimbus" import module. Each returns an i32
// status code first: 0 ok, 1 denied (the function's capability is not
// granted to this function in nimbus.yaml), 2 bad argument (for example a
// pointer outside memory), 3 too large, 4 unavailable, 5 internal. A denied
// call never traps. Version 1 defines:
//
//	log(level i32, ptr i32, len i32) -> i32    capability "log"
//	    level: 0 debug, 1 info, 2 warn, 3 error. The message is the UTF-8
//	    bytes at [ptr, ptr+len); the host truncates long messages.
package wire
