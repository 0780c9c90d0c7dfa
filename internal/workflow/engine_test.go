package workflow

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
	"github.com/nimbus-dev/nimbus/internal/store"
	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// These tests drive the engine on a real embedded JetStream with a guest
// played in Go: the invoker makes the host calls a workflow's SDK makes
// (StepBegin, StepEnd, Sleep) with the activation's invocation id. The
// server package's tests run the same engine with real wasm guests.

const testApp = "app"

// clock is a test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// guest plays a workflow: one activation of the run with invocation id
// inv; n counts the activations of that run, from 1.
type guest func(ctx context.Context, e *Engine, inv string, n int) (*runtime.Response, error)

// invoker runs g for every activation and counts activations per run.
type invoker struct {
	e  *Engine
	g  guest
	mu sync.Mutex
	n  map[string]int
}

func (i *invoker) Invoke(ctx context.Context, app, fn string, req *runtime.Request) (*runtime.Response, error) {
	run := req.Header.Get(wire.HeaderRun)
	i.mu.Lock()
	i.n[run]++
	n := i.n[run]
	i.mu.Unlock()
	return i.g(ctx, i.e, req.InvocationID, n)
}

func (i *invoker) count(run string) int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.n[run]
}

func completed(body string) *runtime.Response {
	return &runtime.Response{Status: http.StatusOK, Header: http.Header{wire.HeaderOutcome: {wire.OutcomeCompleted}}, Body: []byte(body)}
}

// testRevision has the workflows "flow" and "other".
func testRevision() *model.Revision {
	fn := model.Function{Name: "flow", Kind: model.KindWorkflow, Runtime: model.RuntimeWasm, Revision: "f1", TimeoutMS: 60_000,
		Concurrency: 1, MaxInstances: 8, MaxRequestBytes: 1 << 20, MaxResponseBytes: 1 << 20}
	other := fn
	other.Name, other.Revision = "other", "o1"
	return &model.Revision{ID: "r1", App: testApp, Functions: []model.Function{fn, other}}
}

func openStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(t.Context(), store.Options{DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// newEngine starts an engine on st playing g, with the app provisioned.
func newEngine(t *testing.T, st *store.Store, g guest, now func() time.Time) (*Engine, *invoker) {
	t.Helper()
	inv := &invoker{g: g, n: map[string]int{}}
	e := New(st.Committer(), inv, Options{Logger: slog.New(slog.DiscardHandler), Now: now, ActivationBackoff: time.Millisecond})
	inv.e = e
	t.Cleanup(func() { e.Close(context.Background()) })
	if err := e.Provision(t.Context(), testRevision()); err != nil {
		t.Fatal(err)
	}
	return e, inv
}

func wait(t *testing.T, e *Engine, id string) *Run {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	rec, err := e.Wait(ctx, testApp, id)
	if err != nil {
		t.Fatal(err)
	}
	if !rec.Done() {
		t.Fatalf("run %s is %s, not finished", id, rec.State)
	}
	return rec
}

// steps plays the steps names in order; the body of a step that runs
// (not replayed) is counted in execs and returns "name-n"; trapAfter
// makes activation 1 fail after that many steps. It answers the results
// as a JSON array.
func steps(names []string, trapAfter int, execs *sync.Map) guest {
	return func(ctx context.Context, e *Engine, inv string, n int) (*runtime.Response, error) {
		var out []string
		for pos, name := range names {
			ans, err := e.StepBegin(ctx, testApp, inv, pos, name)
			if err != nil {
				return nil, err
			}
			res := ans.Result
			if !ans.Replay {
				c, _ := execs.LoadOrStore(name, new(atomic.Int32))
				c.(*atomic.Int32).Add(1)
				res = fmt.Appendf(nil, `"%s-%d"`, name, n)
				if _, err := e.StepEnd(ctx, testApp, inv, pos, name, res, false, -1); err != nil {
					return nil, err
				}
			}
			out = append(out, string(res))
			if n == 1 && pos+1 == trapAfter {
				return nil, errors.New("trap after a step")
			}
		}
		return completed("[" + strings.Join(out, ",") + "]"), nil
	}
}

func execCount(m *sync.Map, name string) int32 {
	c, ok := m.Load(name)
	if !ok {
		return 0
	}
	return c.(*atomic.Int32).Load()
}

// A step completed before a failed activation is replayed from the
// journal, not run again; the timeline shows start, steps and end.
func TestReplayRunsACompletedStepOnce(t *testing.T) {
	t.Parallel()
	var execs sync.Map
	e, inv := newEngine(t, openStore(t), steps([]string{"a", "b"}, 1, &execs), nil)
	if _, _, err := e.Start(t.Context(), testApp, "flow", "run-1", []byte(`{"x":1}`)); err != nil {
		t.Fatal(err)
	}
	rec := wait(t, e, "run-1")
	if rec.State != StateCompleted || string(rec.Result) != `["a-1","b-2"]` {
		t.Fatalf("run: %s %s %s, want completed [\"a-1\",\"b-2\"] (step a from activation 1, replayed)", rec.State, rec.Result, rec.Error)
	}
	if a, b, n := execCount(&execs, "a"), execCount(&execs, "b"), inv.count("run-1"); a != 1 || b != 1 || n != 2 {
		t.Fatalf("step a ran %d times, b %d, in %d activations; want 1, 1, 2", a, b, n)
	}
	info, err := e.Get(t.Context(), testApp, "run-1")
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, ent := range info.Timeline {
		types = append(types, ent.Type+":"+ent.Name)
	}
	if got := strings.Join(types, " "); got != "started: step:a step:b completed:" {
		t.Fatalf("timeline %q", got)
	}
	if string(info.Timeline[0].Input) != `{"x":1}` || string(info.Timeline[3].Result) != `["a-1","b-2"]` {
		t.Fatalf("timeline start input %s, end result %s", info.Timeline[0].Input, info.Timeline[3].Result)
	}
}

// Code that reaches a recorded position with another step fails the run
// with a non-determinism error naming both steps and the position.
func TestReplayDetectsNonDeterminism(t *testing.T) {
	t.Parallel()
	var execs sync.Map
	first := steps([]string{"a", "b"}, 1, &execs)
	var got atomic.Value
	g := func(ctx context.Context, e *Engine, inv string, n int) (*runtime.Response, error) {
		if n == 1 {
			return first(ctx, e, inv, n)
		}
		_, err := e.StepBegin(ctx, testApp, inv, 0, "renamed") // the code changed
		got.Store(err)
		return nil, err
	}
	e, _ := newEngine(t, openStore(t), g, nil)
	if _, _, err := e.Start(t.Context(), testApp, "flow", "run-nd", nil); err != nil {
		t.Fatal(err)
	}
	rec := wait(t, e, "run-nd")
	err, _ := got.Load().(error)
	var nd *NonDeterminismError
	if !errors.As(err, &nd) || !errors.Is(err, ErrNonDeterminism) || nd.Pos != 0 || nd.Recorded != "a" || nd.Got != "renamed" {
		t.Fatalf("StepBegin answered %v, want a non-determinism error at position 0 (a, renamed)", err)
	}
	if rec.State != StateFailed || !strings.Contains(rec.Error, `position 0`) || !strings.Contains(rec.Error, `"a"`) || !strings.Contains(rec.Error, `"renamed"`) {
		t.Fatalf("run: %s %q, want failed naming position 0, \"a\" and \"renamed\"", rec.State, rec.Error)
	}
	if n := execCount(&execs, "a"); n != 1 {
		t.Fatalf("step a ran %d times, want 1", n)
	}
}

// fold keeps the first final entry of each position and the failed
// attempts by position.
func TestFold(t *testing.T) {
	t.Parallel()
	ents := []Entry{
		{Type: EntryStarted},
		{Type: EntryAttempt, Pos: 0, Name: "a", Attempt: 1},
		{Type: EntryStep, Pos: 0, Name: "a", Attempt: 2},
		{Type: EntryStep, Pos: 0, Name: "a-again"}, // a duplicate position is ignored
		{Type: EntrySleep, Pos: 1, Name: "sleep"},
		{Type: EntryStep, Pos: 3, Name: "gap"}, // not contiguous: ignored
		{Type: EntryCompleted},
	}
	st, att := fold(ents)
	if len(st) != 2 || st[0].Name != "a" || st[0].Attempt != 2 || st[1].Type != EntrySleep {
		t.Fatalf("steps %+v", st)
	}
	if len(att) != 1 || len(att[0]) != 1 || att[0][0].Attempt != 1 {
		t.Fatalf("attempts %+v", att)
	}
}

// Starting a run id twice makes one run, even concurrently; the id of a
// run of another workflow is refused.
func TestStartIsIdempotent(t *testing.T) {
	t.Parallel()
	e, inv := newEngine(t, openStore(t), func(context.Context, *Engine, string, int) (*runtime.Response, error) {
		return completed(`"done"`), nil
	}, nil)
	ctx := t.Context()
	first, created, err := e.Start(ctx, testApp, "flow", "same", []byte(`1`))
	if err != nil || !created {
		t.Fatalf("first start: created %v, %v", created, err)
	}
	wait(t, e, "same")
	again, created, err := e.Start(ctx, testApp, "flow", "same", []byte(`2`))
	if err != nil || created || !again.Created.Equal(first.Created) || string(again.Input) != `1` || again.State != StateCompleted {
		t.Fatalf("second start: created %v, %+v, %v; want the first run", created, again, err)
	}
	if _, _, err := e.Start(ctx, testApp, "other", "same", nil); !errors.Is(err, ErrRunConflict) {
		t.Fatalf("start of another workflow with a taken id: %v, want ErrRunConflict", err)
	}
	var made atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			_, created, err := e.Start(ctx, testApp, "flow", "racy", nil)
			if err != nil {
				t.Error(err)
			}
			if created {
				made.Add(1)
			}
		})
	}
	wg.Wait()
	wait(t, e, "racy")
	if n, acts := made.Load(), inv.count("racy")+inv.count("same"); n != 1 || acts != 2 {
		t.Fatalf("8 concurrent starts created %d runs and %d activations in all; want 1 and 2", n, acts)
	}
	for _, bad := range []string{"", "a b", "a.b", strings.Repeat("x", MaxRunIDLen+1)} {
		if bad == "" {
			continue // empty makes a random id
		}
		if _, _, err := e.Start(ctx, testApp, "flow", bad, nil); !errors.Is(err, ErrInvalid) {
			t.Fatalf("run id %q: %v, want ErrInvalid", bad, err)
		}
	}
}

