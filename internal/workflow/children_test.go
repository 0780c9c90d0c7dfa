package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// unprovisioned is an engine playing g on a new store, not provisioned:
// a test seeds runs (SeedRun) as a node that died left them, then
// provisions, as the next start does.
func unprovisioned(t *testing.T, g guest) *Engine {
	t.Helper()
	inv := &invoker{g: g, n: map[string]int{}}
	e := New(openStore(t).Committer(), inv, Options{Logger: slog.New(slog.DiscardHandler), ActivationBackoff: time.Millisecond})
	inv.e = e
	t.Cleanup(func() { e.Close(context.Background()) })
	return e
}

// seedRecord is a run's record of testRevision's workflow wf, at now.
func seedRecord(now time.Time, id, wf, state, parent string) *Run {
	rev := "f1"
	if wf == "other" {
		rev = "o1"
	}
	return &Run{ID: id, App: testApp, Workflow: wf, Revision: rev, State: state, Input: []byte("null"), Created: now, Updated: now, Parent: parent}
}

func cancelledResp() *runtime.Response {
	return &runtime.Response{Status: http.StatusOK, Header: http.Header{wire.HeaderOutcome: {wire.OutcomeCancelled}}, Body: []byte("cancelled")}
}

// TestParentClosePropagationRedoneAfterACrash: a node died after a
// parent's cancel was committed and before its children were asked
// (parent p: children p-0 waiting, p-1 cancelling already, p-2
// detached), and after a parent's termination was committed and before
// its child's (t, with t-0). The next start redoes both: p-0 ends
// cancelled, p-1's second cancel is a no-op (it ends cancelled, the
// parent is not stuck on an error), p-2 runs on, t-0 ends terminated and
// t's record no longer says its children are pending. u was terminated
// while the step that started its child u-1 still ran, so its journal
// does not name u-1 (its record says children may be pending, as
// Terminate writes it for a running run): u-1 ends terminated, and u's
// detached u-0 runs on.
func TestParentClosePropagationRedoneAfterACrash(t *testing.T) {
	t.Parallel()
	g := func(ctx context.Context, e *Engine, inv string, n int) (*runtime.Response, error) {
		a, err := e.activation(testApp, inv)
		if err != nil {
			return nil, err
		}
		pos := 0
		if a.r.id == "p" {
			for i, name := range []string{"nimbus.child:other", "nimbus.child:other", "nimbus.detached:other"} {
				if _, err := e.StepBegin(ctx, testApp, inv, i, name); err != nil {
					return nil, err
				}
			}
			pos = 3
		}
		_, err = e.WaitSignal(ctx, testApp, inv, pos, "go", 0)
		if errors.Is(err, ErrCancelled) {
			return cancelledResp(), nil
		}
		if err != nil {
			return nil, err
		}
		return completed(`"done"`), nil
	}
	e := unprovisioned(t, g)
	now := time.Now().UTC()
	run := func(id, wf, state, parent string) *Run { return seedRecord(now, id, wf, state, parent) }
	child := func(pos int, name, id string) Entry {
		return Entry{Type: EntryStep, Time: now, Pos: pos, Name: name, Attempt: 1, Result: []byte(`"` + id + `"`)}
	}
	p := run("p", "flow", StateCancelling, "")
	t1 := run("t", "flow", StateTerminated, "")
	t1.Error, t1.ChildrenPending = "terminated", true
	p2 := run("p-2", "other", StateWaiting, "p")
	p2.Detached = true
	u := run("u", "flow", StateTerminated, "")
	u.Error, u.ChildrenPending = "terminated", true
	u0 := run("u-0", "other", StateWaiting, "u")
	u0.Detached = true
	seeds := []struct {
		rec  *Run
		ents []Entry
	}{
		{p, []Entry{child(0, "nimbus.child:other", "p-0"), child(1, "nimbus.child:other", "p-1"), child(2, "nimbus.detached:other", "p-2"),
			{Type: EntryCancel, Time: now, Error: "test"}}},
		{run("p-0", "other", StateWaiting, "p"), nil},
		{run("p-1", "other", StateCancelling, "p"), []Entry{{Type: EntryCancel, Time: now, Error: "earlier"}}},
		{p2, nil},
		{t1, []Entry{child(0, "nimbus.child:other", "t-0"), {Type: EntryTerminated, Time: now}}},
		{run("t-0", "other", StateWaiting, "t"), nil},
		// u was terminated while the step at 1 that started u-1 ran
		// (the one at 0 started u-0, detached): its journal does not name u-1.
		{u, []Entry{child(0, "nimbus.detached:other", "u-0"), {Type: EntryTerminated, Time: now}}},
		{u0, nil},
		{run("u-1", "other", StateWaiting, "u"), nil},
	}
	for _, s := range seeds {
		if err := e.SeedRun(t.Context(), s.rec, s.ents); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Provision(t.Context(), testRevision()); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]string{"p": StateCancelled, "p-0": StateCancelled, "p-1": StateCancelled, "t-0": StateTerminated, "u-1": StateTerminated} {
		if rec := wait(t, e, id); rec.State != want {
			t.Errorf("run %s: %s %q, want %s", id, rec.State, rec.Error, want)
		}
	}
	rec, err := e.Get(t.Context(), testApp, "p-2")
	if err != nil || rec.State != StateWaiting {
		t.Fatalf("detached child p-2: %+v %v, want it waiting still", rec, err)
	}
	if _, err := e.Signal(t.Context(), testApp, "p-2", "go", nil); err != nil {
		t.Fatal(err)
	}
	if rec := wait(t, e, "p-2"); rec.State != StateCompleted {
		t.Errorf("detached child p-2: %s %q, want completed", rec.State, rec.Error)
	}
	if rec, err := e.Get(t.Context(), testApp, "u-0"); err != nil || rec.State != StateWaiting {
		t.Errorf("detached child u-0 of a terminated parent: %+v %v, want it waiting still", rec, err)
	}
	if rec, err := e.Get(t.Context(), testApp, "t"); err != nil || rec.ChildrenPending || rec.State != StateTerminated {
		t.Errorf("terminated parent t: %+v %v, want its children no longer pending", rec, err)
	}
}

