package throttle

import (
	"errors"
	"strings"
	"testing"
)

// TestWaiting: half of the node's bound per app, the node's bound across
// apps, each refusal naming its scope, and places given back by Leave.
func TestWaiting(t *testing.T) {
	w := NewWaiting(4)
	if node, app := w.Limits(); node != 4 || app != 2 {
		t.Fatalf("limits %d/%d", node, app)
	}
	for range 2 {
		if err := w.Enter("a"); err != nil {
			t.Fatal(err)
		}
	}
	err := w.Enter("a")
	var we *WaitError
	if !errors.As(err, &we) || we.Scope != ScopeApp || !errors.Is(err, ErrTooManyWaiting) || !strings.Contains(err.Error(), `app "a"`) {
		t.Fatalf("a third of app a: %v", err)
	}
	for range 2 {
		if err := w.Enter("b"); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Enter("c"); !errors.As(err, &we) || we.Scope != ScopeNode || !strings.Contains(err.Error(), "--max-waiting") {
		t.Fatalf("a fifth on the node: %v", err)
	}
	w.Leave("a")
	if err := w.Enter("c"); err != nil {
		t.Fatalf("after a leaves: %v", err)
	}
	if node, app := w.Count("a"); node != 4 || app != 1 {
		t.Fatalf("count %d/%d", node, app)
	}
	for _, app := range []string{"a", "b", "b", "c"} {
		w.Leave(app)
	}
	if node, _ := w.Count("a"); node != 0 || len(w.apps) != 0 {
		t.Fatalf("after all leave: %d waiting, apps %v", node, w.apps)
	}

	var none *Waiting // no bound
	if err := none.Enter("a"); err != nil {
		t.Fatal(err)
	}
	none.Leave("a")
	if w := NewWaiting(0); w.node != DefaultMaxWaiting {
		t.Fatalf("default %d", w.node)
	}
}
