package scheduler

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/guesttest"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/runtime/wasm"
)

// artifacts is an in-memory ArtifactSource: the store is not what these
// tests are about, and the runtime below is the real one.
type artifacts map[string][]byte

func (a artifacts) GetArtifact(_ context.Context, sha string) ([]byte, error) {
	if b, ok := a[sha]; ok {
		return b, nil
	}
	return nil, fmt.Errorf("artifact %s: not found", sha)
}

func (a artifacts) add(b []byte) string {
	s := sha256.Sum256(b)
	h := hex.EncodeToString(s[:])
	a[h] = b
	return h
}

// clock is a manual clock for idle reaping.
type clock struct{ ns atomic.Int64 }

func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// cacheDir is the compilation cache shared by the test binaries.
var cacheDir = guesttest.WazeroCacheDir()

func setup(t *testing.T, maxInstances int) (*Scheduler, *clock, model.Function) {
	t.Helper()
	ctx := context.Background()
	rt, err := wasm.New(ctx, wasm.Config{CacheDir: cacheDir})
	if err != nil {
		t.Fatal(err)
	}
	arts := artifacts{}
	sha := arts.add(guesttest.MustBuild(t, "../runtime/wasm/testdata/sdkguest", guesttest.Reactor))
	clk := &clock{}
	clk.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	s := New(runtime.Set{model.RuntimeWasm: rt}, arts, Options{IdleTimeout: time.Minute, Now: clk.now, Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(func() { s.Close(ctx); rt.Close(ctx) })
	fn := model.Function{
		Name: "g", Runtime: "wasm", Module: sha, MemoryBytes: 64 << 20, TimeoutMS: 30_000,
		Concurrency: 1, MaxInstances: maxInstances, MaxRequestBytes: 1 << 20, MaxResponseBytes: 1 << 20,
	}
	rev, err := model.Plan("app", []model.Function{fn})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Activate(ctx, rev); err != nil {
		t.Fatal(err)
	}
	return s, clk, rev.Functions[0]
}

func invoke(t *testing.T, s *Scheduler, path string) *runtime.Response {
	t.Helper()
	resp, err := s.Invoke(context.Background(), "app", "g", &runtime.Request{Method: "GET", Path: path})
	if err != nil {
		t.Fatalf("invoke %s: %v", path, err)
	}
	return resp
}

func TestIdleInstancesAreReapedToZero(t *testing.T) {
	s, clk, _ := setup(t, 4)
	invoke(t, s, "/hello")
	if idle, busy := s.Instances("app", "g"); idle != 1 || busy != 0 {
		t.Fatalf("after one call: idle=%d busy=%d", idle, busy)
	}
	if n := s.ReapIdle(clk.now()); n != 0 {
		t.Fatalf("reaped %d fresh instances", n)
	}
	clk.advance(2 * time.Minute)
	if n := s.ReapIdle(clk.now()); n != 1 {
		t.Fatalf("reaped %d instances idle past the timeout, want 1", n)
	}
	if idle, busy := s.Instances("app", "g"); idle != 0 || busy != 0 {
		t.Fatalf("after reaping: idle=%d busy=%d", idle, busy)
	}
	// Scaled to zero, the next call starts a new instance: the counter the
	// guest keeps in a global starts again.
	if got := string(invoke(t, s, "/count").Body); got != "1" {
		t.Fatalf("count on a new instance = %q, want 1", got)
	}
}

func TestWarmInstanceIsReused(t *testing.T) {
	s, _, _ := setup(t, 4)
	for i := 1; i <= 5; i++ {
		if got := string(invoke(t, s, "/count").Body); got != fmt.Sprint(i) {
			t.Fatalf("call %d on a warm instance counted %q", i, got)
		}
	}
}

// lines is a log sink that keeps what it gets.
type lines struct {
	mu sync.Mutex
	l  []string
}

func (s *lines) Log(stream, level string, line []byte) {
	s.mu.Lock()
	s.l = append(s.l, stream+" "+level+" "+string(line))
	s.mu.Unlock()
}

func (s *lines) cold() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, l := range s.l {
		if strings.HasPrefix(l, "nimbus info cold start: a new instance in ") {
			n++
		}
	}
	return n
}

// TestColdStartIsLogged: the invocation that started an instance says so
// in its own log; one served by a warm instance does not.
func TestColdStartIsLogged(t *testing.T) {
	s, _, _ := setup(t, 4)
	for i, want := range []int{1, 0} {
		log := &lines{}
		if _, err := s.Invoke(context.Background(), "app", "g", &runtime.Request{Method: "GET", Path: "/hello", Log: log}); err != nil {
			t.Fatal(err)
		}
		if got := log.cold(); got != want {
			t.Errorf("call %d: %d cold start lines, want %d (log: %q)", i+1, got, want, log.l)
		}
	}
}

func TestFailedInstanceIsNotReused(t *testing.T) {
	s, _, _ := setup(t, 4)
	invoke(t, s, "/count")
	invoke(t, s, "/count")
	if _, err := s.Invoke(context.Background(), "app", "g", &runtime.Request{Method: "GET", Path: "/panic"}); !errors.Is(err, runtime.ErrGuestFailed) {
		t.Fatalf("panic: %v", err)
	}
	if got := string(invoke(t, s, "/count").Body); got != "1" {
		t.Fatalf("after a failure, count = %q: the failed instance was reused", got)
	}
}

func TestBusyAfterWaitingForAnInstance(t *testing.T) {
	s, _, _ := setup(t, 1)
	s.mu.RLock()
	p := s.apps["app"]["g"]
	s.mu.RUnlock()
	inst, _, err := p.acquire(context.Background(), nil) // hold the only instance
	if err != nil {
		t.Fatal(err)
	}
	defer p.release(inst, false)
	s.mu.Lock()
	p.fn.TimeoutMS = 50 // wait briefly; the test does not depend on how long
	s.mu.Unlock()
	_, err = s.Invoke(context.Background(), "app", "g", &runtime.Request{Method: "GET", Path: "/hello"})
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("invoke with every instance held: %v", err)
	}
	if reason := Reason(err); reason != ReasonBusy {
		t.Fatalf("busy has reason %q", reason)
	}
}

