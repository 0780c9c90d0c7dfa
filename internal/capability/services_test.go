package capability_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/capability"
	"github.com/nimbus-dev/nimbus/internal/state"
	"github.com/nimbus-dev/nimbus/internal/store"
)

// These tests run the services on real JetStream with no WebAssembly: the
// services are what a process runtime's endpoint will call too.

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

func (s *sink) get() []line {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.lines)
}

// syncBuffer is a slog destination tests read while services write.
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

func caller(app string, grants ...string) (*capability.Caller, *sink) {
	s := &sink{}
	return &capability.Caller{App: app, Function: "fn", InvocationID: "inv1", Grants: capability.NewGrants(grants), Sink: s}, s
}

// openBuckets starts an embedded store with bucket counts (values up to
// 100 bytes) of app shop.
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

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: err %v, want %v", what, err, want)
	}
}

func TestKVService(t *testing.T) {
	kv := capability.New(capability.Config{KV: openBuckets(t)}).KV
	ctx := context.Background()
	call, s := caller("shop", "kv:counts")
	_, _, err := kv.Get(ctx, call, "counts", "k")
	wantErr(t, "get missing", err, capability.ErrNotFound)
	rev, err := kv.Put(ctx, call, "counts", "k", []byte("v1"), state.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v, r, err := kv.Get(ctx, call, "counts", "k"); err != nil || string(v) != "v1" || r != rev {
		t.Fatalf("get: %q %d %v, want v1 %d", v, r, err, rev)
	}
	// Compare-and-swap: a stale revision reports the current one.
	zero := uint64(0)
	_, err = kv.Put(ctx, call, "counts", "k", []byte("v2"), state.PutOptions{IfRevision: &zero})
	var mm *capability.RevisionMismatchError
	if !errors.As(err, &mm) || mm.Current != rev || !errors.Is(err, capability.ErrRevisionMismatch) || !errors.Is(err, state.ErrRevisionMismatch) {
		t.Fatalf("create over an existing key: %v, want a mismatch at %d", err, rev)
	}
	rev2, err := kv.Put(ctx, call, "counts", "k", []byte("v2"), state.PutOptions{IfRevision: &rev})
	if err != nil || rev2 <= rev {
		t.Fatalf("swap: %d %v", rev2, err)
	}
	err = kv.Delete(ctx, call, "counts", "k", &rev)
	if !errors.As(err, &mm) || mm.Current != rev2 {
		t.Fatalf("stale delete: %v", err)
	}
	if keys, more, err := kv.List(ctx, call, "counts", "", "", 0); err != nil || !slices.Equal(keys, []string{"k"}) || more {
		t.Fatalf("list: %q %v %v", keys, more, err)
	}
	if err := kv.Delete(ctx, call, "counts", "k", nil); err != nil {
		t.Fatal(err)
	}
	// The store's refusals, classified.
	_, err = kv.Put(ctx, call, "counts", "k", make([]byte, 101), state.PutOptions{})
	wantErr(t, "value over the bucket's limit", err, capability.ErrTooLarge)
	_, err = kv.Put(ctx, call, "counts", "bad key", nil, state.PutOptions{})
	wantErr(t, "invalid key", err, capability.ErrBadArgument)
	_, err = kv.Put(ctx, call, "counts", "k", nil, state.PutOptions{TTL: -1})
	wantErr(t, "negative TTL", err, capability.ErrBadArgument)
	_, _, err = kv.List(ctx, call, "counts", "", "", -1)
	wantErr(t, "negative limit", err, capability.ErrBadArgument)
	other, _ := caller("shop", "kv:other")
	_, _, err = kv.Get(ctx, other, "other", "k")
	wantErr(t, "undeclared bucket", err, capability.ErrNoBucket)
	// Another app's bucket of the same name is another bucket.
	blog, _ := caller("blog", "kv:counts")
	_, _, err = kv.Get(ctx, blog, "counts", "k")
	wantErr(t, "other app", err, capability.ErrNoBucket)
	if l := s.get(); len(l) != 0 {
		t.Fatalf("granted calls logged %q", l)
	}
}

// TestKVGrantChecks: every kv operation checks its grant before touching
// the store, and a denial is logged once per grant and invocation with the
// grant to add.
func TestKVGrantChecks(t *testing.T) {
	var slogBuf syncBuffer
	b := openBuckets(t)
	kv := capability.New(capability.Config{KV: b, Logger: slog.New(slog.NewTextHandler(&slogBuf, nil))}).KV
	ctx := context.Background()
	get := func(call *capability.Caller) error { _, _, err := kv.Get(ctx, call, "counts", "k"); return err }
	list := func(call *capability.Caller) error { _, _, err := kv.List(ctx, call, "counts", "", "", 0); return err }
	put := func(call *capability.Caller) error {
		_, err := kv.Put(ctx, call, "counts", "k", []byte("v"), state.PutOptions{})
		return err
	}
	del := func(call *capability.Caller) error { return kv.Delete(ctx, call, "counts", "k", nil) }
	const roNote = ` (it has "kv:counts:read", which is read-only)`
	tests := []struct {
		name    string
		grants  []string
		op      func(*capability.Caller) error
		want    error // nil: allowed
		wantLog string
	}{
		{"read-only get", []string{"kv:counts:read"}, get, capability.ErrNotFound, ""},
		{"read-only list", []string{"kv:counts:read"}, list, nil, ""},
		{"read-only put", []string{"kv:counts:read"}, put, capability.ErrDenied,
			"nimbus.kv_put denied: capability \"kv:counts\" is not granted to function \"fn\"" + roNote + "; add `capabilities: [kv:counts]` to the function in nimbus.yaml"},
		{"read-only delete", []string{"kv:counts:read"}, del, capability.ErrDenied,
			"nimbus.kv_delete denied: capability \"kv:counts\" is not granted to function \"fn\"" + roNote + "; add `capabilities: [kv:counts]` to the function in nimbus.yaml"},
		{"no grant get", nil, get, capability.ErrDenied,
			"nimbus.kv_get denied: capability \"kv:counts:read\" is not granted to function \"fn\"; add `capabilities: [kv:counts:read]` to the function in nimbus.yaml"},
		{"no grant list", []string{"log"}, list, capability.ErrDenied, "add `capabilities: [kv:counts:read]`"},
		{"bare kv grants nothing", []string{"kv"}, put, capability.ErrDenied, "add `capabilities: [kv:counts]`"},
		{"other bucket granted", []string{"kv:other"}, get, capability.ErrDenied, "add `capabilities: [kv:counts:read]`"},
		{"read-write put", []string{"kv:counts"}, put, nil, ""},
		{"read-write delete", []string{"kv:counts"}, del, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			call, s := caller("shop", tt.grants...)
			for range 3 { // denied again and again, logged once
				if err := tt.op(call); !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
					t.Fatalf("err %v, want %v", err, tt.want)
				}
			}
			l := s.get()
			switch {
			case tt.wantLog == "" && len(l) != 0:
				t.Fatalf("unexpected log %q", l)
			case tt.wantLog != "" && (len(l) != 1 || l[0].stream != "log" || l[0].level != "warn" || !strings.Contains(l[0].text, tt.wantLog)):
				t.Fatalf("log %q, want one warning containing %q", l, tt.wantLog)
			}
		})
	}
	if out := slogBuf.String(); !strings.Contains(out, "app=shop function=fn capability=kv:counts host_function=kv_put invocation=inv1") {
		t.Fatalf("slog lacks the denial: %s", out)
	}
	// A denied write wrote nothing; the allowed ones left one key behind
	// at most (put then delete: none).
	if keys, err := b.List(ctx, "shop", "counts", "", 0); err != nil || len(keys) != 0 {
		t.Fatalf("keys %q %v", keys, err)
	}
}

