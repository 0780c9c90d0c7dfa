//go:build wasip1

package nimbus

import "unsafe"

// The exports below are the wire.Export* names of ABI v1 (see package wire).

// The ABI's buffers. The host calls one export at a time, so plain variables
// suffice; they keep the memory the host reads or writes reachable (Go's GC
// does not move objects, so the addresses stay valid).
var (
	reqBuf  []byte // handed out by nimbus_alloc, consumed by nimbus_handle
	respBuf []byte // the last encoded response, valid until the next call
)

//go:wasmexport nimbus_abi_v1
func abiV1() {}

//go:wasmexport nimbus_alloc
func nimbusAlloc(size int32) uint32 {
	if size <= 0 {
		reqBuf = nil
		return 0
	}
	reqBuf = make([]byte, size)
	return addr(reqBuf)
}

//go:wasmexport nimbus_handle
func nimbusHandle(ptr uint32, size int32) uint64 {
	var in []byte
	if size > 0 && len(reqBuf) >= int(size) && ptr == addr(reqBuf) {
		in = reqBuf[:size]
	}
	reqBuf = nil
	respBuf = serve(registered(), in, respBuf[:0])
	if len(respBuf) == 0 {
		return 0
	}
	return uint64(addr(respBuf))<<32 | uint64(len(respBuf))
}

func addr(b []byte) uint32 {
	return uint32(uintptr(unsafe.Pointer(unsafe.SliceData(b))))
}

//go:wasmimport nimbus log
func nimbusLog(level int32, ptr unsafe.Pointer, size int32) int32

func hostLog(level int32, msg string) int32 {
	return nimbusLog(level, unsafe.Pointer(unsafe.StringData(msg)), int32(len(msg)))
}
