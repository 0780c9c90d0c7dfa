package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/store"
	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// These tests run the workflow "flow" with a flow control, played by
// gated: every activation runs one step, "work", whose body counts the
// steps running at once (per key and in all) and waits at a gate the test
// opens. Counted, not timed: each test waits until the engine reports the
// runs it expects queued, then checks who ran.

// gated is the played guest of the flow tests.
type gated struct {
	e *Engine

	mu      sync.Mutex
	gate    chan struct{} // closed: steps go on
	active  map[string]int
	maxKey  map[string]int
	total   int // steps running now
	maxAll  int
	entered []string // run ids, in the order their step began to run
}

func newGated() *gated {
	return &gated{gate: make(chan struct{}), active: map[string]int{}, maxKey: map[string]int{}}
}

func (g *gated) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.gate:
	default:
		close(g.gate)
	}
}

func (g *gated) running() (entered []string, total int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.entered), g.total
}

func (g *gated) Invoke(ctx context.Context, app, fn string, req *runtime.Request) (*runtime.Response, error) {
	var in struct {
		Tenant string
		Sleep  bool // after the step, sleep an hour (the run suspends)
	}
	_ = json.Unmarshal(req.Body, &in)
	run, inv := req.Header.Get(wire.HeaderRun), req.InvocationID
	ans, err := g.e.StepBegin(ctx, testApp, inv, 0, "work")
	if err != nil {
		return nil, err
	}
	if !ans.Replay {
		g.mu.Lock()
		g.active[in.Tenant]++
		g.total++
		g.maxKey[in.Tenant] = max(g.maxKey[in.Tenant], g.active[in.Tenant])
		g.maxAll = max(g.maxAll, g.total)
		g.entered = append(g.entered, run)
		gate := g.gate
		g.mu.Unlock()
		var werr error
		select {
		case <-gate:
		case <-ctx.Done():
			werr = ctx.Err()
		}
		g.mu.Lock()
		g.active[in.Tenant]--
		g.total--
		g.mu.Unlock()
		if werr != nil {
			return nil, werr // the node stops: the step is not recorded
		}
		if _, err := g.e.StepEnd(ctx, testApp, inv, 0, "work", []byte(`"`+run+`"`), false, -1); err != nil {
			return nil, err
		}
	}
	if in.Sleep {
		if err := g.e.Sleep(ctx, testApp, inv, 1, time.Now().Add(time.Hour)); err != nil {
			return nil, err
		}
	}
	return completed(`"done"`), nil
}

// flowRevision is testRevision with fl as the flow of "flow".
func flowRevision(id string, fl *model.Flow) *model.Revision {
	rev := testRevision()
	rev.ID = id
	rev.Functions[0].Flow = fl
	return rev
}

// flowEngine starts an engine on st playing g with rev provisioned.
func flowEngine(t *testing.T, st *store.Store, g *gated, rev *model.Revision) *Engine {
	t.Helper()
	e := New(st.Committer(), g, Options{Logger: slog.New(slog.DiscardHandler), ActivationBackoff: time.Millisecond})
	g.e = e
	t.Cleanup(func() { e.Close(context.Background()) })
	if err := e.Provision(t.Context(), rev); err != nil {
		t.Fatal(err)
	}
	return e
}

func startRun(t *testing.T, e *Engine, id, tenant string) {
	t.Helper()
	if _, created, err := e.Start(t.Context(), testApp, "flow", id, []byte(`{"tenant":"`+tenant+`"}`)); err != nil || !created {
		t.Fatalf("start %s: %v (created %v)", id, err, created)
	}
}

// key_concurrency 1 on input.tenant: two runs of a key never run steps
// at once, runs of two keys do; the runs over the limit are started
// (recorded, running) and queued, not refused, and run when a slot frees.
func TestFlowKeyConcurrencyPerRunInput(t *testing.T) {
	t.Parallel()
	g := newGated()
	e := flowEngine(t, openStore(t), g, flowRevision("r1", &model.Flow{Key: "input.tenant", KeyConcurrency: 1, Priority: 5}))
	for _, r := range [][2]string{{"a1", "a"}, {"a2", "a"}, {"b1", "b"}, {"b2", "b"}} {
		startRun(t, e, r[0], r[1])
	}
	pollUntil(t, "one run of each key running, the other two queued", func() bool {
		_, total := g.running()
		s := e.FlowStats(testApp, "flow")
		return total == 2 && s.Active == 2 && s.Queued == 2
	})
	entered, _ := g.running()
	if len(entered) != 2 || entered[0][0] == entered[1][0] {
		t.Fatalf("running %v: want one run of key a and one of key b", entered)
	}
	for _, id := range []string{"a1", "a2", "b1", "b2"} {
		rec, err := e.Get(t.Context(), testApp, id)
		if err != nil || rec.State != StateRunning || rec.Queued == slices.Contains(entered, id) {
			t.Fatalf("run %s: %+v, %v; want running, and queued unless its step runs (%v run)", id, rec, err, entered)
		}
	}
	g.open()
	for _, id := range []string{"a1", "a2", "b1", "b2"} {
		if rec := wait(t, e, id); rec.State != StateCompleted {
			t.Fatalf("run %s: %s %s", id, rec.State, rec.Error)
		}
	}
	// A run's slot is released when its activation returns, just after
	// its end is recorded (which Wait sees).
	pollUntil(t, "every slot released", func() bool { return e.FlowStats(testApp, "flow") == FlowStats{} })
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.maxKey["a"] != 1 || g.maxKey["b"] != 1 || g.maxAll != 2 || len(g.entered) != 4 {
		t.Fatalf("steps at once: key a %d, key b %d, in all %d, %d steps run; want 1, 1, 2, 4", g.maxKey["a"], g.maxKey["b"], g.maxAll, len(g.entered))
	}
}

