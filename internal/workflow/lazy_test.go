package workflow

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/runtime"
)

// Deferral (pack.go): a lazy start and a step's end are committed with
// the run's next change, and are durable before anything depends on them.

// blockIn plays the steps "a", "b", "c", counting their executions in
// execs like steps; the step at position at (-1: none) tells in that it
// runs, then blocks until its activation is stopped.
func blockIn(at int, in chan<- string, execs *sync.Map) guest {
	names := []string{"a", "b", "c"}
	return func(ctx context.Context, e *Engine, inv string, n int) (*runtime.Response, error) {
		for pos, name := range names {
			ans, err := e.StepBegin(ctx, testApp, inv, pos, name)
			if err != nil {
				return nil, err
			}
			if ans.Replay {
				continue
			}
			c, _ := execs.LoadOrStore(name, new(atomic.Int32))
			c.(*atomic.Int32).Add(1)
			if pos == at {
				in <- inv
				<-ctx.Done()
				return nil, ctx.Err()
			}
			if _, err := e.StepEnd(ctx, testApp, inv, pos, name, fmt.Appendf(nil, `"%s"`, name), false, -1); err != nil {
				return nil, err
			}
		}
		return completed(`"done"`), nil
	}
}

// A lone 3-step run started lazily makes 3 log commits (start with the
// first step's end, the second step's end, the third's with the run's
// end); started eagerly, 4. What a restart shows is the same.
func TestLazyStartAndStepEndsRideWithTheNextCommit(t *testing.T) {
	t.Parallel()
	st := openStore(t)
	var execs sync.Map
	e, _ := engineOn(t, st, steps([]string{"a", "b", "c"}, 0, &execs), time.Hour)
	for _, c := range []struct {
		id    string
		lazy  bool
		packs uint64
	}{{"eager", false, 4}, {"lazy", true, 3}} {
		p0 := e.JournalStats().Packs
		start := e.Start
		if c.lazy {
			start = e.StartLazy
		}
		if _, created, err := start(t.Context(), testApp, "flow", c.id, []byte(`{"x":1}`)); err != nil || !created {
			t.Fatalf("start %s: created %v, %v", c.id, created, err)
		}
		if rec := wait(t, e, c.id); rec.State != StateCompleted {
			t.Fatalf("run %s: %s %s", c.id, rec.State, rec.Error)
		}
		if p := e.JournalStats().Packs - p0; p != c.packs {
			t.Errorf("run %s: %d log commits, want %d", c.id, p, c.packs)
		}
	}
	if err := e.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	e2, inv2 := engineOn(t, st, steps([]string{"a", "b", "c"}, 0, &execs), time.Hour)
	for _, id := range []string{"eager", "lazy"} {
		if got, want := timelineOf(t, e2, id), `completed started: step:a step:b step:c completed:`; got != want {
			t.Errorf("run %s after a restart: %q, want %q", id, got, want)
		}
		if n := inv2.count(id); n != 0 {
			t.Errorf("run %s activated %d times after the restart", id, n)
		}
	}
}

