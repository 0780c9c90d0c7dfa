package wasm

import (
	"path/filepath"

	"github.com/nimbus-dev/nimbus/internal/guesttest"
	"github.com/nimbus-dev/nimbus/internal/runtime/wasm/wasmbin"
	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// guestSrc is one real guest built with the local Go toolchain.
type guestSrc struct {
	name string
	dir  string // relative to the module root
	mode guesttest.Mode
}

var guestSrcs = []guestSrc{
	{"sdk", "internal/runtime/wasm/testdata/sdkguest", guesttest.Reactor},
	{"wagi", "internal/runtime/wasm/testdata/wagiguest", guesttest.Command},
	{"hello-example", "examples/hello/hello", guesttest.Reactor},
	{"lean-example", "examples/hello/lean", guesttest.Reactor},
	{"wagi-example", "examples/wagi/wagi", guesttest.Command},
}

// buildGuests builds every guest (GOOS=wasip1 GOARCH=wasm, through
// guesttest's cache, so a test run that changed nothing builds nothing) and
// returns their bytes by name.
func buildGuests() (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, g := range guestSrcs {
		b, err := guesttest.Build(filepath.Join("..", "..", "..", g.dir), g.mode)
		if err != nil {
			return nil, err
		}
		out[g.name] = b
	}
	return out, nil
}

// Hand-written modules.

var (
	tVoid   = wasmbin.FuncType{}
	tAlloc  = wasmbin.FuncType{Params: []byte{wasmbin.I32}, Results: []byte{wasmbin.I32}}
	tHandle = wasmbin.FuncType{Params: []byte{wasmbin.I32, wasmbin.I32}, Results: []byte{wasmbin.I64}}
)

const minimalRespAt = 4096

// minimalResponse is what minimalSDK answers.
var minimalResponse = wire.EncodeResponse(nil, &wire.Response{Status: 200, Header: map[string][]string{"Content-Type": {"text/plain"}}, Body: []byte("ok")})

// minimalSDK is the smallest SDK reactor: no imports, one page of memory,
// nimbus_alloc returns 1024 and nimbus_handle returns handleBody's value
// (by default a fixed, pre-encoded response).
func minimalSDK(handleBody []byte) []byte { return minimalSDKWith(handleBody) }

// tRecurse is the type of minimalSDKWith's extra functions: (i32) -> ().
var tRecurse = wasmbin.FuncType{Params: []byte{wasmbin.I32}}

// minimalSDKWith is minimalSDK with extra functions of type tRecurse,
// from index 3 on, that handleBody may call.
func minimalSDKWith(handleBody []byte, extra ...[]byte) []byte {
	if handleBody == nil {
		handleBody = wasmbin.I64Const(int64(minimalRespAt)<<32 | int64(len(minimalResponse)))
	}
	m := &wasmbin.Module{
		Types: []wasmbin.FuncType{tVoid, tAlloc, tHandle, tRecurse},
		Funcs: []wasmbin.Func{
			{Type: 0},
			{Type: 1, Body: wasmbin.I32Const(1024)},
			{Type: 2, Body: handleBody},
		},
		MemoryPages: 1,
		Exports: []wasmbin.Export{
			{Name: "memory", Kind: wasmbin.KindMemory},
			{Name: wire.ExportMarker, Kind: wasmbin.KindFunc, Index: 0},
			{Name: wire.ExportAlloc, Kind: wasmbin.KindFunc, Index: 1},
			{Name: wire.ExportHandle, Kind: wasmbin.KindFunc, Index: 2},
		},
		Data: []wasmbin.Data{{Offset: minimalRespAt, Bytes: minimalResponse}},
	}
	for _, body := range extra {
		m.Funcs = append(m.Funcs, wasmbin.Func{Type: 3, Body: body})
	}
	return m.Encode()
}

// minimalWAGI is the smallest WAGI command: _start does nothing, so its
// output is empty (malformed CGI), or loops forever.
func minimalWAGI(startBody []byte) []byte {
	m := &wasmbin.Module{
		Types:       []wasmbin.FuncType{tVoid},
		Funcs:       []wasmbin.Func{{Type: 0, Body: startBody}},
		MemoryPages: 1,
		Exports:     []wasmbin.Export{{Name: "memory", Kind: wasmbin.KindMemory}, {Name: "_start", Kind: wasmbin.KindFunc}},
	}
	return m.Encode()
}