// A run holds its slot while its code runs, not while it is suspended:
// with key_concurrency 1, a run sleeping for an hour does not hold back
// the next run of its key.
func TestFlowSuspendedRunHoldsNoSlot(t *testing.T) {
	t.Parallel()
	g := newGated()
	g.open()
	e := flowEngine(t, openStore(t), g, flowRevision("r1", &model.Flow{Key: "input.tenant", KeyConcurrency: 1, Priority: 5}))
	if _, _, err := e.Start(t.Context(), testApp, "flow", "sleeper", []byte(`{"tenant":"a","sleep":true}`)); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, "sleeper sleeping", func() bool {
		rec, err := e.Get(t.Context(), testApp, "sleeper")
		return err == nil && rec.State == StateSleeping
	})
	startRun(t, e, "next", "a")
	if rec := wait(t, e, "next"); rec.State != StateCompleted {
		t.Fatalf("next: %s %s", rec.State, rec.Error)
	}
	if rec, _ := e.Get(t.Context(), testApp, "sleeper"); rec.State != StateSleeping {
		t.Fatalf("sleeper: %s, want still sleeping", rec.State)
	}
}

// Queued starts survive a restart: the node stops while one run of the
// key runs its step and another waits; the next engine resumes both, one
// at a time, and each step is recorded once.
func TestFlowQueuedRunsSurviveRestart(t *testing.T) {
	t.Parallel()
	st := openStore(t)
	rev := flowRevision("r1", &model.Flow{Key: "input.tenant", KeyConcurrency: 1, Priority: 5})
	g := newGated()
	e := flowEngine(t, st, g, rev)
	startRun(t, e, "x1", "t")
	startRun(t, e, "x2", "t")
	pollUntil(t, "one run running, one queued", func() bool {
		_, total := g.running()
		return total == 1 && e.FlowStats(testApp, "flow").Queued == 1
	})
	first, _ := g.running()
	if err := e.Close(t.Context()); err != nil {
		t.Fatal(err)
	}

	g2 := newGated()
	e2 := flowEngine(t, st, g2, rev)
	pollUntil(t, "after the restart: one run running, one queued", func() bool {
		_, total := g2.running()
		return total == 1 && e2.FlowStats(testApp, "flow").Queued == 1
	})
	g2.open()
	for _, id := range []string{"x1", "x2"} {
		if rec := wait(t, e2, id); rec.State != StateCompleted {
			t.Fatalf("run %s: %s %s", id, rec.State, rec.Error)
		}
		ents, err := e2.Journal(t.Context(), testApp, id)
		if err != nil {
			t.Fatal(err)
		}
		steps := 0
		for _, ent := range ents {
			if ent.Type == EntryStep {
				steps++
			}
		}
		if steps != 1 {
			t.Fatalf("run %s has %d steps recorded, want 1", id, steps)
		}
	}
	g2.mu.Lock()
	defer g2.mu.Unlock()
	if g2.maxKey["t"] != 1 || len(g2.entered) != 2 {
		t.Fatalf("after the restart: %d steps of key t at once, %d run (%v); want 1 and 2 (before: %v)", g2.maxKey["t"], len(g2.entered), g2.entered, first)
	}
}

// rate counts run starts per key: the third start of a key within the
// window waits (recorded, queued), another key's does not; a deploy that
// changes the flow moves the waiting run to the new limits, where it
// starts.
func TestFlowRateDelaysStarts(t *testing.T) {
	t.Parallel()
	g := newGated()
	g.open()
	e := flowEngine(t, openStore(t), g, flowRevision("r1", &model.Flow{Key: "input.tenant", Rate: &model.Rate{Limit: 2, PeriodMS: time.Hour.Milliseconds()}, Priority: 5}))
	for _, r := range [][2]string{{"a1", "a"}, {"a2", "a"}} {
		startRun(t, e, r[0], r[1])
	}
	for _, id := range []string{"a1", "a2"} {
		if rec := wait(t, e, id); rec.State != StateCompleted {
			t.Fatalf("run %s: %s %s", id, rec.State, rec.Error)
		}
	}
	startRun(t, e, "a3", "a")
	startRun(t, e, "b1", "b")
	if rec := wait(t, e, "b1"); rec.State != StateCompleted {
		t.Fatalf("run b1: %s %s", rec.State, rec.Error)
	}
	pollUntil(t, "a3 queued by the rate", func() bool { return e.FlowStats(testApp, "flow").Queued == 1 })
	if entered, _ := g.running(); slices.Contains(entered, "a3") {
		t.Fatalf("a3 ran within the rate window of key a: %v", entered)
	}
	if rec, err := e.Get(t.Context(), testApp, "a3"); err != nil || rec.State != StateRunning {
		t.Fatalf("a3: %v %v, want recorded as running (queued)", rec, err)
	}
	if err := e.Provision(t.Context(), flowRevision("r2", &model.Flow{Key: "input.tenant", Rate: &model.Rate{Limit: 3, PeriodMS: time.Hour.Milliseconds()}, Priority: 5})); err != nil {
		t.Fatal(err)
	}
	if rec := wait(t, e, "a3"); rec.State != StateCompleted {
		t.Fatalf("a3 after the flow changed: %s %s", rec.State, rec.Error)
	}
}

