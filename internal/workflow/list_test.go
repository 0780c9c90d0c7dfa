package workflow

import (
	"context"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/runtime"
)

// List with InFlight keeps the runs that are not finished, each with the
// revision it started on.
func TestListInFlight(t *testing.T) {
	t.Parallel()
	g := func(ctx context.Context, e *Engine, inv string, n int) (*runtime.Response, error) {
		a, err := e.activation(testApp, inv)
		if err != nil {
			return nil, err
		}
		if a.r.id == "done" {
			return completed(`1`), nil
		}
		if _, err := e.WaitSignal(ctx, testApp, inv, 0, "never", 0); err != nil {
			return nil, err
		}
		return completed(`2`), nil
	}
	e, _ := newEngine(t, openStore(t), g, nil)
	ctx := t.Context()
	for _, id := range []string{"done", "open"} {
		if _, _, err := e.Start(ctx, testApp, "flow", id, nil); err != nil {
			t.Fatal(err)
		}
	}
	wait(t, e, "done")
	runs, err := e.List(ctx, testApp, ListOptions{InFlight: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 1 || runs[0].ID != "open" || runs[0].Revision != "f1" {
		t.Fatalf("in flight: %+v, want run open alone, on revision f1", runs)
	}
	all, err := e.List(ctx, testApp, ListOptions{})
	if err != nil || len(all) != 2 {
		t.Fatalf("all runs: %d, %v; want 2", len(all), err)
	}
}