// TestActiveRunsBound: with MaxActivePerApp 2 and two runs active (their
// activations held), a start from a client is refused (StartAllowed) and
// one from an event waits (StartWait) until a run ends; the counts come
// back to zero.
func TestActiveRunsBound(t *testing.T) {
	t.Parallel()
	st := openStore(t)
	gate := make(chan struct{})
	inv := &invoker{g: func(context.Context, *Engine, string, int) (*runtime.Response, error) {
		<-gate
		return completed(`"done"`), nil
	}, n: map[string]int{}}
	e := New(st.Committer(), inv, Options{Logger: slog.New(slog.DiscardHandler), MaxActivePerApp: 2})
	inv.e = e
	t.Cleanup(func() { e.Close(context.Background()) })
	if err := e.Provision(t.Context(), testRevision()); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, id := range []string{"r1", "r2"} {
		if err := e.StartAllowed(testApp); err != nil {
			t.Fatalf("start %s: %v", id, err)
		}
		if _, _, err := e.Start(ctx, testApp, "flow", id, nil); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.ActiveRuns() != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d runs active, want 2", e.ActiveRuns())
		}
		time.Sleep(time.Millisecond)
	}
	if err := e.StartAllowed(testApp); !errors.Is(err, ErrTooManyActive) || !strings.Contains(err.Error(), "--max-active-runs") {
		t.Fatalf("a third start: %v, want ErrTooManyActive naming the flag", err)
	}
	if err := e.StartAllowed("another-app"); err != nil {
		t.Fatalf("another app's start: %v", err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := e.StartWait(short, testApp); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("StartWait at the bound: %v, want it to wait until its context ends", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- e.StartWait(ctx, testApp) }()
	close(gate)
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	wait(t, e, "r1")
	wait(t, e, "r2")
	for e.ActiveRuns() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d runs active after they ended", e.ActiveRuns())
		}
		time.Sleep(time.Millisecond)
	}
	if err := e.StartAllowed(testApp); err != nil {
		t.Fatalf("after the runs ended: %v", err)
	}
}