// TestKVArgumentsBeforeGrant: a malformed bucket name is a bad argument,
// not a grant lookup ("counts:read" must not match "kv:counts:read"), and
// logs no denial.
func TestKVArgumentsBeforeGrant(t *testing.T) {
	kv := capability.New(capability.Config{KV: openBuckets(t)}).KV
	call, s := caller("shop", "kv:counts:read")
	for _, bucket := range []string{"counts:read", "", "Counts", strings.Repeat("a", 64)} {
		_, _, err := kv.Get(context.Background(), call, bucket, "k")
		wantErr(t, "bucket "+bucket, err, capability.ErrBadArgument)
	}
	if l := s.get(); len(l) != 0 {
		t.Fatalf("log %q", l)
	}
}

func TestKVWithoutStore(t *testing.T) {
	kv := capability.New(capability.Config{}).KV
	ctx := context.Background()
	granted, _ := caller("shop", "kv:counts")
	_, err := kv.Put(ctx, granted, "counts", "k", nil, state.PutOptions{})
	wantErr(t, "no store", err, capability.ErrUnavailable)
	// The grant is checked first: a function learns nothing it may not use.
	denied, s := caller("shop")
	_, err = kv.Put(ctx, denied, "counts", "k", nil, state.PutOptions{})
	wantErr(t, "no store, no grant", err, capability.ErrDenied)
	if len(s.get()) != 1 {
		t.Fatalf("log %q, want the denial", s.get())
	}
}

