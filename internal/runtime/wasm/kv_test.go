package wasm

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/capability"
	"github.com/nimbus-dev/nimbus/internal/guesttest"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/runtime/wasm/hostfn"
	"github.com/nimbus-dev/nimbus/internal/state"
	"github.com/nimbus-dev/nimbus/internal/store"
)

// init registers the kv test guest with the guests TestMain builds (test
// registration only; guests_test.go lists the others).
func init() {
	guestSrcs = append(guestSrcs, guestSrc{"kv", "internal/runtime/wasm/testdata/kvguest", guesttest.Reactor})
}

// kvSetup is a real store with bucket shop/counts, and a runtime whose kv
// host functions use it.
type kvSetup struct {
	buckets *state.Buckets
	st      *store.Store
	rt      *Runtime
	slog    *syncBuffer
}

func newKVSetup(t testing.TB) *kvSetup {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(context.Background(), store.Options{DataDir: t.TempDir(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	b := state.NewBuckets(st.JetStream(), quiet)
	if err := b.Ensure(context.Background(), state.BucketConfig{App: "shop", Name: "counts"}); err != nil {
		t.Fatal(err)
	}
	buf := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(buf, nil))
	rt := newRuntime(t, Config{Logger: logger, HostFunctions: hostfn.NewDefaultRegistry(capability.New(capability.Config{Logger: logger, KV: b}))})
	return &kvSetup{buckets: b, st: st, rt: rt, slog: buf}
}

func (s *kvSetup) guest(t testing.TB, capabilities ...string) runtime.Instance {
	t.Helper()
	return instance(t, load(t, s.rt, runtime.Spec{App: "shop", Function: "fn", Artifact: guests["kv"], Capabilities: capabilities}))
}

func kvReq(method, path, query, body string, log runtime.LogSink) *runtime.Request {
	r := get(path, query)
	r.Method, r.Body, r.Log = method, []byte(body), log
	return r
}

func TestKVGuestReadWrite(t *testing.T) {
	s := newKVSetup(t)
	inst := s.guest(t, "kv:counts")
	do := func(method, path, query, body string) *runtime.Response {
		t.Helper()
		return mustHandle(t, inst, kvReq(method, path, query, body, nil))
	}
	if resp := do("GET", "/get", "b=counts&k=a", ""); resp.Status != 404 || !strings.Contains(string(resp.Body), "key not found") {
		t.Fatalf("get missing: %d %s", resp.Status, resp.Body)
	}
	resp := do("POST", "/put", "b=counts&k=a", "hello")
	rev, err := strconv.ParseUint(string(resp.Body), 10, 64)
	if resp.Status != 200 || err != nil {
		t.Fatalf("put: %d %s", resp.Status, resp.Body)
	}
	if resp := do("GET", "/get", "b=counts&k=a", ""); resp.Status != 200 || string(resp.Body) != "hello" || resp.Header.Get("X-Revision") != fmt.Sprint(rev) {
		t.Fatalf("get: %d %q rev %s, want hello %d", resp.Status, resp.Body, resp.Header.Get("X-Revision"), rev)
	}
	// The guest wrote through to the store.
	if v, got, err := s.buckets.Get(context.Background(), "shop", "counts", "a"); err != nil || string(v) != "hello" || got != rev {
		t.Fatalf("store: %q %d %v", v, got, err)
	}
	// Compare-and-swap.
	if resp := do("POST", "/put", "b=counts&k=a&if=0", "x"); resp.Status != 409 || resp.Header.Get("X-Current-Revision") != fmt.Sprint(rev) {
		t.Fatalf("create over existing: %d %s %v", resp.Status, resp.Body, resp.Header)
	}
	if resp := do("POST", "/put", "b=counts&k=a&if="+fmt.Sprint(rev), "world"); resp.Status != 200 {
		t.Fatalf("swap: %d %s", resp.Status, resp.Body)
	}
	if resp := do("GET", "/incr", "b=counts&k=n&n=20", ""); resp.Status != 200 {
		t.Fatalf("incr: %d %s", resp.Status, resp.Body)
	}
	if v, _, _ := s.buckets.Get(context.Background(), "shop", "counts", "n"); string(v) != "20" {
		t.Fatalf("counter %q, want 20", v)
	}
	// A value larger than the SDK's first buffer.
	big := strings.Repeat("0123456789", 30000)
	if resp := do("POST", "/put", "b=counts&k=big", big); resp.Status != 200 {
		t.Fatalf("put big: %d %s", resp.Status, resp.Body)
	}
	if resp := do("GET", "/get", "b=counts&k=big", ""); resp.Status != 200 || string(resp.Body) != big {
		t.Fatalf("get big: %d, %d bytes", resp.Status, len(resp.Body))
	}
	if resp := do("GET", "/list", "b=counts&p=", ""); string(resp.Body) != "a\nbig\nn" {
		t.Fatalf("list: %d %q", resp.Status, resp.Body)
	}
	if resp := do("POST", "/delete", "b=counts&k=a", ""); resp.Status != 200 {
		t.Fatalf("delete: %d %s", resp.Status, resp.Body)
	}
	if resp := do("GET", "/get", "b=counts&k=a", ""); resp.Status != 404 {
		t.Fatalf("get deleted: %d %s", resp.Status, resp.Body)
	}
	// Per-key TTL from the guest.
	if resp := do("POST", "/put", "b=counts&k=session&ttl=1s", "s"); resp.Status != 200 {
		t.Fatalf("put with TTL: %d %s", resp.Status, resp.Body)
	}
	// The TTL runs on JetStream's own clock, which a test cannot move: real
	// time has to pass, so poll for the expiry.
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if resp := do("GET", "/get", "b=counts&k=session", ""); resp.Status != 404 {
			return fmt.Errorf("key with a 1s TTL still there: %d %s", resp.Status, resp.Body)
		}
		return nil
	})
	// Bad input from the guest's caller comes back as errors, not failures.
	if resp := do("POST", "/put", "b=counts&k=..bad", "x"); resp.Status != 400 || !strings.Contains(string(resp.Body), "bad argument") {
		t.Fatalf("invalid key: %d %s", resp.Status, resp.Body)
	}
	if resp := do("GET", "/get", "b=nope&k=a", ""); resp.Status != 403 {
		t.Fatalf("bucket not granted: %d %s", resp.Status, resp.Body)
	}
}