// fnInvoker plays a guest per workflow function.
type fnInvoker struct {
	e      *Engine
	guests map[string]func() (*runtime.Response, error)
}

func (i *fnInvoker) Invoke(_ context.Context, _, fn string, _ *runtime.Request) (*runtime.Response, error) {
	return i.guests[fn]()
}

// TestDeferredWakes: with MaxActivePerApp 2, five runs woken at once (as
// timers firing together, or a restart with runs due, would) get two
// drivers; the other three wait as queued ids, woken in turn as runs end,
// and never more than two activations run at once. Runs queued for their
// flow control do not hold back the wakes of other runs: with three runs
// of a workflow limited to one at a time (two of them queued), a run of
// another workflow is driven at once.
// TestFlowWaitersHeld: runs that must wait for their workflow's flow
// control hold a goroutine each only up to the engine's bound; past it
// they are held back as run ids, and every one of them still runs, also
// when a deploy changes the flow while they are held.
func TestFlowWaitersHeld(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name        string
		bound, runs int
		terminate   []int // runs terminated while held (or running)
		redeploy    bool
	}{
		{"held", 3, 40, []int{20, 39}, false},
		{"redeploy", 3, 40, []int{20, 39}, true},
		// All but one end while held: each woken in turn finds itself
		// ended, and passes its turn on with nothing waiting to do it.
		{"all-ended", 2, 8, []int{0, 1, 2, 3, 4, 5, 6}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			testFlowWaitersHeld(t, c.bound, c.runs, c.terminate, c.redeploy)
		})
	}
}