// A run started lazily and stopped before its first commit (the node
// stops as in a crash: nothing more is committed) does not exist after a
// restart; started again under the same id, it runs from the start. A
// run started eagerly, stopped at the same point, exists and resumes.
func TestLazyStartLostBeforeItsFirstCommit(t *testing.T) {
	t.Parallel()
	st := openStore(t)
	var execs sync.Map
	in := make(chan string, 2)
	e1, _ := engineOn(t, st, blockIn(0, in, &execs), time.Hour)
	if _, _, err := e1.StartLazy(t.Context(), testApp, "flow", "lazy", nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e1.Start(t.Context(), testApp, "flow", "eager", nil); err != nil {
		t.Fatal(err)
	}
	<-in
	<-in // both run their first step
	if err := e1.Close(t.Context()); err != nil {
		t.Fatal(err)
	}

	e2, _ := engineOn(t, st, blockIn(-1, nil, &execs), time.Hour)
	if _, err := e2.Get(t.Context(), testApp, "lazy"); !errors.Is(err, ErrRunNotFound) {
		t.Fatalf("the lazy run after the restart: %v, want ErrRunNotFound", err)
	}
	if rec := wait(t, e2, "eager"); rec.State != StateCompleted {
		t.Fatalf("the eager run after the restart: %s %s", rec.State, rec.Error)
	}
	runs, err := e2.List(t.Context(), testApp, ListOptions{})
	if err != nil || len(runs) != 1 || runs[0].ID != "eager" {
		t.Fatalf("List after the restart: %+v, %v; want the eager run alone", runs, err)
	}
	_, created, err := e2.StartLazy(t.Context(), testApp, "flow", "lazy", nil)
	if err != nil || !created {
		t.Fatalf("the lazy run started again: created %v, %v; want a new run", created, err)
	}
	if rec := wait(t, e2, "lazy"); rec.State != StateCompleted {
		t.Fatalf("the lazy run started again: %s %s", rec.State, rec.Error)
	}
	// Step a ran in both runs before the stop, and in both after it.
	if n := execCount(&execs, "a"); n != 4 {
		t.Fatalf("step a ran %d times, want 4", n)
	}
}

// A lazy start is durable once anything names the run: Durable (what a
// 202 answer waits for), Get, a second start of its id.
func TestLazyStartDurableOnceNamed(t *testing.T) {
	t.Parallel()
	st := openStore(t)
	var execs sync.Map
	in := make(chan string, 3)
	e1, _ := engineOn(t, st, blockIn(0, in, &execs), time.Hour)
	ids := []string{"durable", "shown", "again"}
	for _, id := range ids {
		if _, _, err := e1.StartLazy(t.Context(), testApp, "flow", id, nil); err != nil {
			t.Fatal(err)
		}
	}
	for range ids {
		<-in
	}
	if err := e1.Durable(t.Context(), testApp, "durable"); err != nil {
		t.Fatal(err)
	}
	if _, err := e1.Get(t.Context(), testApp, "shown"); err != nil {
		t.Fatal(err)
	}
	if _, created, err := e1.StartLazy(t.Context(), testApp, "flow", "again", nil); err != nil || created {
		t.Fatalf("second start of a lazy run: created %v, %v; want the run", created, err)
	}
	if err := e1.Close(t.Context()); err != nil {
		t.Fatal(err)
	}

	e2, _ := engineOn(t, st, blockIn(-1, nil, &execs), time.Hour)
	for _, id := range ids {
		if rec := wait(t, e2, id); rec.State != StateCompleted {
			t.Errorf("run %s after the restart: %s %s", id, rec.State, rec.Error)
		}
	}
}

// A step's end kept back is durable before the next step runs: a node
// stopped in step b runs neither a nor the start again.
func TestStepEndDurableBeforeTheNextStep(t *testing.T) {
	t.Parallel()
	st := openStore(t)
	var execs sync.Map
	in := make(chan string, 1)
	e1, _ := engineOn(t, st, blockIn(1, in, &execs), time.Hour)
	if _, _, err := e1.StartLazy(t.Context(), testApp, "flow", "run-1", nil); err != nil {
		t.Fatal(err)
	}
	<-in
	if err := e1.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	e2, _ := engineOn(t, st, blockIn(-1, nil, &execs), time.Hour)
	if rec := wait(t, e2, "run-1"); rec.State != StateCompleted {
		t.Fatalf("run after the restart: %s %s", rec.State, rec.Error)
	}
	if a, b := execCount(&execs, "a"), execCount(&execs, "b"); a != 1 || b != 2 {
		t.Fatalf("step a ran %d times, b %d; want 1 (its end was durable) and 2 (cut by the stop)", a, b)
	}
}

// Concurrent lazy starts of one id make one run.
func TestLazyStartIsIdempotent(t *testing.T) {
	t.Parallel()
	e, inv := engineOn(t, openStore(t), steps([]string{"a"}, 0, &sync.Map{}), time.Hour)
	var made atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			_, created, err := e.StartLazy(t.Context(), testApp, "flow", "racy", nil)
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
	if n, acts := made.Load(), inv.count("racy"); n != 1 || acts != 1 {
		t.Fatalf("8 concurrent lazy starts created %d runs and %d activations; want 1 and 1", n, acts)
	}
}

// The journal's deferral, directly: a deferred start rides in the pack of
// the run's next change (one commit), its condition met by the start; a
// deferred change too large to share a message with the next one is
// committed alone first; a control change (condVersion) flushes it.
func TestDeferredChangeMerges(t *testing.T) {
	t.Parallel()
	e, _ := engineOn(t, openStore(t), steps(nil, 0, &sync.Map{}), time.Hour)
	// No workflow is woken: the journal is used directly.
	j, ctx := e.j, t.Context()
	packs := func() uint64 { return e.JournalStats().Packs }
	big := []byte(`"` + strings.Repeat("x", e.j.c.MaxWriteBytes()*6/10) + `"`)

	for _, c := range []struct {
		id    string
		input []byte
		packs uint64
	}{{"small", []byte(`1`), 1}, {"big", big, 2}} {
		p0 := packs()
		rec := &Run{ID: c.id, App: testApp, Workflow: "flow", State: StateRunning, Input: c.input}
		if ok, err := j.create(ctx, rec, false, true); err != nil || !ok {
			t.Fatalf("%s: lazy create: %v %v", c.id, ok, err)
		}
		if p := packs() - p0; p != 0 {
			t.Fatalf("%s: a lazy create made %d commits", c.id, p)
		}
		end := *rec
		end.State, end.Result = StateCompleted, []byte(`2`)
		if err := j.commit(ctx, testApp, c.id, &Entry{Type: EntryStep, Name: "a", Result: []byte(`1`)}, &end); err != nil {
			t.Fatalf("%s: the end after a lazy start: %v", c.id, err)
		}
		if p := packs() - p0; p != c.packs {
			t.Errorf("%s: %d commits, want %d", c.id, p, c.packs)
		}
		got, err := j.record(ctx, testApp, c.id)
		if err != nil || got.State != StateCompleted {
			t.Fatalf("%s: record %v, %v", c.id, got, err)
		}
	}

	rec := &Run{ID: "ctl", App: testApp, Workflow: "flow", State: StateRunning}
	if ok, err := j.create(ctx, rec, false, true); err != nil || !ok {
		t.Fatalf("lazy create: %v %v", ok, err)
	}
	got, ver, err := j.recordAt(ctx, testApp, "ctl") // a control reads it: flushed
	if err != nil || got.State != StateRunning {
		t.Fatalf("recordAt of a lazy start: %v %v", got, err)
	}
	got.State = StatePaused
	if ok, err := j.commitIf(ctx, testApp, "ctl", nil, got, ver); err != nil || !ok {
		t.Fatalf("commitIf after a lazy start: %v %v", ok, err)
	}
}