func TestKVGuestUndeclaredBucket(t *testing.T) {
	s := newKVSetup(t)
	inst := s.guest(t, "kv:nope")
	resp := mustHandle(t, inst, kvReq("GET", "/get", "b=nope&k=a", "", nil))
	if resp.Status != 400 || !strings.Contains(string(resp.Body), "bucket not found") {
		t.Fatalf("undeclared bucket: %d %s", resp.Status, resp.Body)
	}
}

func TestKVGuestDenied(t *testing.T) {
	s := newKVSetup(t)
	if _, err := s.buckets.Put(context.Background(), "shop", "counts", "a", []byte("v"), state.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		caps    []string
		method  string
		path    string
		status  int
		wantLog string
	}{
		{"read-only get", []string{"kv:counts:read"}, "GET", "/get", 200, ""},
		{"read-only list", []string{"kv:counts:read"}, "GET", "/list", 200, ""},
		{"read-only put", []string{"kv:counts:read"}, "POST", "/put", 403, "add `capabilities: [kv:counts]`"},
		{"read-only delete", []string{"kv:counts:read"}, "POST", "/delete", 403, "add `capabilities: [kv:counts]`"},
		{"no grant get", []string{"log"}, "GET", "/get", 403, "add `capabilities: [kv:counts:read]`"},
		{"no grant put", nil, "POST", "/put", 403, "add `capabilities: [kv:counts]`"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inst := s.guest(t, tt.caps...)
			log := &sink{}
			resp := mustHandle(t, inst, kvReq(tt.method, tt.path, "b=counts&k=a", "new", log))
			if resp.Status != tt.status {
				t.Fatalf("status %d (%s), want %d", resp.Status, resp.Body, tt.status)
			}
			if tt.status == 403 && !strings.Contains(string(resp.Body), "capability not granted") {
				t.Fatalf("guest error %q does not wrap ErrDenied", resp.Body)
			}
			if tt.wantLog != "" && !log.has(logLine{"log", "warn", tt.wantLog}) {
				t.Fatalf("log %s lacks %q", log, tt.wantLog)
			}
			if tt.wantLog == "" && len(log.lines) != 0 {
				t.Fatalf("unexpected log %s", log)
			}
		})
	}
	if v, _, _ := s.buckets.Get(context.Background(), "shop", "counts", "a"); string(v) != "v" {
		t.Fatalf("a denied put wrote %q", v)
	}
	if !strings.Contains(s.slog.String(), "capability=kv:counts ") {
		t.Fatalf("slog lacks the denial: %s", s.slog)
	}
}

