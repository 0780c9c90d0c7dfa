package state_test

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
	"time"

	"github.com/nimbus-dev/nimbus/internal/state"
	"github.com/nimbus-dev/nimbus/internal/store"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func openStore(t *testing.T, dir string) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), store.Options{DataDir: dir, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// setup opens a store in a fresh directory and ensures bucket "counts" of
// app "shop" with cfg's other fields.
func setup(t *testing.T, cfg state.BucketConfig) *state.Buckets {
	t.Helper()
	b := state.NewBuckets(openStore(t, t.TempDir()).JetStream(), quiet())
	cfg.App, cfg.Name = "shop", "counts"
	if err := b.Ensure(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	return b
}

func ptr(v uint64) *uint64 { return &v }

// checkFor polls f until it returns nil or the deadline passes.
func checkFor(t *testing.T, total, every time.Duration, f func() error) {
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
		time.Sleep(every)
	}
}

func TestCRUD(t *testing.T) {
	ctx := context.Background()
	b := setup(t, state.BucketConfig{})
	if _, _, err := b.Get(ctx, "shop", "counts", "a"); !errors.Is(err, state.ErrKeyNotFound) {
		t.Fatalf("get missing: %v", err)
	}
	r1, err := b.Put(ctx, "shop", "counts", "a", []byte("1"), state.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	v, rev, err := b.Get(ctx, "shop", "counts", "a")
	if err != nil || string(v) != "1" || rev != r1 {
		t.Fatalf("get: %q %d %v, want 1 %d", v, rev, err, r1)
	}
	r2, err := b.Put(ctx, "shop", "counts", "a", []byte("2"), state.PutOptions{})
	if err != nil || r2 <= r1 {
		t.Fatalf("second put: rev %d after %d, %v", r2, r1, err)
	}
	if v, _, _ := b.Get(ctx, "shop", "counts", "a"); string(v) != "2" {
		t.Fatalf("after update: %q", v)
	}
	if _, err := b.Put(ctx, "shop", "counts", "empty", nil, state.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if v, _, err := b.Get(ctx, "shop", "counts", "empty"); err != nil || len(v) != 0 {
		t.Fatalf("empty value: %q %v", v, err)
	}
	if err := b.Delete(ctx, "shop", "counts", "a", nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Get(ctx, "shop", "counts", "a"); !errors.Is(err, state.ErrKeyNotFound) {
		t.Fatalf("get deleted: %v", err)
	}
	if err := b.Delete(ctx, "shop", "counts", "never-written", nil); err != nil {
		t.Fatalf("delete missing: %v", err)
	}
}

func TestCompareAndSwap(t *testing.T) {
	ctx := context.Background()
	b := setup(t, state.BucketConfig{})
	r1, err := b.Put(ctx, "shop", "counts", "k", []byte("a"), state.PutOptions{IfRevision: ptr(0)})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	var mm *state.RevisionMismatchError
	_, err = b.Put(ctx, "shop", "counts", "k", []byte("b"), state.PutOptions{IfRevision: ptr(0)})
	if !errors.Is(err, state.ErrRevisionMismatch) || !errors.As(err, &mm) || mm.Current != r1 || mm.Expected != 0 {
		t.Fatalf("create over existing: %v (%+v), want mismatch with current %d", err, mm, r1)
	}
	_, err = b.Put(ctx, "shop", "counts", "k", []byte("b"), state.PutOptions{IfRevision: ptr(r1 + 100)})
	if !errors.As(err, &mm) || mm.Current != r1 {
		t.Fatalf("stale revision: %v, want mismatch with current %d", err, r1)
	}
	r2, err := b.Put(ctx, "shop", "counts", "k", []byte("b"), state.PutOptions{IfRevision: ptr(r1)})
	if err != nil {
		t.Fatalf("swap at current revision: %v", err)
	}
	if err := b.Delete(ctx, "shop", "counts", "k", ptr(r1)); !errors.As(err, &mm) || mm.Current != r2 {
		t.Fatalf("delete at stale revision: %v, want mismatch with current %d", err, r2)
	}
	if err := b.Delete(ctx, "shop", "counts", "k", ptr(0)); !errors.As(err, &mm) || mm.Current != r2 {
		t.Fatalf("delete if absent, present: %v", err)
	}
	if err := b.Delete(ctx, "shop", "counts", "k", ptr(r2)); err != nil {
		t.Fatalf("delete at current revision: %v", err)
	}
	if err := b.Delete(ctx, "shop", "counts", "k", ptr(0)); err != nil {
		t.Fatalf("delete if absent, absent: %v", err)
	}
	// A deleted key can be created again with "must not exist".
	if _, err := b.Put(ctx, "shop", "counts", "k", []byte("c"), state.PutOptions{IfRevision: ptr(0)}); err != nil {
		t.Fatalf("create after delete: %v", err)
	}
}

// TestCASHammer: concurrent increments with compare-and-swap lose none.
func TestCASHammer(t *testing.T) {
	ctx := context.Background()
	b := setup(t, state.BucketConfig{})
	const workers, each = 4, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				for attempt := 0; ; attempt++ {
					if attempt > 1000 {
						errs <- errors.New("too many conflicts")
						return
					}
					v, rev, err := b.Get(ctx, "shop", "counts", "n")
					n := 0
					if err == nil {
						fmt.Sscan(string(v), &n)
					} else if !errors.Is(err, state.ErrKeyNotFound) {
						errs <- err
						return
					}
					_, err = b.Put(ctx, "shop", "counts", "n", []byte(fmt.Sprint(n+1)), state.PutOptions{IfRevision: &rev})
					if err == nil {
						break
					}
					if !errors.Is(err, state.ErrRevisionMismatch) {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if v, _, _ := b.Get(ctx, "shop", "counts", "n"); string(v) != fmt.Sprint(workers*each) {
		t.Fatalf("count %q, want %d", v, workers*each)
	}
}

func TestList(t *testing.T) {
	ctx := context.Background()
	b := setup(t, state.BucketConfig{})
	keys := []string{"orders.eu.2", "orders.eu.1", "orders.us.1", "orders", "ordersx", "other", "o.x", "users/1", "users/2"}
	for _, k := range keys {
		if _, err := b.Put(ctx, "shop", "counts", k, []byte("v"), state.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Delete(ctx, "shop", "counts", "orders.us.1", nil); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		prefix string
		limit  int
		want   []string
	}{
		{"", 0, []string{"o.x", "orders", "orders.eu.1", "orders.eu.2", "ordersx", "other", "users/1", "users/2"}},
		{"orders.", 0, []string{"orders.eu.1", "orders.eu.2"}},
		{"orders", 0, []string{"orders", "orders.eu.1", "orders.eu.2", "ordersx"}},
		{"orders.e", 0, []string{"orders.eu.1", "orders.eu.2"}},
		{"orders.eu.1", 0, []string{"orders.eu.1"}},
		{"users/", 1, []string{"users/1"}},
		{"o", 3, []string{"o.x", "orders", "orders.eu.1"}},
		{"nothing", 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.prefix, func(t *testing.T) {
			got, err := b.List(ctx, "shop", "counts", tt.prefix, tt.limit)
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("List(%q, %d) = %q, %v; want %q", tt.prefix, tt.limit, got, err, tt.want)
			}
		})
	}
	// Paging through everything, two at a time, gives every key once, sorted.
	var all []string
	after := ""
	for range 10 {
		page, more, err := b.ListAfter(ctx, "shop", "counts", "", after, 2)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page...)
		if !more {
			break
		}
		after = page[len(page)-1]
	}
	if !slices.Equal(all, tests[0].want) {
		t.Fatalf("paged %q, want %q", all, tests[0].want)
	}
	if _, err := b.List(ctx, "shop", "counts", ".bad", 0); !errors.Is(err, state.ErrInvalidKey) {
		t.Fatalf("bad prefix: %v", err)
	}
}

func TestTTL(t *testing.T) {
	ctx := context.Background()
	b := setup(t, state.BucketConfig{})
	changes := make(chan state.Change, 16)
	wctx, stop := context.WithCancel(ctx)
	done := watch(t, wctx, b, "", changes)
	defer func() { stop(); <-done }()

	if _, err := b.Put(ctx, "shop", "counts", "session", []byte("s"), state.PutOptions{TTL: 500 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Put(ctx, "shop", "counts", "keep", []byte("k"), state.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Put(ctx, "shop", "counts", "created", []byte("c"), state.PutOptions{TTL: time.Second, IfRevision: ptr(0)}); err != nil {
		t.Fatal(err)
	}
	rev, err := b.Put(ctx, "shop", "counts", "swapped", []byte("1"), state.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Put(ctx, "shop", "counts", "swapped", []byte("2"), state.PutOptions{TTL: time.Second, IfRevision: &rev}); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"session", "created", "swapped"} {
		checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
			if _, _, err := b.Get(ctx, "shop", "counts", k); !errors.Is(err, state.ErrKeyNotFound) {
				return fmt.Errorf("%s still there (%v)", k, err)
			}
			return nil
		})
	}
	if _, _, err := b.Get(ctx, "shop", "counts", "keep"); err != nil {
		t.Fatalf("key without TTL: %v", err)
	}
	if keys, err := b.List(ctx, "shop", "counts", "", 0); err != nil || !slices.Equal(keys, []string{"keep", "probe"}) {
		t.Fatalf("list after expiry: %q %v", keys, err)
	}
	// The watcher saw the expiry as a delete.
	expired := map[string]bool{}
	deadline := time.After(10 * time.Second)
	for len(expired) < 3 {
		select {
		case c := <-changes:
			if c.Op == state.OpDelete && c.Expired {
				expired[c.Key] = true
			}
		case <-deadline:
			t.Fatalf("expiries seen by the watcher: %v", expired)
		}
	}
	if _, err := b.Put(ctx, "shop", "counts", "x", nil, state.PutOptions{TTL: -time.Second}); !errors.Is(err, state.ErrInvalidTTL) {
		t.Fatalf("negative TTL: %v", err)
	}
}

func TestBucketTTL(t *testing.T) {
	ctx := context.Background()
	b := setup(t, state.BucketConfig{TTL: time.Second})
	if _, err := b.Put(ctx, "shop", "counts", "k", []byte("v"), state.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, 50*time.Millisecond, func() error {
		if _, _, err := b.Get(ctx, "shop", "counts", "k"); !errors.Is(err, state.ErrKeyNotFound) {
			return fmt.Errorf("still there (%v)", err)
		}
		return nil
	})
}

// badKeys are keys that break the syntax, each with what its error says.
var badKeys = map[string]string{
	"":                                     "it is empty",
	".a":                                   "starts with '.'",
	"a.":                                   "ends with '.'",
	"a..b":                                 "'..' (an empty token) at byte 1",
	"a b":                                  "contains ' ' at byte 1",
	"a*":                                   "contains '*' at byte 1",
	"a>":                                   "contains '>' at byte 1",
	"ключ":                                 "contains 'к' at byte 0",
	"_kv.x":                                "starts with _kv",
	strings.Repeat("k", state.MaxKeyLen+1): "513 bytes, over the limit of 512",
}

func TestCheckKey(t *testing.T) {
	for k, want := range badKeys {
		if err := state.CheckKey(k); !errors.Is(err, state.ErrInvalidKey) || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckKey(%.20q) = %v, want ErrInvalidKey saying %q", k, err, want)
		}
	}
	for _, k := range []string{"a", "A-b_c=d/e.f", "1", "_k", "x_kv", strings.Repeat("k", state.MaxKeyLen)} {
		if err := state.CheckKey(k); err != nil {
			t.Errorf("CheckKey(%q) = %v, want nil", k, err)
		}
	}
}

func TestInvalid(t *testing.T) {
	ctx := context.Background()
	b := setup(t, state.BucketConfig{MaxValueBytes: 100})
	for k, rule := range badKeys {
		check := func(op string, err error) {
			t.Helper()
			if !errors.Is(err, state.ErrInvalidKey) || !strings.Contains(err.Error(), rule) || !strings.Contains(err.Error(), state.KeyRule) {
				t.Errorf("%s %.20q: %v, want ErrInvalidKey saying %q and the rule", op, k, err, rule)
			}
		}
		_, err := b.Put(ctx, "shop", "counts", k, nil, state.PutOptions{})
		check("put", err)
		_, _, err = b.Get(ctx, "shop", "counts", k)
		check("get", err)
		check("delete", b.Delete(ctx, "shop", "counts", k, nil))
	}
	for _, k := range []string{"a", "A-b_c=d/e.f", "1", strings.Repeat("k", state.MaxKeyLen)} {
		if _, err := b.Put(ctx, "shop", "counts", k, nil, state.PutOptions{}); err != nil {
			t.Errorf("put %q: %v", k, err)
		}
	}
	if _, err := b.Put(ctx, "shop", "counts", "big", make([]byte, 101), state.PutOptions{}); !errors.Is(err, state.ErrValueTooLarge) {
		t.Fatalf("101 bytes over a 100-byte limit: %v", err)
	}
	if _, err := b.Put(ctx, "shop", "counts", "big", make([]byte, 100), state.PutOptions{}); err != nil {
		t.Fatalf("at the limit: %v", err)
	}
	if _, _, err := b.Get(ctx, "shop", "other", "k"); !errors.Is(err, state.ErrBucketNotFound) {
		t.Fatalf("undeclared bucket: %v", err)
	}
	if _, _, err := b.Get(ctx, "Shop", "counts", "k"); !errors.Is(err, state.ErrInvalidName) {
		t.Fatalf("bad app name: %v", err)
	}
	if err := b.Ensure(ctx, state.BucketConfig{App: "shop", Name: "my_bucket"}); !errors.Is(err, state.ErrInvalidName) {
		t.Fatalf("bucket name with '_': %v", err)
	}
	if err := b.Ensure(ctx, state.BucketConfig{App: "shop", Name: "huge", MaxValueBytes: 64 << 20}); err == nil {
		t.Fatal("a 64MiB value limit was accepted")
	}
}

func TestDefaultValueLimit(t *testing.T) {
	ctx := context.Background()
	b := setup(t, state.BucketConfig{})
	// The embedded server's max payload (store.MaxPayload) leaves room for
	// the default limit plus headers.
	limit := state.DefaultMaxValueBytes
	if _, err := b.Put(ctx, "shop", "counts", "big", bytes.Repeat([]byte("x"), limit), state.PutOptions{TTL: time.Hour, IfRevision: ptr(0)}); err != nil {
		t.Fatalf("value at the limit: %v", err)
	}
	if _, err := b.Put(ctx, "shop", "counts", "big", make([]byte, limit+1), state.PutOptions{}); !errors.Is(err, state.ErrValueTooLarge) {
		t.Fatalf("value over the limit: %v", err)
	}
}

// watch runs b.Watch in a goroutine owned by the test and waits until it
// delivers changes (a probe key is written until the watcher sees it).
func watch(t *testing.T, ctx context.Context, b *state.Buckets, prefix string, out chan<- state.Change) <-chan struct{} {
	t.Helper()
	done := make(chan struct{})
	ready := make(chan struct{})
	var once sync.Once
	go func() {
		defer close(done)
		err := b.Watch(ctx, "shop", "counts", prefix, func(c state.Change) error {
			if strings.HasSuffix(c.Key, "probe") {
				once.Do(func() { close(ready) })
				return nil
			}
			select {
			case out <- c:
			case <-ctx.Done():
			}
			return nil
		})
		if err != nil {
			t.Errorf("watch: %v", err)
		}
	}()
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		if _, err := b.Put(context.Background(), "shop", "counts", prefix+"probe", nil, state.PutOptions{}); err != nil {
			return err
		}
		select {
		case <-ready:
			return nil
		default:
			return errors.New("watcher not ready")
		}
	})
	return done
}

func TestWatch(t *testing.T) {
	ctx := context.Background()
	b := setup(t, state.BucketConfig{})
	changes := make(chan state.Change, 16)
	wctx, stop := context.WithCancel(ctx)
	done := watch(t, wctx, b, "orders.", changes)
	r1, _ := b.Put(ctx, "shop", "counts", "orders.1", []byte("a"), state.PutOptions{})
	b.Put(ctx, "shop", "counts", "users.1", []byte("ignored"), state.PutOptions{})
	if err := b.Delete(ctx, "shop", "counts", "orders.1", nil); err != nil {
		t.Fatal(err)
	}
	want := []state.Change{{Key: "orders.1", Op: state.OpPut, Revision: r1, Value: []byte("a")}, {Key: "orders.1", Op: state.OpDelete}}
	for i, w := range want {
		select {
		case c := <-changes:
			if c.Key != w.Key || c.Op != w.Op || !bytes.Equal(c.Value, w.Value) || (w.Revision != 0 && c.Revision != w.Revision) || c.Expired {
				t.Fatalf("change %d: %+v, want %+v", i, c, w)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("change %d not seen", i)
		}
	}
	stop()
	<-done

	// fn's error ends the watch and is returned.
	boom := errors.New("boom")
	errc := make(chan error, 1)
	go func() {
		errc <- b.Watch(ctx, "shop", "counts", "", func(state.Change) error { return boom })
	}()
	var werr error
	checkFor(t, 10*time.Second, 20*time.Millisecond, func() error {
		b.Put(ctx, "shop", "counts", "poke", nil, state.PutOptions{})
		select {
		case werr = <-errc:
			return nil
		default:
			return errors.New("watch still running")
		}
	})
	if !errors.Is(werr, boom) {
		t.Fatalf("watch returned %v, want boom", werr)
	}
}

func TestRestartKeepsData(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := store.Open(ctx, store.Options{DataDir: dir, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	b := state.NewBuckets(st.JetStream(), quiet())
	if err := b.Ensure(ctx, state.BucketConfig{App: "shop", Name: "counts", MaxValueBytes: 10}); err != nil {
		t.Fatal(err)
	}
	rev, err := b.Put(ctx, "shop", "counts", "k", []byte("kept"), state.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	b = state.NewBuckets(openStore(t, dir).JetStream(), quiet())
	v, got, err := b.Get(ctx, "shop", "counts", "k")
	if err != nil || string(v) != "kept" || got != rev {
		t.Fatalf("after restart: %q %d %v, want kept %d", v, got, err, rev)
	}
	// The bucket's value limit survives too (read back from the stream).
	if _, err := b.Put(ctx, "shop", "counts", "k", make([]byte, 11), state.PutOptions{}); !errors.Is(err, state.ErrValueTooLarge) {
		t.Fatalf("limit after restart: %v", err)
	}
}

func TestRemove(t *testing.T) {
	ctx := context.Background()
	b := setup(t, state.BucketConfig{})
	if _, err := b.Put(ctx, "shop", "counts", "k", nil, state.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := b.Remove(ctx, "shop", "counts"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.Get(ctx, "shop", "counts", "k"); !errors.Is(err, state.ErrBucketNotFound) {
		t.Fatalf("get after remove: %v", err)
	}
	if err := b.Remove(ctx, "shop", "counts"); err != nil {
		t.Fatalf("second remove: %v", err)
	}
}

// TestCheckPut: CheckPut and CheckDelete answer the errors Put and Delete
// would for their arguments and bucket, and write nothing.
func TestCheckPut(t *testing.T) {
	ctx := context.Background()
	b := setup(t, state.BucketConfig{MaxValueBytes: 100})
	for _, c := range []struct {
		name   string
		bucket string
		key    string
		value  []byte
		opts   state.PutOptions
		want   error
	}{
		{"bad key", "counts", "a b", nil, state.PutOptions{}, state.ErrInvalidKey},
		{"negative TTL", "counts", "k", nil, state.PutOptions{TTL: -time.Second}, state.ErrInvalidTTL},
		{"undeclared bucket", "other", "k", nil, state.PutOptions{}, state.ErrBucketNotFound},
		{"over the value limit", "counts", "k", make([]byte, 101), state.PutOptions{}, state.ErrValueTooLarge},
		{"at the value limit", "counts", "k", make([]byte, 100), state.PutOptions{}, nil},
		{"with a TTL", "counts", "k", []byte("v"), state.PutOptions{TTL: time.Minute}, nil},
	} {
		err := b.CheckPut(ctx, "shop", c.bucket, c.key, c.value, c.opts)
		if c.want == nil && err != nil || !errors.Is(err, c.want) {
			t.Errorf("CheckPut %s: %v, want %v", c.name, err, c.want)
		}
		if _, perr := b.Put(ctx, "shop", c.bucket, c.key+"p", c.value, c.opts); c.key != "a b" && (perr == nil) != (err == nil) {
			t.Errorf("%s: Put answered %v where CheckPut answered %v", c.name, perr, err)
		}
	}
	if _, _, err := b.Get(ctx, "shop", "counts", "k"); !errors.Is(err, state.ErrKeyNotFound) {
		t.Fatalf("CheckPut wrote: get answered %v", err)
	}
	if err := b.CheckDelete(ctx, "shop", "other", "k"); !errors.Is(err, state.ErrBucketNotFound) {
		t.Errorf("CheckDelete undeclared bucket: %v", err)
	}
	if err := b.CheckDelete(ctx, "shop", "counts", "a b"); !errors.Is(err, state.ErrInvalidKey) {
		t.Errorf("CheckDelete bad key: %v", err)
	}
	if err := b.CheckDelete(ctx, "shop", "counts", "k"); err != nil {
		t.Errorf("CheckDelete: %v", err)
	}
}
