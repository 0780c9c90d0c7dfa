// Command nosdkguest implements the SDK's ABI (package wire) without the
// SDK: it answers every request with one response encoded at start. The
// warm scenario runs it to show what a Go guest's call costs before any
// request is decoded or any handler runs.
package main

import (
	"unsafe"

	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

var (
	reqBuf = make([]byte, 4096)
	resp   = wire.EncodeResponse(nil, &wire.Response{Status: 200,
		Header: map[string][]string{"Content-Type": {"text/plain; charset=utf-8"}}, Body: []byte("hello, bench\n")})
)

//go:wasmexport nimbus_abi_v1
func abiV1() {}

//go:wasmexport nimbus_reuse_request_buffer
func reuse() {}

//go:wasmexport nimbus_alloc
func alloc(size int32) uint32 {
	if int(size) > cap(reqBuf) {
		reqBuf = make([]byte, size)
	}
	return uint32(uintptr(unsafe.Pointer(unsafe.SliceData(reqBuf))))
}

//go:wasmexport nimbus_handle
func handle(ptr uint32, size int32) uint64 {
	return uint64(uintptr(unsafe.Pointer(unsafe.SliceData(resp))))<<32 | uint64(len(resp))
}

func main() {}