// TestRequestBodyCheckedBeforeAnInstance: the scheduler is where every
// invocation's body meets the function's max_request_body (the runtime
// does not check it again): a body over it fails with the limit named,
// counts under its reason, and never takes an instance; one at the limit
// runs.
func TestRequestBodyCheckedBeforeAnInstance(t *testing.T) {
	s, _, fn := setup(t, 1)
	big := &runtime.Request{Method: "POST", Path: "/echo", Body: make([]byte, fn.MaxRequestBytes+1)}
	_, err := s.Invoke(context.Background(), "app", "g", big)
	var le *runtime.LimitError
	if !errors.Is(err, runtime.ErrRequestTooLarge) || !errors.As(err, &le) || le.Limit != "1MiB" {
		t.Fatalf("invoke with a body over the limit: %v, want ErrRequestTooLarge naming 1MiB", err)
	}
	if reason := Reason(err); reason != ReasonRequestTooLarge {
		t.Fatalf("reason %q", reason)
	}
	if idle, busy := s.Instances("app", "g"); idle != 0 || busy != 0 {
		t.Fatalf("a refused body started an instance: idle=%d busy=%d", idle, busy)
	}
	if got := errorCount(t, s, ReasonRequestTooLarge); got != 1 {
		t.Fatalf("nimbus_request_errors_total{reason=request_too_large} = %v, want 1", got)
	}
	atLimit := &runtime.Request{Method: "POST", Path: "/hello", Body: make([]byte, fn.MaxRequestBytes)}
	if _, err := s.Invoke(context.Background(), "app", "g", atLimit); err != nil {
		t.Fatalf("invoke with a body at the limit: %v", err)
	}
}

// errorCount reads nimbus_request_errors_total of app/g for reason.
func errorCount(t *testing.T, s *Scheduler, reason string) float64 {
	t.Helper()
	mfs, err := s.opts.Metrics.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "nimbus_request_errors_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestHammer runs many concurrent invocations against a pool of 3 and checks
// that the pool never holds more than 3 instances.
func TestHammer(t *testing.T) {
	s, _, _ := setup(t, 3)
	stop := make(chan struct{})
	var maxLive atomic.Int64
	var watch sync.WaitGroup
	watch.Add(1)
	go func() {
		defer watch.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			idle, busy := s.Instances("app", "g")
			if n := int64(idle + busy); n > maxLive.Load() {
				maxLive.Store(n)
			}
		}
	}()
	var wg sync.WaitGroup
	for w := 0; w < 12; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				if _, err := s.Invoke(context.Background(), "app", "g", &runtime.Request{Method: "GET", Path: "/hello"}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	watch.Wait()
	if m := maxLive.Load(); m > 3 {
		t.Fatalf("pool held %d instances, max_instances is 3", m)
	}
}

func TestActivateRetiresTheOldRevision(t *testing.T) {
	s, _, fn := setup(t, 2)
	invoke(t, s, "/count")
	fn.Env = map[string]string{"V": "2"}
	fn.Revision = ""
	rev, err := model.Plan("app", []model.Function{fn})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Activate(context.Background(), rev); err != nil {
		t.Fatal(err)
	}
	resp, err := s.Invoke(context.Background(), "app", "g", &runtime.Request{Method: "GET", Path: "/env", RawQuery: "key=V"})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(resp.Body); got != "2" {
		t.Fatalf("env after activation: %q", got)
	}
	s.mu.RLock()
	pools := len(s.pools)
	s.mu.RUnlock()
	if pools != 1 {
		t.Fatalf("%d pools after activating a new revision, want 1 (the old one retired)", pools)
	}
	if _, err := s.Invoke(context.Background(), "app", "nope", &runtime.Request{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown function: %v", err)
	}
}

// TestMetricsAtFirstUse: a deployed function that has served nothing has
// no metric series (thousands of idle functions would each pay for
// theirs); its first invocation makes them.
func TestMetricsAtFirstUse(t *testing.T) {
	s, _, _ := setup(t, 1)
	series := func() int {
		mfs, err := s.opts.Metrics.Registry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "function" && l.GetValue() == "g" {
						n++
					}
				}
			}
		}
		return n
	}
	// The periodic reap visits every pool; it must not make them either.
	s.ReapIdle(time.Now().Add(time.Hour))
	if n := series(); n != 0 {
		t.Fatalf("%d series of a function that served nothing, want 0", n)
	}
	if _, err := s.Invoke(context.Background(), "app", "g", &runtime.Request{Method: "GET", Path: "/hello"}); err != nil {
		t.Fatal(err)
	}
	if n := series(); n < 4 {
		t.Fatalf("%d series after an invocation, want the function's counters, histograms and gauges", n)
	}
}