// TestKVGuestHostile: a guest passing pointers outside its memory gets
// CodeBadArgument back, and the instance keeps serving.
func TestKVGuestHostile(t *testing.T) {
	s := newKVSetup(t)
	inst := s.guest(t, "kv:counts")
	resp := mustHandle(t, inst, kvReq("GET", "/hostile", "", "", nil))
	want := strings.Repeat(fmt.Sprintln(hostfn.CodeBadArgument), 6)
	if resp.Status != 200 || string(resp.Body) != want {
		t.Fatalf("hostile calls: %d %q, want %q", resp.Status, resp.Body, want)
	}
	if resp := mustHandle(t, inst, kvReq("POST", "/put", "b=counts&k=after", "ok", nil)); resp.Status != 200 {
		t.Fatalf("instance after hostile calls: %d %s", resp.Status, resp.Body)
	}
	if keys, _ := s.buckets.List(context.Background(), "shop", "counts", "", 0); len(keys) != 1 || keys[0] != "after" {
		t.Fatalf("keys %q: a refused call wrote something", keys)
	}
}

// BenchmarkKV compares a guest's key-value calls (SDK -> host function ->
// state -> JetStream) with the same calls made directly on JetStream KV in
// the same process. The guest runs b.N calls in one request, so the figure
// is per call. Puts are fsynced (SyncAlways) in both.
func BenchmarkKV(b *testing.B) {
	s := newKVSetup(b)
	ctx := context.Background()
	if _, err := s.buckets.Put(ctx, "shop", "counts", "k", []byte("0123456789abcdef"), state.PutOptions{}); err != nil {
		b.Fatal(err)
	}
	inst := s.guest(b, "kv:counts")
	kv, err := s.st.JetStream().KeyValue(ctx, state.BucketName("shop", "counts"))
	if err != nil {
		b.Fatal(err)
	}
	for _, op := range []string{"get", "put"} {
		b.Run("guest-"+op, func(b *testing.B) {
			req := kvReq("GET", "/loop", fmt.Sprintf("op=%s&b=counts&k=k&n=%d", op, b.N), "", nil)
			b.ResetTimer()
			resp := mustHandle(b, inst, req)
			if resp.Status != 200 {
				b.Fatalf("%d %s", resp.Status, resp.Body)
			}
		})
		b.Run("jetstream-"+op, func(b *testing.B) {
			value := []byte("0123456789abcdef")
			for b.Loop() {
				var err error
				if op == "put" {
					_, err = kv.Put(ctx, "k", value)
				} else {
					_, err = kv.Get(ctx, "k")
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// checkFor calls f every interval until it returns nil, and fails the test
// with f's last error once total has passed (nats-server's checkFor).
func checkFor(t testing.TB, total, interval time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", total, err)
		}
		time.Sleep(interval)
	}
}
