package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/throttle"
)

// doubleRuntime is a test double of runtime.Runtime: its modules say how
// many requests an instance may serve at once (maxConc), and its instances
// count what they serve, so the tests below check the pool's accounting,
// not a guest. (The other tests of this package run real wasm guests.)
type doubleRuntime struct {
	maxConc  int
	reusable bool
	gate     chan struct{} // when non-nil, Handle waits for it to close
	start    chan struct{} // when non-nil, NewInstance waits for it to close
	fail     atomic.Int64  // the next this many NewInstance calls fail
	starting atomic.Int64  // NewInstance calls in progress

	mu       sync.Mutex
	specs    []runtime.Spec
	live     int // instances created and not closed
	maxLive  int
	created  int
	overload atomic.Bool  // an instance served more than maxConc at once
	inflight atomic.Int64 // requests inside Handle, all instances
}

func (r *doubleRuntime) Load(_ context.Context, spec runtime.Spec) (runtime.Module, error) {
	r.mu.Lock()
	r.specs = append(r.specs, spec)
	r.mu.Unlock()
	return &doubleModule{r: r}, nil
}

func (r *doubleRuntime) Close(context.Context) error { return nil }

type doubleModule struct{ r *doubleRuntime }

func (m *doubleModule) Contract() runtime.Contract { return runtime.ContractSDK }
func (m *doubleModule) Reusable() bool             { return m.r.reusable }
func (m *doubleModule) MaxConcurrency() int        { return m.r.maxConc }
func (m *doubleModule) Close(context.Context) error {
	return nil
}

func (m *doubleModule) NewInstance(context.Context) (runtime.Instance, error) {
	r := m.r
	if r.start != nil {
		r.starting.Add(1)
		<-r.start
		r.starting.Add(-1)
	}
	if r.fail.Add(-1) >= 0 {
		return nil, errors.New("start failed, as asked")
	}
	r.mu.Lock()
	r.live++
	r.created++
	r.maxLive = max(r.maxLive, r.live)
	r.mu.Unlock()
	return &doubleInstance{r: r}, nil
}

type doubleInstance struct {
	r      *doubleRuntime
	now    atomic.Int64 // requests it serves now
	closed atomic.Bool
}

// Handle serves one request; path "/fail" fails it (the instance is then
// broken and must not take new requests).
func (i *doubleInstance) Handle(_ context.Context, req *runtime.Request) (*runtime.Response, error) {
	if i.closed.Load() {
		return nil, errors.New("handle on a closed instance")
	}
	if n := i.now.Add(1); n > int64(i.r.maxConc) {
		i.r.overload.Store(true)
	}
	i.r.inflight.Add(1)
	defer func() { i.now.Add(-1); i.r.inflight.Add(-1) }()
	if i.r.gate != nil {
		<-i.r.gate
	}
	if req.Path == "/fail" {
		return nil, fmt.Errorf("%w: asked to", runtime.ErrGuestFailed)
	}
	return &runtime.Response{Status: 200}, nil
}

func (i *doubleInstance) Close(context.Context) error {
	if !i.closed.Swap(true) {
		i.r.mu.Lock()
		i.r.live--
		i.r.mu.Unlock()
	}
	return nil
}

// doubleSetup activates one function "f" of app "app" on the double,
// registered under the runtime name "double".
func doubleSetup(t *testing.T, r *doubleRuntime, concurrency, maxInstances int, change ...func(*Options, *model.Function)) *Scheduler {
	t.Helper()
	arts := artifacts{}
	sha := arts.add([]byte("double"))
	opts := Options{IdleTimeout: time.Minute, Logger: slog.New(slog.DiscardHandler)}
	fn := model.Function{Name: "f", Runtime: "double", Module: sha, TimeoutMS: 60_000,
		Concurrency: concurrency, MaxInstances: maxInstances, Revision: "f1"}
	for _, c := range change {
		c(&opts, &fn)
	}
	s := New(runtime.Set{"double": r}, arts, opts)
	t.Cleanup(func() { s.Close(context.Background()) })
	rev := &model.Revision{App: "app", ID: "rev1", Functions: []model.Function{fn}}
	if err := s.Provision(context.Background(), rev); err != nil {
		t.Fatal(err)
	}
	return s
}