// A held revision outlives the deploys that replace it, answers
// InvokeRevision with its own code, and is retired by its last Release.
func TestHeldRevisionOutlivesActivation(t *testing.T) {
	s, _, old := setup(t, 2)
	ctx := context.Background()
	if err := s.Hold(ctx, "app", old, 2); err != nil {
		t.Fatal(err)
	}
	fn := old
	fn.Env, fn.Revision = map[string]string{"V": "2"}, ""
	rev, err := model.Plan("app", []model.Function{fn})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Activate(ctx, rev); err != nil {
		t.Fatal(err)
	}
	env := func(revision string) string {
		t.Helper()
		req := &runtime.Request{Method: "GET", Path: "/env", RawQuery: "key=V"}
		var resp *runtime.Response
		var err error
		if revision == "" {
			resp, err = s.Invoke(ctx, "app", "g", req)
		} else {
			resp, err = s.InvokeRevision(ctx, "app", "g", revision, req)
		}
		if err != nil {
			t.Fatalf("invoke at %q: %v", revision, err)
		}
		return string(resp.Body)
	}
	if got := env(""); got != "2" {
		t.Fatalf("active revision: V=%q, want 2", got)
	}
	if got := env(old.Revision); got != "" {
		t.Fatalf("held revision: V=%q, want unset (its own env)", got)
	}
	if got := s.Loaded("app"); len(got) != 2 {
		t.Fatalf("loaded %v, want the active and the held revision", got)
	}
	s.Release("app", old.Revision)
	if got := s.Loaded("app"); len(got) != 2 {
		t.Fatalf("loaded %v after one of two releases, want both still", got)
	}
	s.Release("app", old.Revision)
	if got := s.Loaded("app"); len(got) != 1 || got[0] != rev.Functions[0].Revision {
		t.Fatalf("loaded %v after the last release, want the active revision only", got)
	}
	if _, err := s.InvokeRevision(ctx, "app", "g", old.Revision, &runtime.Request{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("released revision: %v, want ErrNotFound", err)
	}
	// One release too many is ignored; a hold of the active revision
	// loads nothing.
	s.Release("app", old.Revision)
	if err := s.Hold(ctx, "app", rev.Functions[0], 1); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkHoldRelease is what every workflow run start and end adds (a
// hold of a loaded revision and its release), beside the baseline of a
// function lookup (Function: one read lock and two map reads).
func BenchmarkHoldRelease(b *testing.B) {
	s, _, fn := setup(&testing.T{}, 1)
	ctx := context.Background()
	b.Run("baseline-lookup", func(b *testing.B) {
		for b.Loop() {
			s.Function("app", "g")
		}
	})
	b.Run("hold-release", func(b *testing.B) {
		for b.Loop() {
			if err := s.Hold(ctx, "app", fn, 1); err != nil {
				b.Fatal(err)
			}
			s.Release("app", fn.Revision)
		}
	})
}

// TestHoldHammer: holds, invocations by revision and releases race with
// activations that move the app between two revisions; every held
// revision answers, and once every hold is released only the active
// revision is loaded.
func TestHoldHammer(t *testing.T) {
	s, _, a := setup(t, 2)
	ctx := context.Background()
	b := a
	b.Env, b.Revision = map[string]string{"V": "b"}, ""
	revB, err := model.Plan("app", []model.Function{b})
	if err != nil {
		t.Fatal(err)
	}
	b = revB.Functions[0]
	revA := &model.Revision{ID: "a", App: "app", Functions: []model.Function{a}}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn := a
			if w%2 == 1 {
				fn = b
			}
			for range 10 {
				if err := s.Hold(ctx, "app", fn, 1); err != nil {
					errs <- err
					return
				}
				if _, err := s.InvokeRevision(ctx, "app", "g", fn.Revision, &runtime.Request{Method: "GET", Path: "/count"}); err != nil {
					errs <- fmt.Errorf("invoke held %s: %w", fn.Revision[:8], err)
				}
				s.Release("app", fn.Revision)
			}
		}()
	}
	for i := range 6 { // ends on revA
		rev := revA
		if i%2 == 0 {
			rev = revB
		}
		if err := s.Activate(ctx, rev); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := s.Loaded("app"); len(got) != 1 || got[0] != a.Revision {
		t.Fatalf("loaded %v after every release, want the active revision %s only", got, a.Revision)
	}
}
