package wasm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/guesttest"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/runtime/wasm/wasmbin"
	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// guests holds the real guests, built once per test binary by TestMain.
var guests map[string][]byte

// testCacheDir is the compilation cache the tests share (and keep across
// runs): compiling a Go guest takes seconds, loading it from the cache
// milliseconds.
var testCacheDir string

func TestMain(m *testing.M) {
	var err error
	if guests, err = buildGuests(); err != nil {
		fmt.Fprintln(os.Stderr, "building wasm test guests:", err)
		os.Exit(1)
	}
	testCacheDir = guesttest.WazeroCacheDir()
	os.Exit(m.Run())
}

type logLine struct{ stream, level, text string }

// sink records log lines; safe for concurrent use. It is a
// runtime.LogFlusher and records how many lines it had at each Flush.
type sink struct {
	mu      sync.Mutex
	lines   []logLine
	flushes []int
}

func (s *sink) Flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushes = append(s.flushes, len(s.lines))
}

func (s *sink) count() (lines int, flushes []int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.lines), slices.Clone(s.flushes)
}

func (s *sink) Log(stream, level string, line []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lines = append(s.lines, logLine{stream, level, string(line)})
}

func (s *sink) has(want logLine) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.lines {
		if l.stream == want.stream && l.level == want.level && strings.Contains(l.text, want.text) {
			return true
		}
	}
	return false
}

func (s *sink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprint(s.lines)
}

// syncBuffer is a bytes.Buffer for a slog handler written from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func newRuntime(t testing.TB, cfg Config) *Runtime {
	t.Helper()
	if cfg.CacheDir == "" {
		cfg.CacheDir = testCacheDir
	}
	r, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(context.Background()) })
	return r
}

// complete fills the zero limits of l with the defaults model.Plan gives a
// function: the runtime takes complete limits only.
func complete(l runtime.Limits) runtime.Limits {
	if l.MemoryBytes == 0 {
		l.MemoryBytes = model.DefaultMemoryBytes
	}
	if l.Timeout == 0 {
		l.Timeout = model.DefaultTimeout
	}
	if l.MaxResponseBytes == 0 {
		l.MaxResponseBytes = model.DefaultMaxBodyBytes
	}
	return l
}

// load loads spec with its limits completed (complete).
func load(t testing.TB, r *Runtime, spec runtime.Spec) runtime.Module {
	t.Helper()
	if spec.App == "" {
		spec.App, spec.Function = "app", "fn"
	}
	spec.Limits = complete(spec.Limits)
	m, err := r.Load(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(context.Background()) })
	return m
}

func instance(t testing.TB, m runtime.Module) runtime.Instance {
	t.Helper()
	inst, err := m.NewInstance(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inst.Close(context.Background()) })
	return inst
}

func get(path, query string) *runtime.Request {
	return &runtime.Request{Method: "GET", Path: path, RawQuery: query, Header: http.Header{}, Host: "example.com:8080", RemoteAddr: "127.0.0.1:4444"}
}

func mustHandle(t testing.TB, inst runtime.Instance, req *runtime.Request) *runtime.Response {
	t.Helper()
	resp, err := inst.Handle(context.Background(), req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.Path, err)
	}
	return resp
}