// checkFor polls cond until it returns nil or the deadline passes.
func checkFor(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestInstanceServesUpToItsSlots fills every slot of a pool and checks that
// one more request finds it busy: an instance takes min(the function's
// concurrency, the module's max) requests at once, and a single-use
// instance one.
func TestInstanceServesUpToItsSlots(t *testing.T) {
	for _, tc := range []struct {
		name                          string
		moduleMax, concurrency, insts int
		reusable                      bool
		wantSlots                     int
	}{
		{"module caps the function", 3, 4, 2, true, 3},
		{"function caps the module", 8, 2, 2, true, 2},
		{"wasm-like: one at a time", 1, 1, 3, true, 1},
		{"single-use instances", 4, 4, 2, false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &doubleRuntime{maxConc: tc.moduleMax, reusable: tc.reusable, gate: make(chan struct{})}
			s := doubleSetup(t, r, tc.concurrency, tc.insts)
			full := tc.insts * tc.wantSlots
			var wg sync.WaitGroup
			errs := make(chan error, full)
			for range full {
				wg.Go(func() {
					if _, err := s.Invoke(context.Background(), "app", "f", &runtime.Request{Path: "/"}); err != nil {
						errs <- err
					}
				})
			}
			checkFor(t, "every slot taken", func() error {
				if n := r.inflight.Load(); n != int64(full) {
					return fmt.Errorf("%d requests in flight, want %d", n, full)
				}
				return nil
			})
			// One more does not fit: with its context already done it is
			// refused at once instead of waiting.
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if _, err := s.Invoke(ctx, "app", "f", &runtime.Request{Path: "/"}); !errors.Is(err, ErrBusy) {
				t.Fatalf("request %d: %v, want ErrBusy", full+1, err)
			}
			close(r.gate)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			if r.overload.Load() {
				t.Fatalf("an instance served more than %d at once", tc.moduleMax)
			}
			r.mu.Lock()
			defer r.mu.Unlock()
			if r.maxLive > tc.insts {
				t.Fatalf("%d instances live at once, max_instances is %d", r.maxLive, tc.insts)
			}
			if idle, busy := s.Instances("app", "f"); busy != 0 || (tc.reusable && idle != tc.insts) {
				t.Fatalf("after: idle=%d busy=%d", idle, busy)
			}
		})
	}
}

// TestBurstWaitsForStartingInstances sends a burst at zero to a function
// whose instances serve 4 at once: while instances start, the requests
// that fit in their slots wait for them instead of starting one each, so
// 10 requests start 3 instances (10/4 rounded up), not 10. When a start
// fails, those waiting for it start their own.
func TestBurstWaitsForStartingInstances(t *testing.T) {
	for _, tc := range []struct {
		name        string
		fail        int64
		wantCreated int
	}{
		{"starts succeed", 0, 3},
		{"first start fails", 1, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &doubleRuntime{maxConc: 4, reusable: true, gate: make(chan struct{}), start: make(chan struct{})}
			r.fail.Store(tc.fail)
			s := doubleSetup(t, r, 4, 10)
			const burst = 10
			var wg sync.WaitGroup
			var failed atomic.Int64
			for range burst {
				wg.Go(func() {
					if _, err := s.Invoke(context.Background(), "app", "f", &runtime.Request{Path: "/"}); err != nil {
						failed.Add(1)
					}
				})
			}
			checkFor(t, "the burst waiting on starting instances", func() error {
				s.mu.RLock()
				p := s.apps["app"]["f"]
				s.mu.RUnlock()
				p.mu.Lock()
				defer p.mu.Unlock()
				if p.starting+p.claims != burst {
					return fmt.Errorf("%d starting, %d waiting for their slots; want %d in all", p.starting, p.claims, burst)
				}
				return nil
			})
			if n := r.starting.Load(); n != 3 {
				t.Fatalf("%d instances starting for a burst of %d with 4 slots each, want 3", n, burst)
			}
			close(r.start)
			checkFor(t, "the burst served", func() error {
				if n := r.inflight.Load() + failed.Load(); n != burst {
					return fmt.Errorf("%d in flight or failed, want %d", n, burst)
				}
				return nil
			})
			close(r.gate)
			wg.Wait()
			if n := failed.Load(); n != tc.fail {
				t.Fatalf("%d requests failed, want %d (the starters of failed starts)", n, tc.fail)
			}
			r.mu.Lock()
			defer r.mu.Unlock()
			if r.created != tc.wantCreated {
				t.Fatalf("%d instances created, want %d", r.created, tc.wantCreated)
			}
			if r.overload.Load() {
				t.Fatal("an instance served more than 4 at once")
			}
		})
	}
}

