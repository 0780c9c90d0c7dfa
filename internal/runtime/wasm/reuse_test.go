package wasm

import (
	"bytes"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/runtime/wasm/wasmbin"
	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// countingSDK is minimalSDK whose nimbus_alloc counts its calls in the
// exported global "allocs" and, with reuse, also exports
// wire.ExportReuse.
func countingSDK(reuse bool) []byte {
	m := &wasmbin.Module{
		Types: []wasmbin.FuncType{tVoid, tAlloc, tHandle},
		Funcs: []wasmbin.Func{
			{Type: 0},
			// allocs++; return 16384
			{Type: 1, Body: wasmbin.Concat(wasmbin.GlobalGet(0), wasmbin.I32Const(1), []byte{0x6a, 0x24, 0x00}, wasmbin.I32Const(16384))},
			{Type: 2, Body: wasmbin.I64Const(int64(minimalRespAt)<<32 | int64(len(minimalResponse)))},
		},
		MemoryPages: 1,
		Globals:     []wasmbin.Global{{Type: wasmbin.I32, Mutable: true, Init: wasmbin.I32Const(0)}},
		Exports: []wasmbin.Export{
			{Name: "memory", Kind: wasmbin.KindMemory},
			{Name: wire.ExportMarker, Kind: wasmbin.KindFunc, Index: 0},
			{Name: wire.ExportAlloc, Kind: wasmbin.KindFunc, Index: 1},
			{Name: wire.ExportHandle, Kind: wasmbin.KindFunc, Index: 2},
			{Name: "allocs", Kind: wasmbin.KindGlobal, Index: 0},
		},
		Data: []wasmbin.Data{{Offset: minimalRespAt, Bytes: minimalResponse}},
	}
	if reuse {
		m.Exports = append(m.Exports, wasmbin.Export{Name: wire.ExportReuse, Kind: wasmbin.KindFunc, Index: 0})
	}
	return m.Encode()
}

// TestRequestBufferReuse: a guest exporting wire.ExportReuse is called once
// per request, its request buffer reused while requests fit (nimbus_alloc
// is asked for at least minRequestBuffer bytes, and again only for a larger
// request); a guest without it gets nimbus_alloc before every request, as
// ABI v1 first specified.
func TestRequestBufferReuse(t *testing.T) {
	r := newRuntime(t, Config{})
	big := get("/", "")
	big.Body = bytes.Repeat([]byte("x"), 2*minRequestBuffer)
	for _, tt := range []struct {
		reuse bool
		want  []uint32 // allocs after each request: small, small, big, small
	}{
		{true, []uint32{1, 1, 2, 2}},
		{false, []uint32{1, 2, 3, 4}},
	} {
		inst := instance(t, load(t, r, runtime.Spec{Artifact: countingSDK(tt.reuse)}))
		g := inst.(*sdkInstance).mod.ExportedGlobal("allocs")
		for i, req := range []*runtime.Request{get("/a", ""), get("/b", "q=1"), big, get("/c", "")} {
			resp := mustHandle(t, inst, req)
			if string(resp.Body) != "ok" {
				t.Fatalf("reuse=%v request %d: body %q, want ok", tt.reuse, i, resp.Body)
			}
			if got := uint32(g.Get()); got != tt.want[i] {
				t.Errorf("reuse=%v: %d nimbus_alloc calls after request %d, want %d", tt.reuse, got, i, tt.want[i])
			}
		}
	}
}