func TestNilCallerDenied(t *testing.T) {
	var slogBuf syncBuffer
	svc := capability.New(capability.Config{KV: openBuckets(t), Logger: slog.New(slog.NewTextHandler(&slogBuf, nil))})
	_, _, err := svc.KV.Get(context.Background(), nil, "counts", "k")
	wantErr(t, "kv_get", err, capability.ErrDenied)
	wantErr(t, "log", svc.Log.Log(nil, capability.LevelInfo, []byte("x")), capability.ErrDenied)
	_, err = svc.Publish.Publish(context.Background(), nil, "orders", []byte(`{}`))
	wantErr(t, "publish", err, capability.ErrDenied)
	if out := slogBuf.String(); strings.Count(out, "host function called outside an invocation") != 3 {
		t.Fatalf("slog: %s", out)
	}
}

func TestLogService(t *testing.T) {
	var slogBuf syncBuffer
	svc := capability.New(capability.Config{MaxLogBytes: 10, Logger: slog.New(slog.NewTextHandler(&slogBuf, nil))})
	call, s := caller("app", "log")
	msg := []byte("hello")
	if err := svc.Log.Log(call, capability.LevelError, msg); err != nil {
		t.Fatal(err)
	}
	msg[0] = 'J' // the service kept a copy
	if err := svc.Log.Log(call, capability.LevelDebug, []byte(strings.Repeat("x", 11))); err != nil {
		t.Fatal(err)
	}
	for _, lv := range []capability.Level{-1, 4} {
		wantErr(t, "level "+lv.String(), svc.Log.Log(call, lv, msg), capability.ErrBadArgument)
	}
	want := []line{{"log", "error", "hello"}, {"log", "debug", strings.Repeat("x", 10) + " …(truncated)"}}
	if got := s.get(); !slices.Equal(got, want) {
		t.Fatalf("lines %q, want %q", got, want)
	}
	denied, ds := caller("app", "kv:log")
	for range 3 {
		wantErr(t, "not granted", svc.Log.Log(denied, capability.LevelInfo, msg), capability.ErrDenied)
	}
	want = []line{{"log", "warn", "nimbus.log denied: capability \"log\" is not granted to function \"fn\"; add `capabilities: [log]` to the function in nimbus.yaml"}}
	if got := ds.get(); !slices.Equal(got, want) {
		t.Fatalf("denial lines %q, want %q", got, want)
	}
	if out := slogBuf.String(); strings.Count(out, "host function denied") != 1 || !strings.Contains(out, "app=app function=fn capability=log") {
		t.Fatalf("slog: %s", out)
	}
}

// TestDeniedWarningsPerMinute: a function denied a grant on every request
// is told so in every invocation's log, but the node's log says it once
// (per minute, app, function and grant), not once per request.
func TestDeniedWarningsPerMinute(t *testing.T) {
	var slogBuf syncBuffer
	svc := capability.New(capability.Config{Logger: slog.New(slog.NewTextHandler(&slogBuf, nil))})
	for i := range 100 {
		call, s := caller("app", "kv:other")
		call.InvocationID = fmt.Sprint("inv", i)
		wantErr(t, "not granted", svc.Log.Log(call, capability.LevelInfo, []byte("x")), capability.ErrDenied)
		if got := s.get(); len(got) != 1 || got[0].level != "warn" {
			t.Fatalf("invocation %d: its log has %q, want the denial", i, got)
		}
	}
	other, _ := caller("app2", "kv:other")
	wantErr(t, "not granted", svc.Log.Log(other, capability.LevelInfo, []byte("x")), capability.ErrDenied)
	if out := slogBuf.String(); strings.Count(out, "host function denied") != 2 || strings.Count(out, "app=app ") != 1 || strings.Count(out, "app=app2 ") != 1 {
		t.Fatalf("node log after 100 denied invocations of one function and 1 of another:\n%s", out)
	}
}

func TestDeniedError(t *testing.T) {
	err := error(&capability.DeniedError{Op: "kv_put", Function: "fn",
		Need: capability.Grant{Kind: capability.KindKV, Resource: "counts", Access: capability.AccessReadWrite}, ReadOnly: true})
	if !errors.Is(err, capability.ErrDenied) || errors.Is(err, capability.ErrBadArgument) {
		t.Fatalf("%v does not match ErrDenied alone", err)
	}
	want := "nimbus.kv_put denied: capability \"kv:counts\" is not granted to function \"fn\" (it has \"kv:counts:read\", which is read-only); add `capabilities: [kv:counts]` to the function in nimbus.yaml"
	if err.Error() != want {
		t.Fatalf("%q, want %q", err, want)
	}
}