// TestTerminateReachesAChildOfARunningStep: a parent is terminated while
// the step that started its child is still running (its journal does not
// name the child yet): the child is terminated with it, and a child
// started after the termination (the step's start raced with it) is too.
func TestTerminateReachesAChildOfARunningStep(t *testing.T) {
	t.Parallel()
	started := make(chan string, 1)
	release := make(chan struct{})
	g := func(ctx context.Context, e *Engine, inv string, n int) (*runtime.Response, error) {
		a, err := e.activation(testApp, inv)
		if err != nil {
			return nil, err
		}
		if strings.HasPrefix(a.r.id, "par-") {
			if _, err := e.WaitSignal(ctx, testApp, inv, 0, "go", 0); err != nil {
				return nil, err
			}
			return completed(`"child done"`), nil
		}
		if n > 1 {
			return nil, errors.New("the terminated parent was activated again")
		}
		if _, err := e.StepBegin(ctx, testApp, inv, 0, "nimbus.child:other"); err != nil {
			return nil, err
		}
		id, err := e.StartChild(ctx, testApp, inv, "other", nil)
		if err != nil {
			return nil, err
		}
		started <- id
		<-release
		_, err = e.StepEnd(ctx, testApp, inv, 0, "nimbus.child:other", []byte(`"x"`), false, -1)
		return nil, err
	}
	e, _ := newEngine(t, openStore(t), g, nil)
	if _, _, err := e.Start(t.Context(), testApp, "flow", "par", nil); err != nil {
		t.Fatal(err)
	}
	var child string
	select {
	case child = <-started:
	case <-time.After(20 * time.Second):
		t.Fatal("the parent's step did not start its child")
	}
	if _, err := e.Terminate(t.Context(), testApp, "par", "test"); err != nil {
		t.Fatal(err)
	}
	close(release)
	if rec := wait(t, e, child); rec.State != StateTerminated || rec.ParentPending {
		t.Fatalf("child %s of the terminated parent: %s %q (parent_pending %v), want terminated, its parent told", child, rec.State, rec.Error, rec.ParentPending)
	}
	if rec := wait(t, e, "par"); rec.State != StateTerminated {
		t.Fatalf("parent: %s, want terminated", rec.State)
	}

	// A child whose start commits after its parent's termination (the
	// step was past its checks): StartChild terminates it.
	st := openStore(t)
	var late atomic.Value
	g2 := func(ctx context.Context, e *Engine, inv string, n int) (*runtime.Response, error) {
		a, err := e.activation(testApp, inv)
		if err != nil {
			return nil, err
		}
		if strings.HasPrefix(a.r.id, "par2-") {
			_, err := e.WaitSignal(ctx, testApp, inv, 0, "go", 0)
			return nil, err
		}
		if _, err := e.StepBegin(ctx, testApp, inv, 0, "nimbus.child:other"); err != nil {
			return nil, err
		}
		// Terminated between the step's checks and the child's start.
		if _, err := e.Terminate(ctx, testApp, a.r.id, "test"); err != nil {
			return nil, err
		}
		id, err := e.startChild(ctx, testApp, a, 0, "other", nil)
		late.Store(id)
		return nil, err
	}
	e2, _ := newEngine(t, st, g2, nil)
	if _, _, err := e2.Start(t.Context(), testApp, "flow", "par2", nil); err != nil {
		t.Fatal(err)
	}
	wait(t, e2, "par2")
	deadline := time.Now().Add(20 * time.Second)
	for late.Load() == nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	id, _ := late.Load().(string)
	if id == "" {
		t.Fatal("the late child was not started")
	}
	if rec := wait(t, e2, id); rec.State != StateTerminated {
		t.Fatalf("late child %s: %s %q, want terminated", id, rec.State, rec.Error)
	}
}