func testFlowWaitersHeld(t *testing.T, bound, runs int, terminate []int, redeploy bool) {
	st := openStore(t)
	gate := make(chan struct{})
	var now, most atomic.Int32
	inv := &fnInvoker{guests: map[string]func() (*runtime.Response, error){
		"flow": func() (*runtime.Response, error) {
			if n := now.Add(1); n > most.Load() {
				most.Store(n)
			}
			defer now.Add(-1)
			<-gate
			return completed(`"done"`), nil
		},
	}}
	e := New(st.Committer(), inv, Options{Logger: slog.New(slog.DiscardHandler), MaxActivePerApp: bound})
	inv.e = e
	var open sync.Once
	release := func() { open.Do(func() { close(gate) }) }
	t.Cleanup(func() { release(); e.Close(context.Background()) })
	rev := testRevision()
	rev.Functions[0].Flow = &model.Flow{MaxConcurrency: 1}
	if err := e.Provision(t.Context(), rev); err != nil {
		t.Fatal(err)
	}
	for i := range runs {
		if _, _, err := e.Start(t.Context(), testApp, "flow", fmt.Sprintf("h%d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	// Engine-level starts are not refused (the server's StartAllowed is):
	// each is a wake, as a timer or a restart makes them.
	deadline := time.Now().Add(10 * time.Second)
	for {
		fs := e.FlowStats(testApp, "flow")
		if fs.Active == 1 && fs.Queued == bound && fs.Held == runs-1-bound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("want 1 running, %d queued, %d held: %+v, %d active runs", bound, runs-1-bound, fs, e.ActiveRuns())
		}
		time.Sleep(time.Millisecond)
	}
	if n := e.ActiveRuns(); n > 1+bound {
		t.Fatalf("%d runs active (each a goroutine), want at most %d", n, 1+bound)
	}
	if n := e.DeferredWakes(); n != runs-1-bound {
		t.Fatalf("DeferredWakes = %d, want the %d held", n, runs-1-bound)
	}
	// Held runs that end meanwhile leave their turn to the next.
	terminated := map[string]bool{}
	for _, i := range terminate {
		terminated[fmt.Sprintf("h%d", i)] = true
	}
	for id := range terminated {
		if _, err := e.Terminate(t.Context(), testApp, id, "test"); err != nil {
			t.Fatal(err)
		}
	}
	if redeploy {
		// A new limiter: the held runs are woken to go to it.
		rev2 := testRevision()
		rev2.ID = "r2"
		rev2.Functions[0].Revision = "f2"
		rev2.Functions[0].Flow = &model.Flow{MaxConcurrency: 2}
		if err := e.Provision(t.Context(), rev2); err != nil {
			t.Fatal(err)
		}
	}
	release()
	for i := range runs {
		id := fmt.Sprintf("h%d", i)
		want := StateCompleted
		if terminated[id] {
			want = StateTerminated
		}
		if r := wait(t, e, id); r.State != want {
			t.Fatalf("run %s: %s, want %s", id, r.State, want)
		}
	}
	if n := most.Load(); n != 1 && !redeploy {
		t.Fatalf("%d activations at once, want 1 (max_concurrency)", n)
	}
	if fs := e.FlowStats(testApp, "flow"); fs != (FlowStats{}) {
		t.Fatalf("after the runs: %+v", fs)
	}
}

func TestDeferredWakes(t *testing.T) {
	t.Parallel()
	st := openStore(t)
	gate := make(chan struct{})
	var now, most atomic.Int32
	gated := func() (*runtime.Response, error) {
		if n := now.Add(1); n > most.Load() {
			most.Store(n)
		}
		defer now.Add(-1)
		<-gate
		return completed(`"done"`), nil
	}
	otherRan := make(chan struct{}, 10)
	inv := &fnInvoker{guests: map[string]func() (*runtime.Response, error){
		"flow":  gated,
		"other": func() (*runtime.Response, error) { otherRan <- struct{}{}; return completed(`"other"`), nil },
	}}
	e := New(st.Committer(), inv, Options{Logger: slog.New(slog.DiscardHandler), MaxActivePerApp: 2})
	inv.e = e
	t.Cleanup(func() { e.Close(context.Background()) })
	rev := testRevision()
	if err := e.Provision(t.Context(), rev); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	ids := []string{"w1", "w2", "w3", "w4", "w5"}
	for _, id := range ids {
		if _, _, err := e.Start(ctx, testApp, "flow", id, nil); err != nil {
			t.Fatal(err)
		}
	}
	poll := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d active, %d deferred", what, e.ActiveRuns(), e.DeferredWakes())
			}
			time.Sleep(time.Millisecond)
		}
	}
	poll("two driven, three deferred", func() bool { return e.ActiveRuns() == 2 && e.DeferredWakes() == 3 && now.Load() == 2 })
	close(gate)
	for _, id := range ids {
		if r := wait(t, e, id); r.State != StateCompleted {
			t.Fatalf("run %s: %s", id, r.State)
		}
	}
	poll("nothing left", func() bool { return e.ActiveRuns() == 0 && e.DeferredWakes() == 0 })
	if n := most.Load(); n > 2 {
		t.Fatalf("%d activations at once, want at most 2", n)
	}

	// Flow-queued runs do not count against the bound.
	gate = make(chan struct{})
	limited := testRevision()
	limited.ID = "r2"
	limited.Functions[0].Flow = &model.Flow{MaxConcurrency: 1}
	limited.Functions[0].Revision = "f2"
	if err := e.Provision(t.Context(), limited); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"q1", "q2", "q3"} {
		if _, _, err := e.Start(ctx, testApp, "flow", id, nil); err != nil {
			t.Fatal(err)
		}
	}
	poll("one running, two queued for the flow", func() bool {
		return e.ActiveRuns() == 3 && e.FlowStats(testApp, "flow").Queued == 2
	})
	if _, _, err := e.Start(ctx, testApp, "other", "o1", nil); err != nil {
		t.Fatal(err)
	}
	select {
	case <-otherRan:
	case <-time.After(10 * time.Second):
		t.Fatalf("the other workflow's run was not driven: %d active, %d deferred", e.ActiveRuns(), e.DeferredWakes())
	}
	close(gate)
	for _, id := range []string{"q1", "q2", "q3", "o1"} {
		wait(t, e, id)
	}
}
