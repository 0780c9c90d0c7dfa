package hostfn_test

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/nimbus-dev/nimbus/internal/capability"
	"github.com/nimbus-dev/nimbus/internal/runtime/wasm/hostfn"
	"github.com/nimbus-dev/nimbus/internal/runtime/wasm/wasmbin"
)

type line struct{ stream, level, text string }

type sink struct {
	mu    sync.Mutex
	lines []line
}

func (s *sink) Log(stream, level string, b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lines = append(s.lines, line{stream, level, string(b)})
}

// logGuest imports nimbus.log and exports run(level, ptr, len) -> code
// calling it; its memory holds "hello" at 0.
func logGuest() []byte {
	m := &wasmbin.Module{
		Types:       []wasmbin.FuncType{{Params: []byte{wasmbin.I32, wasmbin.I32, wasmbin.I32}, Results: []byte{wasmbin.I32}}},
		Imports:     []wasmbin.Import{{Module: "nimbus", Name: "log", Type: 0}},
		Funcs:       []wasmbin.Func{{Type: 0, Body: wasmbin.Concat(wasmbin.LocalGet(0), wasmbin.LocalGet(1), wasmbin.LocalGet(2), wasmbin.Call(0))}},
		MemoryPages: 1,
		Exports:     []wasmbin.Export{{Name: "run", Kind: wasmbin.KindFunc, Index: 1}, {Name: "memory", Kind: wasmbin.KindMemory}},
		Data:        []wasmbin.Data{{Offset: 0, Bytes: []byte("hello")}, {Offset: 100, Bytes: bytes.Repeat([]byte("x"), 10000)}},
	}
	return m.Encode()
}

// logProvider is the log host function over services configured by cfg.
func logProvider(cfg capability.Config) hostfn.LogProvider {
	return hostfn.LogProvider{Service: capability.New(cfg).Log}
}

func setup(t testing.TB, providers ...hostfn.Provider) api.Function {
	t.Helper()
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	t.Cleanup(func() { rt.Close(ctx) })
	reg, err := hostfn.NewRegistry(providers...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Instantiate(ctx, rt); err != nil {
		t.Fatal(err)
	}
	mod, err := rt.Instantiate(ctx, logGuest())
	if err != nil {
		t.Fatal(err)
	}
	return mod.ExportedFunction("run")
}

func TestLog(t *testing.T) {
	var slogBuf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&slogBuf, nil))
	run := setup(t, logProvider(capability.Config{Logger: logger, MaxLogBytes: 1000}))
	tests := []struct {
		name      string
		grants    []string
		level     int32
		ptr, n    uint32
		wantCode  int32
		wantLines []line
	}{
		{"granted", []string{"log"}, 1, 0, 5, hostfn.CodeOK, []line{{"log", "info", "hello"}}},
		{"error level", []string{"log"}, 3, 0, 5, hostfn.CodeOK, []line{{"log", "error", "hello"}}},
		{"empty message", []string{"log"}, 0, 0, 0, hostfn.CodeOK, []line{{"log", "debug", ""}}},
		{"truncated", []string{"log"}, 2, 100, 5000, hostfn.CodeOK, []line{{"log", "warn", strings.Repeat("x", 1000) + " …(truncated)"}}},
		{"bad level", []string{"log"}, 7, 0, 5, hostfn.CodeBadArgument, nil},
		{"negative level", []string{"log"}, -1, 0, 5, hostfn.CodeBadArgument, nil},
		{"out of bounds", []string{"log"}, 1, 65530, 10, hostfn.CodeBadArgument, nil},
		{"huge length", []string{"log"}, 1, 0, 0xffffffff, hostfn.CodeBadArgument, nil},
		{"denied", []string{"kv"}, 1, 0, 5, hostfn.CodeDenied, []line{{"log", "warn",
			"nimbus.log denied: capability \"log\" is not granted to function \"fn\"; add `capabilities: [log]` to the function in nimbus.yaml"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &sink{}
			ctx := capability.WithCaller(context.Background(), &capability.Caller{App: "app", Function: "fn", Grants: capability.NewGrants(tt.grants), Sink: s})
			res, err := run.Call(ctx, api.EncodeI32(tt.level), api.EncodeU32(tt.ptr), api.EncodeU32(tt.n))
			if err != nil {
				t.Fatalf("call trapped: %v", err)
			}
			if got := api.DecodeI32(res[0]); got != tt.wantCode {
				t.Fatalf("code %d, want %d", got, tt.wantCode)
			}
			if !slices.Equal(s.lines, tt.wantLines) {
				t.Fatalf("lines %q, want %q", s.lines, tt.wantLines)
			}
		})
	}
	if out := slogBuf.String(); !strings.Contains(out, "host function denied") || !strings.Contains(out, "app=app function=fn capability=log") {
		t.Fatalf("slog output lacks the denial: %q", out)
	}
}