// TestChildTerminationToldAfterACrash: a node died after a child's
// termination was committed and before its parent was told (w-0: its
// record says parent_pending, its parent w waits for it), and after the
// parent was told but before the child's record was cleared (x-0, whose
// end is in x's journal already; x was paused since). The next start
// tells w once (w ends with the child's outcome) and does not tell x
// twice (x, resumed, ends with it too); both children's records no
// longer say parent_pending.
func TestChildTerminationToldAfterACrash(t *testing.T) {
	t.Parallel()
	g := func(ctx context.Context, e *Engine, inv string, n int) (*runtime.Response, error) {
		a, err := e.activation(testApp, inv)
		if err != nil {
			return nil, err
		}
		child := a.r.id + "-0"
		if _, err := e.StepBegin(ctx, testApp, inv, 0, "nimbus.child:other"); err != nil {
			return nil, err
		}
		w, err := e.WaitSignal(ctx, testApp, inv, 1, ChildSignal(child), 0)
		if err != nil {
			return nil, err
		}
		return completed(string(w.Payload)), nil
	}
	e := unprovisioned(t, g)
	now := time.Now().UTC()
	run := func(id, wf, state, parent string) *Run { return seedRecord(now, id, wf, state, parent) }
	parentEnts := func(child string, told bool) []Entry {
		ents := []Entry{
			{Type: EntryStep, Time: now, Pos: 0, Name: "nimbus.child:other", Attempt: 1, Result: []byte(`"` + child + `"`)},
			{Type: EntryWaiting, Time: now, Pos: 1, Name: ChildSignal(child)},
		}
		if told {
			out, _ := json.Marshal(ChildOutcome{RunID: child, State: StateTerminated, Error: "terminated: test"})
			ents = append(ents, Entry{Type: EntrySignal, Time: now, Name: ChildSignal(child), Result: out})
		}
		return ents
	}
	terminated := func(id, parent string) *Run {
		r := run(id, "other", StateTerminated, parent)
		r.Error, r.ParentPending = "terminated: test", true
		return r
	}
	w := run("w", "flow", StateWaiting, "")
	// x was told, then paused (so that nothing activates it before the
	// start's retelling, which must see the signal and not send another).
	x := run("x", "flow", StatePaused, "")
	for _, s := range []struct {
		rec  *Run
		ents []Entry
	}{
		{w, parentEnts("w-0", false)},
		{terminated("w-0", "w"), []Entry{{Type: EntryTerminated, Time: now, Error: "test"}}},
		{x, append(parentEnts("x-0", true), Entry{Type: EntryPause, Time: now, Error: "test"})},
		{terminated("x-0", "x"), []Entry{{Type: EntryTerminated, Time: now, Error: "test"}}},
	} {
		if err := e.SeedRun(t.Context(), s.rec, s.ents); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Provision(t.Context(), testRevision()); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Resume(t.Context(), testApp, "x"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"w", "x"} {
		rec := wait(t, e, id)
		var out ChildOutcome
		if err := json.Unmarshal(rec.Result, &out); err != nil || rec.State != StateCompleted || out.RunID != id+"-0" || out.State != StateTerminated {
			t.Errorf("parent %s: %s %s %q, want completed with its terminated child's outcome", id, rec.State, rec.Result, rec.Error)
		}
		ents, err := e.j.entries(t.Context(), testApp, id)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, en := range ents {
			if en.Type == EntrySignal && en.Name == ChildSignal(id+"-0") {
				n++
			}
		}
		if n != 1 {
			t.Errorf("parent %s: told %d times of its child's end, want once", id, n)
		}
		if c, err := e.Get(t.Context(), testApp, id+"-0"); err != nil || c.ParentPending {
			t.Errorf("child %s-0: %+v %v, want parent_pending cleared", id, c, err)
		}
	}
}