func TestSDKContract(t *testing.T) {
	r := newRuntime(t, Config{})
	m := load(t, r, runtime.Spec{Artifact: guests["sdk"], Env: map[string]string{"GREETING": "hi"}, Capabilities: []string{"log"}})
	if m.Contract() != runtime.ContractSDK || !m.Reusable() {
		t.Fatalf("contract %s reusable %v, want sdk and reusable", m.Contract(), m.Reusable())
	}
	inst := instance(t, m)

	t.Run("params and metadata", func(t *testing.T) {
		req := get("/hello/bob", "")
		req.Route, req.Params = "GET /hello/{name}", map[string]string{"name": "bob"}
		req.InvocationID, req.TraceParent = "inv-1", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		resp := mustHandle(t, inst, req)
		if resp.Status != 200 || string(resp.Body) != "hello, bob" {
			t.Fatalf("got %d %q", resp.Status, resp.Body)
		}
		for k, v := range map[string]string{"X-Invocation": "inv-1", "X-Trace": req.TraceParent, "X-Route": req.Route, "Content-Type": "text/plain; charset=utf-8"} {
			if got := resp.Header.Get(k); got != v {
				t.Errorf("%s = %q, want %q", k, got, v)
			}
		}
	})
	t.Run("echo", func(t *testing.T) {
		req := get("/echo", "a=1")
		req.Method, req.Body = "POST", []byte("payload")
		req.Header.Set("Content-Type", "application/x-test")
		resp := mustHandle(t, inst, req)
		want := "POST /echo?a=1 host=example.com:8080 remote=127.0.0.1:4444 len=7 body=payload"
		if resp.Status != 201 || string(resp.Body) != want || resp.Header.Get("Content-Type") != "application/x-test" {
			t.Fatalf("got %d %q %v, want 201 %q", resp.Status, resp.Body, resp.Header, want)
		}
	})
	t.Run("env", func(t *testing.T) {
		if resp := mustHandle(t, inst, get("/env", "key=GREETING")); string(resp.Body) != "hi" {
			t.Fatalf("GREETING = %q", resp.Body)
		}
	})
	t.Run("stdout and stderr go to the request's sink", func(t *testing.T) {
		s := &sink{}
		req := get("/stdio", "")
		req.Log = s
		mustHandle(t, inst, req)
		if !s.has(logLine{"stdout", "", "to stdout"}) || !s.has(logLine{"stderr", "", "to stderr, no newline"}) {
			t.Fatalf("lines: %s", s)
		}
		// Flushed once, after the last line (the unterminated stderr one).
		if n, flushes := s.count(); len(flushes) != 1 || flushes[0] != n {
			t.Fatalf("flushes at line counts %v, want one at %d", flushes, n)
		}
	})
	t.Run("endless stdout is log output, not a failure", func(t *testing.T) {
		// For an SDK guest stdout is log output: the runtime passes every
		// line on and the sink's budget (package guestlog) decides what is
		// kept. The guest's bounded flood must not fail its request.
		s := &sink{}
		req := get("/flood", "n=20000")
		req.Log = s
		if resp := mustHandle(t, inst, req); string(resp.Body) != "flooded 20000" {
			t.Fatalf("body %q", resp.Body)
		}
		if n, flushes := s.count(); n != 20000 || len(flushes) != 1 || flushes[0] != n {
			t.Fatalf("%d lines, flushes at %v; want 20000 and one flush after them", n, flushes)
		}
	})
	t.Run("log granted", func(t *testing.T) {
		s := &sink{}
		req := get("/log", "")
		req.Log = s
		if resp := mustHandle(t, inst, req); resp.Status != 200 || string(resp.Body) != "logged" {
			t.Fatalf("got %d %q", resp.Status, resp.Body)
		}
		if !s.has(logLine{"log", "warn", "log from guest"}) {
			t.Fatalf("lines: %s", s)
		}
	})
	t.Run("not found", func(t *testing.T) {
		if resp := mustHandle(t, inst, get("/nope", "")); resp.Status != 404 {
			t.Fatalf("status %d", resp.Status)
		}
	})
}

