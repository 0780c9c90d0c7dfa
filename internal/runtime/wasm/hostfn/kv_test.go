package hostfn_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/nimbus-dev/nimbus/internal/capability"
	"github.com/nimbus-dev/nimbus/internal/runtime/wasm/hostfn"
	"github.com/nimbus-dev/nimbus/internal/runtime/wasm/wasmbin"
	"github.com/nimbus-dev/nimbus/internal/state"
	"github.com/nimbus-dev/nimbus/internal/store"
	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// Layout of kvGuest's memory.
const (
	atBucket = 0    // "counts"
	atOther  = 16   // "other"
	atKey    = 32   // "k"
	atValue  = 64   // "value"
	atPrefix = 96   // "k"
	atOut    = 1024 // out area
	atBuf    = 2048 // result buffer
	memSize  = 65536
)

var kvFuncs = []struct {
	name   string
	params []byte
}{
	{wire.FuncKVGet, []byte{wasmbin.I32, wasmbin.I32, wasmbin.I32, wasmbin.I32, wasmbin.I32, wasmbin.I32, wasmbin.I32}},
	{wire.FuncKVPut, []byte{wasmbin.I32, wasmbin.I32, wasmbin.I32, wasmbin.I32, wasmbin.I32, wasmbin.I32, wasmbin.I64, wasmbin.I64, wasmbin.I32}},
	{wire.FuncKVDelete, []byte{wasmbin.I32, wasmbin.I32, wasmbin.I32, wasmbin.I32, wasmbin.I64, wasmbin.I32}},
	{wire.FuncKVList, []byte{wasmbin.I32, wasmbin.I32, wasmbin.I32, wasmbin.I32, wasmbin.I32, wasmbin.I32, wasmbin.I32, wasmbin.I32, wasmbin.I32, wasmbin.I32}},
}

// kvGuest imports every kv function and exports each under its own name,
// passing its arguments through, so tests call the host functions with any
// arguments a hostile guest could pass.
func kvGuest() []byte {
	m := &wasmbin.Module{
		MemoryPages: 1,
		Exports:     []wasmbin.Export{{Name: "memory", Kind: wasmbin.KindMemory}},
		Data: []wasmbin.Data{{Offset: atBucket, Bytes: []byte("counts")}, {Offset: atOther, Bytes: []byte("other")},
			{Offset: atKey, Bytes: []byte("k")}, {Offset: atValue, Bytes: []byte("value")}, {Offset: atPrefix, Bytes: []byte("k")}},
	}
	for i, f := range kvFuncs {
		m.Types = append(m.Types, wasmbin.FuncType{Params: f.params, Results: []byte{wasmbin.I32}})
		m.Imports = append(m.Imports, wasmbin.Import{Module: "nimbus", Name: f.name, Type: uint32(i)})
	}
	for i, f := range kvFuncs {
		var body []byte
		for j := range f.params {
			body = append(body, wasmbin.LocalGet(uint32(j))...)
		}
		body = append(body, wasmbin.Call(uint32(i))...)
		m.Funcs = append(m.Funcs, wasmbin.Func{Type: uint32(i), Body: body})
		m.Exports = append(m.Exports, wasmbin.Export{Name: f.name, Kind: wasmbin.KindFunc, Index: uint32(len(kvFuncs) + i)})
	}
	return m.Encode()
}

type kvEnv struct {
	mod api.Module
}

func newKVEnv(t testing.TB, logger *slog.Logger, store capability.KVStore) *kvEnv {
	t.Helper()
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	t.Cleanup(func() { rt.Close(ctx) })
	svc := capability.New(capability.Config{Logger: logger, KV: store})
	if _, err := hostfn.NewDefaultRegistry(svc).Instantiate(ctx, rt); err != nil {
		t.Fatal(err)
	}
	mod, err := rt.Instantiate(ctx, kvGuest())
	if err != nil {
		t.Fatal(err)
	}
	return &kvEnv{mod: mod}
}