func TestDenialLoggedOncePerCall(t *testing.T) {
	run := setup(t, logProvider(capability.Config{}))
	s := &sink{}
	ctx := capability.WithCaller(context.Background(), &capability.Caller{Function: "fn", Sink: s})
	for range 10 {
		res, err := run.Call(ctx, 1, 0, 5)
		if err != nil || api.DecodeI32(res[0]) != hostfn.CodeDenied {
			t.Fatalf("res %v err %v, want denied", res, err)
		}
	}
	if len(s.lines) != 1 {
		t.Fatalf("%d denial lines, want 1", len(s.lines))
	}
}

func TestNoCallInContextIsDenied(t *testing.T) {
	run := setup(t, logProvider(capability.Config{}))
	res, err := run.Call(context.Background(), 1, 0, 5)
	if err != nil || api.DecodeI32(res[0]) != hostfn.CodeDenied {
		t.Fatalf("res %v err %v, want denied", res, err)
	}
}

type badProvider struct {
	capability string
	fns        []hostfn.Function
}

func (p badProvider) Capability() string           { return p.capability }
func (p badProvider) Functions() []hostfn.Function { return p.fns }

func TestNewRegistryRejects(t *testing.T) {
	fn := func(context.Context, *capability.Caller, api.Module, []uint64) {}
	tests := []struct {
		name      string
		providers []hostfn.Provider
	}{
		{"duplicate capability", []hostfn.Provider{hostfn.LogProvider{}, hostfn.LogProvider{}}},
		{"empty capability", []hostfn.Provider{badProvider{}}},
		{"duplicate function", []hostfn.Provider{hostfn.LogProvider{}, badProvider{"x", []hostfn.Function{{Name: "log", Results: []api.ValueType{api.ValueTypeI32}, Fn: fn}}}}},
		{"no status result", []hostfn.Provider{badProvider{"x", []hostfn.Function{{Name: "f", Fn: fn}}}}},
		{"i64 status", []hostfn.Provider{badProvider{"x", []hostfn.Function{{Name: "f", Results: []api.ValueType{api.ValueTypeI64}, Fn: fn}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := hostfn.NewRegistry(tt.providers...); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestCapabilities(t *testing.T) {
	if got := hostfn.NewDefaultRegistry(nil).Capabilities(); !slices.Equal(got, hostfn.Capabilities()) {
		t.Fatalf("default registry has %v, Capabilities() says %v", got, hostfn.Capabilities())
	}
}

// FuzzLogArgs: whatever arguments a guest passes to nimbus.log, the call
// returns a status code and never traps or panics the host.
func FuzzLogArgs(f *testing.F) {
	f.Add(int32(1), uint32(0), uint32(5))
	f.Add(int32(-1), uint32(0xffffffff), uint32(0xffffffff))
	f.Add(int32(3), uint32(65535), uint32(1))
	f.Add(int32(2), uint32(100), uint32(100000))
	run := setup(f, logProvider(capability.Config{}))
	ctx := capability.WithCaller(context.Background(), &capability.Caller{Grants: capability.NewGrants([]string{"log"}), Sink: &sink{}})
	f.Fuzz(func(t *testing.T, level int32, ptr, n uint32) {
		res, err := run.Call(ctx, api.EncodeI32(level), api.EncodeU32(ptr), api.EncodeU32(n))
		if err != nil {
			t.Fatalf("trapped: %v", err)
		}
		if c := api.DecodeI32(res[0]); c != hostfn.CodeOK && c != hostfn.CodeBadArgument {
			t.Fatalf("code %d", c)
		}
	})
}