func TestCapabilityDenied(t *testing.T) {
	var logs syncBuffer
	r := newRuntime(t, Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	m := load(t, r, runtime.Spec{App: "shop", Function: "cart", Artifact: guests["sdk"]})
	inst := instance(t, m)
	s := &sink{}
	req := get("/log", "")
	req.Log = s
	resp := mustHandle(t, inst, req)
	if resp.Status != 403 || !strings.Contains(string(resp.Body), "capability not granted") || !strings.Contains(string(resp.Body), "capabilities: [log]") {
		t.Fatalf("guest saw %d %q, want 403 and the denial", resp.Status, resp.Body)
	}
	if !s.has(logLine{"log", "warn", "add `capabilities: [log]` to the function in nimbus.yaml"}) {
		t.Fatalf("no denial in the function's log: %s", s)
	}
	if out := logs.String(); !strings.Contains(out, "app=shop function=cart capability=log") {
		t.Fatalf("no denial in slog: %q", out)
	}
	// The instance is fine after a denial.
	if resp := mustHandle(t, inst, get("/hello", "")); string(resp.Body) != "hello, world" {
		t.Fatalf("after denial: %q", resp.Body)
	}
}

func TestWAGIContract(t *testing.T) {
	r := newRuntime(t, Config{})
	m := load(t, r, runtime.Spec{Artifact: guests["wagi"], Env: map[string]string{"FROM_SPEC": "yes", "REQUEST_METHOD": "spoofed"}})
	if m.Contract() != runtime.ContractWAGI || m.Reusable() {
		t.Fatalf("contract %s reusable %v, want wagi and single use", m.Contract(), m.Reusable())
	}
	tests := []struct {
		name       string
		req        func() *runtime.Request
		wantStatus int
		wantHeader http.Header
		wantBody   []string
	}{
		{"request", func() *runtime.Request {
			req := get("/users/42", "x=1&y=2")
			req.Method, req.Body = "PUT", []byte("data")
			req.Route, req.Params = "PUT /users/{id}", map[string]string{"id": "42"}
			return req
		}, 200, http.Header{"Content-Type": {"text/plain"}, "X-Guest": {"wagi"}},
			[]string{"method=PUT path=/users/42 query=x=1&y=2 id=42 route=PUT /users/{id} body=data"}},
		{"status", func() *runtime.Request { return get("/", "mode=status") }, 404, http.Header{"Content-Type": {"text/plain"}}, []string{"nope"}},
		{"redirect", func() *runtime.Request { return get("/", "mode=redirect") }, 302, http.Header{"Location": {"/elsewhere"}}, nil},
		{"environment", func() *runtime.Request {
			req := get("/a%20b/c", "mode=env")
			req.Header.Set("X-Custom-Thing", "v1")
			req.Header.Add("Accept", "a")
			req.Header.Add("Accept", "b")
			req.Header.Set("Content-Type", "text/csv")
			req.Body = []byte("12345")
			req.Params = map[string]string{"file-name": "x.txt"}
			req.Route, req.InvocationID, req.TraceParent = "GET /{file-name}", "inv-9", "00-aa-bb-01"
			return req
		}, 200, nil, []string{
			"GATEWAY_INTERFACE=CGI/1.1", "REQUEST_METHOD=GET", "PATH_INFO=/a%20b/c", "QUERY_STRING=mode=env",
			"CONTENT_TYPE=text/csv", "CONTENT_LENGTH=5", "SERVER_PROTOCOL=HTTP/1.1", "SERVER_NAME=example.com",
			"SERVER_PORT=8080", "REMOTE_ADDR=127.0.0.1", "SCRIPT_NAME=", "REQUEST_URI=/a%2520b/c?mode=env",
			"HTTP_X_CUSTOM_THING=v1", "HTTP_ACCEPT=a, b", "X_PARAM_FILE_NAME=x.txt", "X_MATCHED_ROUTE=GET /{file-name}",
			"X_INVOCATION_ID=inv-9", "TRACEPARENT=00-aa-bb-01", "X_FULL_URL=http://example.com:8080/a%2520b/c?mode=env",
			"FROM_SPEC=yes",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := mustHandle(t, instance(t, m), tt.req())
			if resp.Status != tt.wantStatus {
				t.Fatalf("status %d, want %d (%q)", resp.Status, tt.wantStatus, resp.Body)
			}
			for k := range tt.wantHeader {
				if resp.Header.Get(k) != tt.wantHeader.Get(k) {
					t.Errorf("header %s = %q, want %q", k, resp.Header.Get(k), tt.wantHeader.Get(k))
				}
			}
			for _, want := range tt.wantBody {
				if !strings.Contains(string(resp.Body), want) {
					t.Errorf("body lacks %q:\n%s", want, resp.Body)
				}
			}
			if tt.name == "environment" && strings.Contains(string(resp.Body), "spoofed") {
				t.Errorf("spec env overrode a CGI variable")
			}
		})
	}
}

func TestExamples(t *testing.T) {
	r := newRuntime(t, Config{})
	t.Run("hello", func(t *testing.T) {
		inst := instance(t, load(t, r, runtime.Spec{Artifact: guests["hello-example"]}))
		req := get("/hello/ada", "")
		req.Params = map[string]string{"name": "ada"}
		if resp := mustHandle(t, inst, req); string(resp.Body) != "hello, ada\n" {
			t.Fatalf("got %q", resp.Body)
		}
		if resp := mustHandle(t, inst, get("/", "")); string(resp.Body) != "hello, world\n" {
			t.Fatalf("got %q", resp.Body)
		}
		post := get("/", "")
		post.Method, post.Body = "POST", []byte("echo me")
		if resp := mustHandle(t, inst, post); string(resp.Body) != "echo me" {
			t.Fatalf("got %q", resp.Body)
		}
	})
	// The lean API's request and response are reused by every request of
	// an instance: many requests in turn, with garbage collections
	// between them, each get their own answer.
	t.Run("lean", func(t *testing.T) {
		inst := instance(t, load(t, r, runtime.Spec{Artifact: guests["lean-example"], Env: map[string]string{"GREETING": "hi"}}))
		for i := range 3000 {
			name := fmt.Sprintf("guest-%d-%s", i, strings.Repeat("x", i%2000)) // ~6 MiB in all: garbage collections
			req := get("/lean/"+name, "")
			req.Params = map[string]string{"name": name}
			if resp := mustHandle(t, inst, req); string(resp.Body) != "hi, "+name+"\n" || resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" {
				t.Fatalf("request %d: %q %v", i, resp.Body, resp.Header)
			}
		}
		if resp := mustHandle(t, inst, get("/lean", "")); string(resp.Body) != "hi, world\n" {
			t.Fatalf("got %q", resp.Body)
		}
		post := get("/lean/echo", "")
		post.Method, post.Body, post.Header = "POST", []byte(`{"echo":"me"}`), http.Header{"Content-Type": {"application/json"}}
		if resp := mustHandle(t, inst, post); string(resp.Body) != `{"echo":"me"}` || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("got %q %v", resp.Body, resp.Header)
		}
	})
	t.Run("wagi", func(t *testing.T) {
		req := get("/hello/ada", "q=1")
		req.Params = map[string]string{"name": "ada"}
		resp := mustHandle(t, instance(t, load(t, r, runtime.Spec{Artifact: guests["wagi-example"]})), req)
		if want := "hello, ada\nmethod: GET\npath: /hello/ada\nquery: q=1\n"; string(resp.Body) != want {
			t.Fatalf("got %q, want %q", resp.Body, want)
		}
	})
}