func (e *kvEnv) call(t testing.TB, ctx context.Context, fn string, args ...uint64) int32 {
	t.Helper()
	res, err := e.mod.ExportedFunction(fn).Call(ctx, args...)
	if err != nil {
		t.Fatalf("%s trapped: %v", fn, err)
	}
	return api.DecodeI32(res[0])
}

func (e *kvEnv) out64() uint64 {
	v, _ := e.mod.Memory().ReadUint64Le(atOut)
	return v
}

func (e *kvEnv) out32(off uint32) uint32 {
	v, _ := e.mod.Memory().ReadUint32Le(atOut + off)
	return v
}

func (e *kvEnv) buf(n uint32) []byte {
	b, _ := e.mod.Memory().Read(atBuf, n)
	return bytes.Clone(b)
}

func i64(v int64) uint64 { return uint64(v) }

var anyRev = i64(wire.KVAnyRevision)

// Argument lists with good defaults; tests override single arguments.
func getArgs() []uint64 { return []uint64{atBucket, 6, atKey, 1, atBuf, 1024, atOut} }
func putArgs() []uint64 { return []uint64{atBucket, 6, atKey, 1, atValue, 5, 0, anyRev, atOut} }
func delArgs() []uint64 { return []uint64{atBucket, 6, atKey, 1, anyRev, atOut} }
func listArgs() []uint64 {
	return []uint64{atBucket, 6, atPrefix, 1, 0, 0, 0, atBuf, 1024, atOut}
}

func with(args []uint64, i int, v uint64) []uint64 { args[i] = v; return args }