// TestWaitForAStartThatDoesNotEnd: a request waiting for the slot of an
// instance whose start outlasts its deadline is told so, not that every
// instance was busy.
func TestWaitForAStartThatDoesNotEnd(t *testing.T) {
	r := &doubleRuntime{maxConc: 4, reusable: true, start: make(chan struct{})}
	s := doubleSetup(t, r, 4, 10)
	go s.Invoke(context.Background(), "app", "f", &runtime.Request{Path: "/"}) // the starter
	checkFor(t, "a start under way", func() error {
		if r.starting.Load() != 1 {
			return errors.New("no start yet")
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := s.Invoke(ctx, "app", "f", &runtime.Request{Path: "/"})
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "still starting") {
		t.Fatalf("got %v, want ErrBusy saying the instance was still starting", err)
	}
	if n := r.starting.Load(); n != 1 {
		t.Fatalf("%d starts, want the one", n)
	}
	close(r.start)
}

// TestConcurrentInstanceHammer runs many invocations, some failing, on a
// pool of 2 instances serving 3 at once, and checks the accounting: never
// more than 3 requests on an instance, never more than 2 instances, a
// failed instance takes no new request, and nothing is left busy.
func TestConcurrentInstanceHammer(t *testing.T) {
	r := &doubleRuntime{maxConc: 3, reusable: true}
	s := doubleSetup(t, r, 5, 2)
	var wg sync.WaitGroup
	var ok, failed atomic.Int64
	for w := range 16 {
		wg.Go(func() {
			for i := range 50 {
				path := "/"
				if (w*50+i)%7 == 0 {
					path = "/fail"
				}
				_, err := s.Invoke(context.Background(), "app", "f", &runtime.Request{Path: path})
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, runtime.ErrGuestFailed) && path == "/fail":
					failed.Add(1)
				default:
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if ok.Load()+failed.Load() != 16*50 {
		t.Fatalf("%d succeeded and %d failed of %d", ok.Load(), failed.Load(), 16*50)
	}
	if r.overload.Load() {
		t.Fatal("an instance served more than 3 requests at once")
	}
	r.mu.Lock()
	maxLive, live, created := r.maxLive, r.live, r.created
	r.mu.Unlock()
	if maxLive > 2 {
		t.Fatalf("%d instances live at once, max_instances is 2", maxLive)
	}
	if created < 2 {
		t.Fatalf("%d instances created; failures must replace broken instances", created)
	}
	idle, busy := s.Instances("app", "f")
	if busy != 0 || idle != live {
		t.Fatalf("after: idle=%d busy=%d, %d instances live", idle, busy, live)
	}
}

// TestRuntimeChosenPerFunction loads a function with the runtime it names
// and refuses, before activation, one whose runtime the node does not run.
func TestRuntimeChosenPerFunction(t *testing.T) {
	r := &doubleRuntime{maxConc: 1, reusable: true}
	s := doubleSetup(t, r, 1, 1)
	r.mu.Lock()
	got := r.specs[0].Runtime
	r.mu.Unlock()
	if got != "double" {
		t.Fatalf("spec.Runtime = %q, want double", got)
	}
	arts := artifacts{}
	rev := &model.Revision{App: "app2", ID: "rev2", Functions: []model.Function{{
		Name: "w", Runtime: model.RuntimeWasm, Module: arts.add([]byte("x")), Concurrency: 1, MaxInstances: 1, Revision: "w1",
	}}}
	err := s.Validate(context.Background(), rev)
	if !errors.Is(err, ErrNoRuntime) || !strings.Contains(err.Error(), `"wasm"`) || !strings.Contains(err.Error(), "double") {
		t.Fatalf("Validate of a wasm function on a node running only double: %v", err)
	}
	if _, ok := s.Function("app2", "w"); ok {
		t.Fatal("a refused function is active")
	}
}

// TestEdgeWaitersBounded: with every instance busy, edge invocations
// (InvokeEdge) wait up to the app's share of Options.Waiting and the next
// one is refused at once with ErrBusy (its timeout is a minute), while the
// node's own invocations (Invoke) still wait; all of them are served once
// the instance frees, and the count of waiters goes back to 0. The same
// holds for a wait on a flow control permit.
func TestEdgeWaitersBounded(t *testing.T) {
	for _, tc := range []struct {
		name  string
		insts int
		flow  *model.Flow
	}{
		{"instances", 1, nil},
		{"flow", 4, &model.Flow{MaxConcurrency: 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &doubleRuntime{maxConc: 1, reusable: true, gate: make(chan struct{})}
			waiting := throttle.NewWaiting(4) // 2 per app
			s := doubleSetup(t, r, 1, tc.insts, func(o *Options, fn *model.Function) {
				o.Waiting = waiting
				fn.Flow = tc.flow
			})
			release := sync.OnceFunc(func() { close(r.gate) })
			t.Cleanup(release) // before the scheduler's close, should the test fail first
			var wg sync.WaitGroup
			errs := make(chan error, 4)
			call := func(edge bool) {
				wg.Go(func() {
					invoke := s.Invoke
					if edge {
						invoke = s.InvokeEdge
					}
					if _, err := invoke(context.Background(), "app", "f", &runtime.Request{Path: "/"}); err != nil {
						errs <- err
					}
				})
			}
			call(true) // runs
			checkFor(t, "the first request runs", func() error {
				if n := r.inflight.Load(); n != 1 {
					return fmt.Errorf("%d in flight", n)
				}
				return nil
			})
			call(true)
			call(true)
			checkFor(t, "two edge requests wait", func() error {
				if _, n := waiting.Count("app"); n != 2 {
					return fmt.Errorf("%d waiting", n)
				}
				return nil
			})
			_, err := s.InvokeEdge(context.Background(), "app", "f", &runtime.Request{Path: "/"})
			if !errors.Is(err, ErrBusy) || !errors.Is(err, throttle.ErrTooManyWaiting) || !strings.Contains(err.Error(), `app "app" has as many requests waiting for an instance as it may (2:`) {
				t.Fatalf("a third edge waiter: %v", err)
			}
			call(false) // the node's own caller is not bounded by it
			release()
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			if node, app := waiting.Count("app"); node != 0 || app != 0 {
				t.Fatalf("after: %d waiting on the node, %d of the app", node, app)
			}
		})
	}
}

// TestEdgeWaitersKeyIsolation: with a flow key, only the requests that
// wait count: while one tenant's requests fill the app's waiting places,
// another tenant's request, whose key has a free slot, still runs.
func TestEdgeWaitersKeyIsolation(t *testing.T) {
	r := &doubleRuntime{maxConc: 1, reusable: true, gate: make(chan struct{})}
	waiting := throttle.NewWaiting(4) // 2 per app
	s := doubleSetup(t, r, 1, 4, func(o *Options, fn *model.Function) {
		o.Waiting = waiting
		fn.Flow = &model.Flow{Key: "header.X-Tenant", KeyConcurrency: 1}
	})
	release := sync.OnceFunc(func() { close(r.gate) })
	t.Cleanup(release) // before the scheduler's close, should the test fail first
	req := func(tenant string) *runtime.Request {
		return &runtime.Request{Path: "/", Header: http.Header{"X-Tenant": {tenant}}}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	call := func(tenant string) {
		wg.Go(func() {
			if _, err := s.InvokeEdge(context.Background(), "app", "f", req(tenant)); err != nil {
				errs <- err
			}
		})
	}
	call("a")
	checkFor(t, "tenant a runs", func() error {
		if n := r.inflight.Load(); n != 1 {
			return fmt.Errorf("%d in flight", n)
		}
		return nil
	})
	call("a")
	call("a")
	checkFor(t, "two of tenant a wait", func() error {
		if _, n := waiting.Count("app"); n != 2 {
			return fmt.Errorf("%d waiting", n)
		}
		return nil
	})
	if _, err := s.InvokeEdge(context.Background(), "app", "f", req("a")); !errors.Is(err, throttle.ErrTooManyWaiting) {
		t.Fatalf("a third waiter of tenant a: %v", err)
	}
	call("b")
	checkFor(t, "tenant b runs beside tenant a", func() error {
		if n := r.inflight.Load(); n != 2 {
			return fmt.Errorf("%d in flight", n)
		}
		return nil
	})
	release()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