// TestLimits drives each limit with a hostile guest of each contract, then
// checks that a fresh instance of the same module still serves.
func TestLimits(t *testing.T) {
	r := newRuntime(t, Config{})
	tests := []struct {
		name      string
		artifact  []byte
		limits    runtime.Limits
		req       *runtime.Request
		wantErr   error
		wantLimit string
		wantMsg   string
	}{
		{"sdk memory bomb", guests["sdk"], runtime.Limits{MemoryBytes: 64 << 20}, get("/bomb", ""), runtime.ErrMemoryLimit, "64MiB", ""},
		{"wagi memory bomb", guests["wagi"], runtime.Limits{MemoryBytes: 64 << 20}, get("/", "mode=bomb"), runtime.ErrMemoryLimit, "64MiB", ""},
		{"sdk infinite loop", guests["sdk"], runtime.Limits{Timeout: time.Second}, get("/loop", ""), runtime.ErrTimeout, "1s", ""},
		{"wagi infinite loop", guests["wagi"], runtime.Limits{Timeout: time.Second}, get("/", "mode=loop"), runtime.ErrTimeout, "1s", ""},
		{"sdk response too large", guests["sdk"], runtime.Limits{MaxResponseBytes: 1 << 20}, get("/huge", "n=2000000"), runtime.ErrResponseTooLarge, "1MiB", ""},
		{"sdk response just over", guests["sdk"], runtime.Limits{MaxResponseBytes: 1 << 20}, get("/huge", fmt.Sprint("n=", 1<<20+1)), runtime.ErrResponseTooLarge, "1MiB", ""},
		{"wagi response too large", guests["wagi"], runtime.Limits{MaxResponseBytes: 1 << 20}, get("/", "mode=huge"), runtime.ErrResponseTooLarge, "1MiB", ""},
		// A guest printing forever is stopped as soon as its output passes
		// the response limit: the error names that limit, not the (here
		// generous) timeout it would otherwise run into.
		{"wagi endless stdout", guests["wagi"], runtime.Limits{MaxResponseBytes: 1 << 20, Timeout: 5 * time.Minute}, get("/", "mode=flood"), runtime.ErrResponseTooLarge, "1MiB", ""},
		{"wagi endless stdout without headers", guests["wagi"], runtime.Limits{MaxResponseBytes: 1 << 20, Timeout: 5 * time.Minute}, get("/", "mode=floodraw"), runtime.ErrResponseTooLarge, "1MiB", ""},
		{"sdk panic", guests["sdk"], runtime.Limits{}, get("/panic", ""), runtime.ErrGuestFailed, "", "guest failed: panic: boom"},
		{"wagi panic", guests["wagi"], runtime.Limits{}, get("/", "mode=panic"), runtime.ErrGuestFailed, "", "exited with code 2: panic: wagi boom"},
		{"wagi exit code", guests["wagi"], runtime.Limits{}, get("/", "mode=fail"), runtime.ErrGuestFailed, "", "exited with code 3: failing on purpose"},
		{"wagi bad CGI", guests["wagi"], runtime.Limits{}, get("/", "mode=badcgi"), runtime.ErrGuestFailed, "", "bad CGI output"},
		{"minimal wagi loop", minimalWAGI(wasmbin.LoopForever()), runtime.Limits{Timeout: 100 * time.Millisecond}, get("/", ""), runtime.ErrTimeout, "100ms", ""},
		{"minimal wagi no output", minimalWAGI(nil), runtime.Limits{}, get("/", ""), runtime.ErrGuestFailed, "", "output ended before the blank line"},
		{"minimal sdk trap", minimalSDK(wasmbin.Unreachable()), runtime.Limits{}, get("/", ""), runtime.ErrGuestFailed, "", "unreachable"},
		{"minimal sdk loop", minimalSDK(wasmbin.Concat(wasmbin.LoopForever(), wasmbin.I64Const(0))), runtime.Limits{Timeout: 100 * time.Millisecond}, get("/", ""), runtime.ErrTimeout, "100ms", ""},
		{"sdk response outside memory", minimalSDK(wasmbin.I64Const(0xfff0<<32 | 0x100)), runtime.Limits{}, get("/", ""), runtime.ErrGuestFailed, "", "outside its 65536-byte memory"},
		{"sdk response pointer wraps", minimalSDK(wasmbin.I64Const(-1)), runtime.Limits{}, get("/", ""), runtime.ErrResponseTooLarge, "6MiB", ""},
		{"sdk response huge length", minimalSDK(wasmbin.I64Const(0x7fffffff)), runtime.Limits{MaxResponseBytes: 1 << 20}, get("/", ""), runtime.ErrResponseTooLarge, "1MiB", ""},
		{"sdk response garbage", minimalSDK(wasmbin.I64Const(16)), runtime.Limits{}, get("/", ""), runtime.ErrGuestFailed, "", "undecodable response: wire: malformed message"},
		{"sdk request does not fit", minimalSDK(nil), runtime.Limits{}, withBody(get("/", ""), 100<<10), runtime.ErrGuestFailed, "", "does not fit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := load(t, r, runtime.Spec{Artifact: tt.artifact, Limits: tt.limits})
			_, err := instance(t, m).Handle(context.Background(), tt.req)
			t.Logf("error: %v", err)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			var le *runtime.LimitError
			if tt.wantLimit != "" && (!errors.As(err, &le) || le.Limit != tt.wantLimit) {
				t.Fatalf("err = %#v, want a LimitError with limit %s", err, tt.wantLimit)
			}
			if tt.wantMsg != "" && !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("err = %q, want it to contain %q", err, tt.wantMsg)
			}
			// The process is fine and the module still serves on a new instance.
			if m.Contract() == runtime.ContractSDK && len(tt.artifact) == len(guests["sdk"]) {
				if resp := mustHandle(t, instance(t, m), get("/hello", "")); string(resp.Body) != "hello, world" {
					t.Fatalf("after the failure: %q", resp.Body)
				}
			}
			if m.Contract() == runtime.ContractWAGI && len(tt.artifact) == len(guests["wagi"]) {
				if resp := mustHandle(t, instance(t, m), get("/", "")); resp.Status != 200 {
					t.Fatalf("after the failure: %d %q", resp.Status, resp.Body)
				}
			}
		})
	}
}