// Runs waiting for a slot start in the order they arrived (all runs of a
// workflow have its priority): max_concurrency 1, a run holding the slot,
// four queued one after the other.
func TestFlowQueuedRunsStartInArrivalOrder(t *testing.T) {
	t.Parallel()
	g := newGated()
	e := flowEngine(t, openStore(t), g, flowRevision("r1", &model.Flow{MaxConcurrency: 1, Priority: 5}))
	startRun(t, e, "hold", "")
	pollUntil(t, "hold running", func() bool { _, n := g.running(); return n == 1 })
	want := []string{"hold"}
	for i, id := range []string{"q1", "q2", "q3", "q4"} {
		startRun(t, e, id, "")
		pollUntil(t, id+" queued", func() bool { return e.FlowStats(testApp, "flow").Queued == i+1 })
		want = append(want, id)
	}
	g.open()
	for _, id := range want {
		wait(t, e, id)
	}
	if entered, _ := g.running(); !slices.Equal(entered, want) {
		t.Fatalf("steps ran in the order %v, want %v", entered, want)
	}
	if g.maxAll != 1 {
		t.Fatalf("%d steps at once under max_concurrency 1", g.maxAll)
	}
}

// The flow key is a field of the run's input (a path into objects), a
// string as is and anything else as JSON; event.<attribute> is the
// attribute of a trigger's event, which is the input.
func TestFlowKeyOfInput(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ key, input, want string }{
		{"input.tenant", `{"tenant":"acme"}`, "acme"},
		{"input.customer.id", `{"customer":{"id":42}}`, "42"},
		{"input.customer.id", `{"customer":"x"}`, ""},
		{"input.tenant", `{"other":1}`, ""},
		{"input.tenant", `[1,2]`, ""},
		{"input.tenant", `{"tenant":null}`, ""},
		{"input.tags", `{"tags": ["a", "b"]}`, `["a","b"]`},
		{"event.subject", `{"id":"e1","subject":"orders/7","data":{}}`, "orders/7"},
	} {
		fc, err := newFlowCtl(model.Function{Name: "w", Flow: &model.Flow{Key: c.key, KeyConcurrency: 1}})
		if err != nil {
			t.Fatal(err)
		}
		if got := fc.key([]byte(c.input)); got != c.want {
			t.Errorf("key %s of %s = %q, want %q", c.key, c.input, got, c.want)
		}
	}
}

// A flow the engine cannot apply to runs is refused at deploy
// (Validate), naming the workflow and what to write instead.
func TestFlowRefusedForWorkflow(t *testing.T) {
	t.Parallel()
	e, _ := newEngine(t, openStore(t), steps([]string{"a"}, 0, &sync.Map{}), nil)
	for fl, want := range map[*model.Flow]string{
		{Key: "header.X-Tenant", KeyConcurrency: 1}: "use input.<field>",
		{DebounceMS: 2000}:                          "debounce does not apply to a workflow",
		{Key: "input..x", KeyConcurrency: 1}:        "empty field name",
	} {
		rev := flowRevision("bad", fl)
		rev.Functions[0].Name = "checkout"
		err := e.Validate(t.Context(), rev)
		if !errors.Is(err, model.ErrInvalid) || !strings.Contains(err.Error(), "workflow checkout: ") || !strings.Contains(err.Error(), want) {
			t.Errorf("flow %+v: %v, want model.ErrInvalid naming workflow checkout and %q", fl, err, want)
		}
	}
	// A revision stored before such flows were refused still provisions
	// (at start), its flow left out, and its runs run.
	if err := e.Provision(t.Context(), flowRevision("stored", &model.Flow{Key: "header.X-Tenant", KeyConcurrency: 1})); err != nil {
		t.Fatalf("provision a stored revision with a header key: %v", err)
	}
	if _, _, err := e.Start(t.Context(), testApp, "flow", "old-flow", nil); err != nil {
		t.Fatal(err)
	}
	if rec := wait(t, e, "old-flow"); rec.State != StateCompleted {
		t.Fatalf("run under a flow left out: %s %s", rec.State, rec.Error)
	}
}