func openBuckets(t testing.TB) *state.Buckets {
	t.Helper()
	st, err := store.Open(context.Background(), store.Options{DataDir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	b := state.NewBuckets(st.JetStream(), nil)
	if err := b.Ensure(context.Background(), state.BucketConfig{App: "shop", Name: "counts", MaxValueBytes: 100}); err != nil {
		t.Fatal(err)
	}
	return b
}

func callCtx(grants []string, s *sink) context.Context {
	return capability.WithCaller(context.Background(), &capability.Caller{App: "shop", Function: "fn", Grants: capability.NewGrants(grants), Sink: s})
}

func TestKVReadWrite(t *testing.T) {
	e := newKVEnv(t, nil, openBuckets(t))
	ctx := callCtx([]string{"kv:counts"}, &sink{})
	if c := e.call(t, ctx, wire.FuncKVGet, getArgs()...); c != wire.CodeNotFound {
		t.Fatalf("get missing: %d", c)
	}
	if c := e.call(t, ctx, wire.FuncKVPut, putArgs()...); c != hostfn.CodeOK {
		t.Fatalf("put: %d", c)
	}
	rev := e.out64()
	if c := e.call(t, ctx, wire.FuncKVGet, getArgs()...); c != hostfn.CodeOK || e.out64() != rev || e.out32(8) != 5 || string(e.buf(5)) != "value" {
		t.Fatalf("get: code %d rev %d (want %d) len %d value %q", c, e.out64(), rev, e.out32(8), e.buf(5))
	}
	// A buffer too small: CodeTooLarge, the size and revision in out.
	if c := e.call(t, ctx, wire.FuncKVGet, with(getArgs(), 5, 2)...); c != hostfn.CodeTooLarge || e.out32(8) != 5 || e.out64() != rev {
		t.Fatalf("small buffer: code %d len %d", c, e.out32(8))
	}
	// Compare-and-swap.
	if c := e.call(t, ctx, wire.FuncKVPut, with(putArgs(), 7, 0)...); c != wire.CodeRevisionMismatch || e.out64() != rev {
		t.Fatalf("create over existing: code %d current %d, want %d", c, e.out64(), rev)
	}
	if c := e.call(t, ctx, wire.FuncKVPut, with(putArgs(), 7, rev)...); c != hostfn.CodeOK || e.out64() <= rev {
		t.Fatalf("swap: code %d rev %d", c, e.out64())
	}
	rev2 := e.out64()
	if c := e.call(t, ctx, wire.FuncKVDelete, with(delArgs(), 4, rev)...); c != wire.CodeRevisionMismatch || e.out64() != rev2 {
		t.Fatalf("stale delete: code %d current %d", c, e.out64())
	}
	// List.
	if c := e.call(t, ctx, wire.FuncKVList, listArgs()...); c != hostfn.CodeOK {
		t.Fatalf("list: %d", c)
	}
	if keys, err := wire.DecodeKeys(e.buf(e.out32(0))); err != nil || len(keys) != 1 || keys[0] != "k" || e.out32(4) != 0 {
		t.Fatalf("list: %q %v flags %d", keys, err, e.out32(4))
	}
	if c := e.call(t, ctx, wire.FuncKVList, with(listArgs(), 8, 1)...); c != hostfn.CodeTooLarge || e.out32(0) != 3 {
		t.Fatalf("list into a small buffer: code %d size %d", c, e.out32(0))
	}
	if c := e.call(t, ctx, wire.FuncKVDelete, delArgs()...); c != hostfn.CodeOK {
		t.Fatalf("delete: %d", c)
	}
	if c := e.call(t, ctx, wire.FuncKVGet, getArgs()...); c != wire.CodeNotFound {
		t.Fatalf("get deleted: %d", c)
	}
	// Store-side limits come back as codes.
	if c := e.call(t, ctx, wire.FuncKVPut, with(putArgs(), 5, 101)...); c != hostfn.CodeTooLarge {
		t.Fatalf("value over the bucket's 100 bytes: %d", c)
	}
	ctxOther := callCtx([]string{"kv:other"}, &sink{})
	if c := e.call(t, ctxOther, wire.FuncKVGet, with(with(getArgs(), 0, atOther), 1, 5)...); c != wire.CodeNoBucket {
		t.Fatalf("undeclared bucket: %d", c)
	}
	// Another app's bucket of the same name is another bucket.
	ctxApp := capability.WithCaller(context.Background(), &capability.Caller{App: "blog", Function: "fn", Grants: capability.NewGrants([]string{"kv:counts"})})
	if c := e.call(t, ctxApp, wire.FuncKVGet, getArgs()...); c != wire.CodeNoBucket {
		t.Fatalf("other app: %d", c)
	}
}

func TestKVGrants(t *testing.T) {
	var slogBuf bytes.Buffer
	e := newKVEnv(t, slog.New(slog.NewTextHandler(&slogBuf, nil)), openBuckets(t))
	tests := []struct {
		name     string
		grants   []string
		fn       string
		args     []uint64
		wantCode int32
		wantLog  string
	}{
		{"read-only get", []string{"kv:counts:read"}, wire.FuncKVGet, getArgs(), wire.CodeNotFound, ""},
		{"read-only list", []string{"kv:counts:read"}, wire.FuncKVList, listArgs(), hostfn.CodeOK, ""},
		{"read-only put", []string{"kv:counts:read"}, wire.FuncKVPut, putArgs(), hostfn.CodeDenied,
			"nimbus.kv_put denied: capability \"kv:counts\" is not granted to function \"fn\" (it has \"kv:counts:read\", which is read-only); add `capabilities: [kv:counts]` to the function in nimbus.yaml"},
		{"read-only delete", []string{"kv:counts:read"}, wire.FuncKVDelete, delArgs(), hostfn.CodeDenied,
			"nimbus.kv_delete denied: capability \"kv:counts\" is not granted to function \"fn\" (it has \"kv:counts:read\", which is read-only); add `capabilities: [kv:counts]` to the function in nimbus.yaml"},
		{"no grant get", nil, wire.FuncKVGet, getArgs(), hostfn.CodeDenied,
			"nimbus.kv_get denied: capability \"kv:counts:read\" is not granted to function \"fn\"; add `capabilities: [kv:counts:read]` to the function in nimbus.yaml"},
		{"no grant put", []string{"log"}, wire.FuncKVPut, putArgs(), hostfn.CodeDenied,
			"nimbus.kv_put denied: capability \"kv:counts\" is not granted to function \"fn\"; add `capabilities: [kv:counts]` to the function in nimbus.yaml"},
		{"bare kv grants nothing", []string{"kv"}, wire.FuncKVGet, getArgs(), hostfn.CodeDenied,
			"nimbus.kv_get denied: capability \"kv:counts:read\" is not granted to function \"fn\"; add `capabilities: [kv:counts:read]` to the function in nimbus.yaml"},
		{"other bucket granted", []string{"kv:other"}, wire.FuncKVGet, getArgs(), hostfn.CodeDenied,
			"nimbus.kv_get denied: capability \"kv:counts:read\" is not granted to function \"fn\"; add `capabilities: [kv:counts:read]` to the function in nimbus.yaml"},
		{"read-write put", []string{"kv:counts"}, wire.FuncKVPut, putArgs(), hostfn.CodeOK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &sink{}
			ctx := callCtx(tt.grants, s)
			for range 3 { // denied again and again, logged once
				if c := e.call(t, ctx, tt.fn, tt.args...); c != tt.wantCode {
					t.Fatalf("code %d, want %d", c, tt.wantCode)
				}
			}
			var want []line
			if tt.wantLog != "" {
				want = []line{{"log", "warn", tt.wantLog}}
			}
			if len(s.lines) != len(want) || len(want) > 0 && s.lines[0] != want[0] {
				t.Fatalf("lines %q, want %q", s.lines, want)
			}
		})
	}
	if out := slogBuf.String(); !strings.Contains(out, "app=shop function=fn capability=kv:counts host_function=kv_put") {
		t.Fatalf("slog lacks the denial: %s", out)
	}
}

// TestKVHostileArguments: arguments out of range give CodeBadArgument (or
// CodeTooLarge for sizes over a limit), never a trap, and write nothing.
func TestKVHostileArguments(t *testing.T) {
	b := openBuckets(t)
	e := newKVEnv(t, nil, b)
	ctx := callCtx([]string{"kv:counts"}, &sink{})
	const past = memSize - 2
	tests := []struct {
		name string
		fn   string
		args []uint64
		want int32
	}{
		{"bucket out of memory", wire.FuncKVGet, with(getArgs(), 0, past), hostfn.CodeBadArgument},
		{"bucket pointer past 4GiB", wire.FuncKVGet, with(getArgs(), 0, 0xffffffff), hostfn.CodeBadArgument},
		{"bucket too long", wire.FuncKVGet, with(getArgs(), 1, 64), hostfn.CodeBadArgument},
		{"bucket not a name", wire.FuncKVGet, with(getArgs(), 1, 7), hostfn.CodeBadArgument},
		{"key out of memory", wire.FuncKVGet, with(getArgs(), 2, past), hostfn.CodeBadArgument},
		{"key too long", wire.FuncKVPut, with(putArgs(), 3, 513), hostfn.CodeBadArgument},
		{"key length 4GiB", wire.FuncKVPut, with(putArgs(), 3, 0xffffffff), hostfn.CodeBadArgument},
		{"invalid key", wire.FuncKVPut, with(with(putArgs(), 2, atValue), 3, 0), hostfn.CodeBadArgument},
		{"buffer out of memory", wire.FuncKVGet, with(getArgs(), 5, memSize), hostfn.CodeBadArgument},
		{"out out of memory", wire.FuncKVGet, with(getArgs(), 6, past), hostfn.CodeBadArgument},
		{"value out of memory", wire.FuncKVPut, with(putArgs(), 4, past), hostfn.CodeBadArgument},
		{"value over the hard cap", wire.FuncKVPut, with(putArgs(), 5, wire.KVMaxValueLen+1), hostfn.CodeTooLarge},
		{"negative TTL", wire.FuncKVPut, with(putArgs(), 6, i64(-1)), hostfn.CodeBadArgument},
		{"huge TTL", wire.FuncKVPut, with(putArgs(), 6, i64(1<<62)), hostfn.CodeBadArgument},
		{"bad revision", wire.FuncKVPut, with(putArgs(), 7, i64(-2)), hostfn.CodeBadArgument},
		{"put out out of memory", wire.FuncKVPut, with(putArgs(), 8, past), hostfn.CodeBadArgument},
		{"delete out out of memory", wire.FuncKVDelete, with(delArgs(), 5, past), hostfn.CodeBadArgument},
		{"list negative limit", wire.FuncKVList, with(listArgs(), 6, api.EncodeI32(-1)), hostfn.CodeBadArgument},
		{"list prefix out of memory", wire.FuncKVList, with(listArgs(), 2, past), hostfn.CodeBadArgument},
		{"list cursor too long", wire.FuncKVList, with(listArgs(), 5, 513), hostfn.CodeBadArgument},
		{"list buffer out of memory", wire.FuncKVList, with(listArgs(), 7, past), hostfn.CodeBadArgument},
		{"list out out of memory", wire.FuncKVList, with(listArgs(), 9, past), hostfn.CodeBadArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if c := e.call(t, ctx, tt.fn, tt.args...); c != tt.want {
				t.Fatalf("code %d, want %d", c, tt.want)
			}
		})
	}
	// None of the refused puts wrote anything.
	if keys, err := b.List(context.Background(), "shop", "counts", "", 0); err != nil || len(keys) != 0 {
		t.Fatalf("keys after refused calls: %q %v", keys, err)
	}
}