func withBody(req *runtime.Request, n int) *runtime.Request {
	req.Method, req.Body = "POST", make([]byte, n)
	return req
}

func TestInstanceUnusableAfterError(t *testing.T) {
	r := newRuntime(t, Config{})
	inst := instance(t, load(t, r, runtime.Spec{Artifact: guests["sdk"]}))
	if _, err := inst.Handle(context.Background(), get("/panic", "")); !errors.Is(err, runtime.ErrGuestFailed) {
		t.Fatalf("err = %v", err)
	}
	if _, err := inst.Handle(context.Background(), get("/hello", "")); err == nil || !strings.Contains(err.Error(), "unusable") {
		t.Fatalf("second Handle on a failed instance: err = %v", err)
	}
}

func TestCallerContextIsNotATimeout(t *testing.T) {
	r := newRuntime(t, Config{})
	inst := instance(t, load(t, r, runtime.Spec{Artifact: guests["sdk"]}))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := inst.Handle(ctx, get("/loop", ""))
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, runtime.ErrTimeout) {
		t.Fatalf("err = %v, want the caller's context.DeadlineExceeded and not ErrTimeout", err)
	}
}

func TestLoadRejects(t *testing.T) {
	r := newRuntime(t, Config{})
	i32 := wasmbin.I32
	importing := func(mod, name string, ft wasmbin.FuncType) []byte {
		m := &wasmbin.Module{
			Types:       []wasmbin.FuncType{ft, tVoid},
			Imports:     []wasmbin.Import{{Module: mod, Name: name, Type: 0}},
			Funcs:       []wasmbin.Func{{Type: 1}},
			MemoryPages: 1,
			Exports:     []wasmbin.Export{{Name: "_start", Kind: wasmbin.KindFunc, Index: 1}, {Name: "memory", Kind: wasmbin.KindMemory}},
		}
		return m.Encode()
	}
	sdkWith := func(edit func(*wasmbin.Module)) []byte {
		m := &wasmbin.Module{
			Types:       []wasmbin.FuncType{tVoid, tAlloc, tHandle},
			Funcs:       []wasmbin.Func{{Type: 0}, {Type: 1, Body: wasmbin.I32Const(0)}, {Type: 2, Body: wasmbin.I64Const(0)}},
			MemoryPages: 1,
			Exports: []wasmbin.Export{
				{Name: "memory", Kind: wasmbin.KindMemory},
				{Name: wire.ExportMarker, Kind: wasmbin.KindFunc, Index: 0},
				{Name: wire.ExportAlloc, Kind: wasmbin.KindFunc, Index: 1},
				{Name: wire.ExportHandle, Kind: wasmbin.KindFunc, Index: 2},
			},
		}
		edit(m)
		return m.Encode()
	}
	valid := minimalSDK(nil)
	tests := []struct {
		name     string
		artifact []byte
		limits   runtime.Limits
		env      map[string]string
		wantMsg  string
	}{
		{"empty", nil, runtime.Limits{}, nil, "not a WebAssembly module (bad magic)"},
		{"random bytes", []byte("#!/bin/sh\necho hello, this is not wasm\n"), runtime.Limits{}, nil, "not a WebAssembly module (bad magic)"},
		{"bad version", append([]byte("\x00asm\x02\x00\x00\x00"), valid[8:]...), runtime.Limits{}, nil, "unsupported WebAssembly binary version"},
		{"truncated", valid[:len(valid)-5], runtime.Limits{}, nil, "does not compile"},
		{"no contract", (&wasmbin.Module{MemoryPages: 1, Exports: []wasmbin.Export{{Name: "memory", Kind: wasmbin.KindMemory}}}).Encode(), runtime.Limits{}, nil,
			"module exports neither _start (WAGI command) nor nimbus_handle (Nimbus SDK reactor)"},
		{"import from env", importing("env", "foo", tVoid), runtime.Limits{}, nil, `module imports "foo" from "env", which Nimbus does not provide`},
		{"unknown host function", importing("nimbus", "nope", tVoid), runtime.Limits{}, nil, `module imports "nope" from "nimbus", which Nimbus does not provide`},
		{"unknown WASI function", importing("wasi_snapshot_preview1", "sock_teleport", tVoid), runtime.Limits{}, nil, `imports "sock_teleport" from "wasi_snapshot_preview1"`},
		{"import of the interruption check", importing(interruptModule, interruptName, wasmbin.FuncType{Results: []byte{i32}}), runtime.Limits{}, nil,
			`module imports from a module name reserved for the host: it imports "interrupt_check" from "nimbus_runtime": "nimbus_runtime" belongs to Nimbus`},
		{"wrong host signature", importing("nimbus", "log", wasmbin.FuncType{Params: []byte{i32}}), runtime.Limits{}, nil, "imports nimbus.log as (i32) -> (), but Nimbus provides (i32, i32, i32) -> (i32)"},
		{"sdk with _start", sdkWith(func(m *wasmbin.Module) {
			m.Exports = append(m.Exports, wasmbin.Export{Name: "_start", Kind: wasmbin.KindFunc, Index: 0})
		}), runtime.Limits{}, nil, "an SDK guest must be a reactor (for Go, build with -buildmode=c-shared)"},
		{"sdk without marker", sdkWith(func(m *wasmbin.Module) { m.Exports = append(m.Exports[:1], m.Exports[2:]...) }), runtime.Limits{}, nil, "ABI marker nimbus_abi_v1"},
		{"sdk without alloc", sdkWith(func(m *wasmbin.Module) { m.Exports = append(m.Exports[:2], m.Exports[3:]...) }), runtime.Limits{}, nil, "but not nimbus_alloc"},
		{"sdk bad handle signature", sdkWith(func(m *wasmbin.Module) { m.Exports[3].Index = 1 }), runtime.Limits{}, nil, "nimbus_handle has signature (i32) -> (i32)"},
		{"sdk without exported memory", sdkWith(func(m *wasmbin.Module) { m.Exports = m.Exports[1:] }), runtime.Limits{}, nil, `does not export its memory as "memory"`},
		{"initial memory over limit", sdkWith(func(m *wasmbin.Module) { m.MemoryPages = 20 }), runtime.Limits{MemoryBytes: 1 << 20}, nil,
			`memory "memory" needs 1280KiB at start, above the function's memory limit of 1MiB`},
		{"go guest under a tiny limit", guests["sdk"], runtime.Limits{MemoryBytes: 1 << 20}, nil, "above the function's memory limit of 1MiB"},
		{"bad env name", valid, runtime.Limits{}, map[string]string{"A=B": "c"}, `environment variable "A=B"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := r.Load(context.Background(), runtime.Spec{App: "app", Function: "fn", Artifact: tt.artifact, Limits: complete(tt.limits), Env: tt.env})
			if !errors.Is(err, runtime.ErrInvalidModule) || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("err = %v, want ErrInvalidModule containing %q", err, tt.wantMsg)
			}
		})
	}
}

func TestMinimalSDK(t *testing.T) {
	r := newRuntime(t, Config{})
	resp := mustHandle(t, instance(t, load(t, r, runtime.Spec{Artifact: minimalSDK(nil)})), get("/", ""))
	if resp.Status != 200 || string(resp.Body) != "ok" || resp.Header.Get("Content-Type") != "text/plain" {
		t.Fatalf("got %d %v %q", resp.Status, resp.Header, resp.Body)
	}
}

func TestInstanceServesManyRequests(t *testing.T) {
	r := newRuntime(t, Config{})
	inst := instance(t, load(t, r, runtime.Spec{Artifact: guests["sdk"]}))
	var resp *runtime.Response
	for range 100 {
		resp = mustHandle(t, inst, get("/count", ""))
	}
	if string(resp.Body) != "100" {
		t.Fatalf("100th request saw count %q: the instance was not reused", resp.Body)
	}
}

// TestHammer runs many instances of one module at once, each serving
// requests in turn, plus WAGI requests and instance churn, under -race.
func TestHammer(t *testing.T) {
	r := newRuntime(t, Config{})
	sdk := load(t, r, runtime.Spec{Artifact: guests["sdk"], Capabilities: []string{"log"}})
	wagi := load(t, r, runtime.Spec{Artifact: guests["wagi"]})
	const workers, perWorker = 8, 15
	var wg sync.WaitGroup
	errs := make(chan error, workers*perWorker)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			mod := sdk
			if w%4 == 3 {
				mod = wagi
			}
			inst, err := mod.NewInstance(ctx)
			if err != nil {
				errs <- err
				return
			}
			defer func() { inst.Close(ctx) }()
			for i := range perWorker {
				req := get("/echo", "")
				req.Method, req.Body, req.Log = "POST", []byte(fmt.Sprintf("w%d-%d", w, i)), &sink{}
				if mod == wagi {
					req.Path, req.RawQuery = "/", ""
				}
				if i%5 == 4 && mod == sdk { // churn: replace the instance
					inst.Close(ctx)
					if inst, err = mod.NewInstance(ctx); err != nil {
						errs <- err
						return
					}
				}
				resp, err := inst.Handle(ctx, req)
				if err != nil {
					errs <- err
					return
				}
				if !bytes.HasSuffix(resp.Body, req.Body) {
					errs <- fmt.Errorf("worker %d got %q for %q", w, resp.Body, req.Body)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestCompilationCacheDir: a Load fills the cache dir, and a new runtime
// on the same dir (a restarted node) loads from it. The module is the
// smallest SDK reactor: compiling a Go guest into a
// fresh cache under the race detector takes most of a minute, and the
// property does not depend on the module's size.
func TestCompilationCacheDir(t *testing.T) {
	dir := t.TempDir()
	mod := minimalSDK(nil)
	ctx := context.Background()
	r1, err := New(ctx, Config{CacheDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r1.Load(ctx, runtime.Spec{Artifact: mod, Limits: complete(runtime.Limits{})}); err != nil {
		t.Fatal(err)
	}
	if err := r1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) == 0 {
		t.Fatalf("cache dir is empty after a Load (err %v)", err)
	}
	// A new process (a new Runtime on the same dir) loads from the cache.
	r2 := newRuntime(t, Config{CacheDir: dir})
	if resp := mustHandle(t, instance(t, load(t, r2, runtime.Spec{Artifact: mod})), get("/hello", "")); string(resp.Body) != "ok" {
		t.Fatalf("got %q", resp.Body)
	}
}

// TestLoadRefusesIncompleteLimits: the runtime applies no defaults; a
// spec with a zero limit is the caller's bug and says so.
func TestLoadRefusesIncompleteLimits(t *testing.T) {
	r := newRuntime(t, Config{})
	full := complete(runtime.Limits{})
	for _, l := range []runtime.Limits{{}, {MemoryBytes: full.MemoryBytes, Timeout: full.Timeout}, {Timeout: full.Timeout, MaxResponseBytes: 1}} {
		_, err := r.Load(context.Background(), runtime.Spec{App: "app", Function: "fn", Artifact: guests["sdk"], Limits: l})
		if err == nil || !strings.Contains(err.Error(), "incomplete limits") {
			t.Errorf("Load with limits %+v: %v, want an incomplete limits error", l, err)
		}
	}
}
