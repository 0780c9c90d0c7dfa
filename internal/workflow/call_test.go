package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/runtime"
)

// A child's run id is derived from its parent's and the position of the
// step that starts it, and always names a run.
func TestChildRunID(t *testing.T) {
	t.Parallel()
	if got := ChildRunID("order-1", 3); got != "order-1-3" {
		t.Fatalf("ChildRunID = %q", got)
	}
	long := strings.Repeat("x", MaxRunIDLen)
	a, b := ChildRunID(long, 1), ChildRunID(long, 2)
	if a == b || CheckRunID(a) != nil || CheckRunID(b) != nil {
		t.Fatalf("long parent: %q %q", a, b)
	}
}

// Starting a child twice from the same step (a replay after a crash
// between the start and the step's record) answers the same child and
// starts one run; the child's end reaches the parent's wait as a signal,
// with the child's result; a child start outside a step is refused.
func TestStartChildReattaches(t *testing.T) {
	t.Parallel()
	var childActs atomic.Int32
	var problems atomic.Value
	g := func(ctx context.Context, e *Engine, inv string, n int) (*runtime.Response, error) {
		if strings.HasPrefix(inv, "wf-par-0-") { // the child
			childActs.Add(1)
			return completed(`"from child"`), nil
		}
		if _, err := e.StartChild(ctx, testApp, inv, "other", nil); !errors.Is(err, ErrBadStep) {
			problems.Store("start outside a step: " + errString(err))
		}
		ans, err := e.StepBegin(ctx, testApp, inv, 0, "nimbus.child:other")
		if err != nil {
			return nil, err
		}
		id := string(ans.Result)
		if !ans.Replay {
			id1, err := e.StartChild(ctx, testApp, inv, "other", []byte(`{"x":1}`))
			if err != nil {
				return nil, err
			}
			id2, err := e.StartChild(ctx, testApp, inv, "other", []byte(`{"x":1}`))
			if err != nil || id2 != id1 {
				problems.Store("second start: " + id2 + " " + errString(err))
			}
			b, _ := json.Marshal(id1)
			if _, err := e.StepEnd(ctx, testApp, inv, 0, "nimbus.child:other", b, false, -1); err != nil {
				return nil, err
			}
			id = string(b)
		}
		var child string
		json.Unmarshal([]byte(id), &child)
		w, err := e.WaitSignal(ctx, testApp, inv, 1, ChildSignal(child), 0)
		if err != nil {
			return nil, err
		}
		return completed(string(w.Payload)), nil
	}
	e, _ := newEngine(t, openStore(t), g, nil)
	if _, _, err := e.Start(t.Context(), testApp, "flow", "par", nil); err != nil {
		t.Fatal(err)
	}
	rec := wait(t, e, "par")
	if p := problems.Load(); p != nil {
		t.Fatal(p)
	}
	var out ChildOutcome
	if err := json.Unmarshal(rec.Result, &out); err != nil || rec.State != StateCompleted || out.RunID != "par-0" ||
		out.State != StateCompleted || string(out.Result) != `"from child"` {
		t.Fatalf("parent: %s %s %q, want completed with the child's outcome", rec.State, rec.Result, rec.Error)
	}
	child, err := e.Get(t.Context(), testApp, "par-0")
	if err != nil || child.Parent != "par" || string(child.Input) != `{"x":1}` || childActs.Load() != 1 {
		t.Fatalf("child: %+v %v, %d activations; want one run with parent par", child, err, childActs.Load())
	}
	if _, err := e.Signal(t.Context(), testApp, "par", ChildSignal("par-0"), nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a child-end signal sent from outside: %v, want ErrInvalid", err)
	}
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}