func TestKVWithoutStore(t *testing.T) {
	e := newKVEnv(t, nil, nil)
	ctx := callCtx([]string{"kv:counts"}, &sink{})
	for _, c := range []struct {
		fn   string
		args []uint64
	}{{wire.FuncKVGet, getArgs()}, {wire.FuncKVPut, putArgs()}, {wire.FuncKVDelete, delArgs()}, {wire.FuncKVList, listArgs()}} {
		if code := e.call(t, ctx, c.fn, c.args...); code != hostfn.CodeUnavailable {
			t.Errorf("%s: %d, want unavailable", c.fn, code)
		}
	}
}

// FuzzKVArgs: whatever a guest passes to the kv functions, the host
// returns a status code and never traps. No store is configured, so calls
// with good arguments stop at CodeUnavailable; everything before that (the
// decoding, the grant check) runs for real.
func FuzzKVArgs(f *testing.F) {
	f.Add(uint32(atBucket), uint32(6), uint32(atKey), uint32(1), uint32(atValue), uint32(5), int64(0), int64(-1), uint32(atOut), int32(0))
	f.Add(uint32(0xffffffff), uint32(0xffffffff), uint32(0), uint32(0), uint32(0), uint32(0), int64(-5), int64(-2), uint32(0xfffffff0), int32(-1))
	f.Add(uint32(memSize-1), uint32(1), uint32(memSize), uint32(0), uint32(0), uint32(1<<20+1), int64(1<<62), int64(7), uint32(memSize-8), int32(5000))
	e := newKVEnv(f, nil, nil)
	ctx := callCtx([]string{"kv:counts", "kv:c"}, &sink{})
	f.Fuzz(func(t *testing.T, bp, bl, kp, kl, vp, vl uint32, ttl, rev int64, out uint32, limit int32) {
		ok := map[int32]bool{hostfn.CodeUnavailable: true, hostfn.CodeBadArgument: true, hostfn.CodeTooLarge: true, hostfn.CodeDenied: true}
		if c := e.call(t, ctx, wire.FuncKVPut, uint64(bp), uint64(bl), uint64(kp), uint64(kl), uint64(vp), uint64(vl), uint64(ttl), uint64(rev), uint64(out)); !ok[c] {
			t.Fatalf("kv_put code %d", c)
		}
		if c := e.call(t, ctx, wire.FuncKVList, uint64(bp), uint64(bl), uint64(kp), uint64(kl), uint64(vp), uint64(vl), api.EncodeI32(limit), uint64(out), uint64(vl), uint64(out)); !ok[c] {
			t.Fatalf("kv_list code %d", c)
		}
		if c := e.call(t, ctx, wire.FuncKVGet, uint64(bp), uint64(bl), uint64(kp), uint64(kl), uint64(vp), uint64(vl), uint64(out)); !ok[c] {
			t.Fatalf("kv_get code %d", c)
		}
		if c := e.call(t, ctx, wire.FuncKVDelete, uint64(bp), uint64(bl), uint64(kp), uint64(kl), uint64(rev), uint64(out)); !ok[c] {
			t.Fatalf("kv_delete code %d", c)
		}
	})
}
