package workflow

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// retryPoint goes on from the last failed step that is not a
// compensation, or from the end of the journal, and refuses a run whose
// compensations left an entry after that point.
func TestRetryPoint(t *testing.T) {
	t.Parallel()
	ok := func(pos int, name string) Entry { return Entry{Type: EntryStep, Pos: pos, Name: name} }
	bad := func(pos int, name string) Entry {
		return Entry{Type: EntryStep, Pos: pos, Name: name, Failed: true, Error: "x"}
	}
	for _, c := range []struct {
		name    string
		ents    []Entry
		pos     int
		step    string
		refused string
	}{
		{"failed step", []Entry{ok(0, "a"), bad(1, "b")}, 1, "b", ""},
		{"last failed step", []Entry{bad(0, "a"), ok(1, "fallback"), bad(2, "c")}, 2, "c", ""},
		{"no failed step", []Entry{ok(0, "a"), ok(1, "b")}, 2, "", ""},
		{"compensated", []Entry{ok(0, "a"), bad(1, "b"), ok(2, CompensationPrefix+"undo-a")}, 0, "", "undo-a"},
		{"compensation attempted", []Entry{ok(0, "a"), bad(1, "b"), {Type: EntryAttempt, Pos: 2, Name: CompensationPrefix + "undo-a"}}, 0, "", "undo-a"},
		{"retried before", []Entry{ok(0, "a"), bad(1, "b"), {Type: EntryRetry, Pos: 1}, ok(1, "b"), bad(2, "c")}, 2, "c", ""},
	} {
		pos, step, err := retryPoint("r", c.ents)
		if c.refused != "" {
			if !errors.Is(err, ErrNotRetryable) || !strings.Contains(err.Error(), c.refused) {
				t.Errorf("%s: %v, want ErrNotRetryable naming %s", c.name, err, c.refused)
			}
			continue
		}
		if err != nil || pos != c.pos || step != c.step {
			t.Errorf("%s: %d %q %v, want %d %q", c.name, pos, step, err, c.pos, c.step)
		}
	}
}

// fold forgets what a retry discards: the outcomes and attempts from its
// position on, and takes what came after it.
func TestFoldRetry(t *testing.T) {
	t.Parallel()
	steps, atts := fold([]Entry{
		{Type: EntryStep, Pos: 0, Name: "a"},
		{Type: EntryAttempt, Pos: 1, Name: "b", Attempt: 1},
		{Type: EntryStep, Pos: 1, Name: "b", Failed: true},
		{Type: EntryRetry, Pos: 1, Name: "b"},
		{Type: EntryStep, Pos: 1, Name: "b", Result: []byte(`2`)},
	})
	if len(steps) != 2 || steps[1].Failed || string(steps[1].Result) != `2` || len(atts[1]) != 0 {
		t.Fatalf("steps %+v attempts %+v", steps, atts)
	}
}

func failed(msg string) *runtime.Response {
	return &runtime.Response{Status: http.StatusOK, Header: http.Header{wire.HeaderOutcome: {wire.OutcomeFailed}}, Body: []byte(msg)}
}

// A failed run retried goes on from its failed step: the step before it
// is replayed, the failed one runs again (attempt 1 again) and the run
// completes. Here step b fails, the code goes on to wait for a signal
// and then fails: the retry discards the wait after b, and the signal it
// took goes to the wait that replaces it.
func TestRetryGoesOnFromFailedStep(t *testing.T) {
	t.Parallel()
	var execs sync.Map
	var fixed atomic.Bool
	g := func(ctx context.Context, e *Engine, inv string, n int) (*runtime.Response, error) {
		var out []string
		bFailed := false
		for pos, name := range []string{"a", "b"} {
			ans, err := e.StepBegin(ctx, testApp, inv, pos, name)
			if err != nil {
				return nil, err
			}
			if ans.Replay {
				bFailed = bFailed || ans.Failed
				out = append(out, string(ans.Result))
				continue
			}
			c, _ := execs.LoadOrStore(name, new(atomic.Int32))
			c.(*atomic.Int32).Add(1)
			res, fail := []byte(`"`+name+`"`), name == "b" && !fixed.Load()
			if fail {
				res, bFailed = []byte("broken"), true
			}
			if _, err := e.StepEnd(ctx, testApp, inv, pos, name, res, fail, -1); err != nil {
				return nil, err
			}
			out = append(out, string(res))
		}
		ans, err := e.WaitSignal(ctx, testApp, inv, 2, "go", 0)
		if err != nil {
			return nil, err
		}
		if bFailed {
			return failed("step b: broken"), nil
		}
		return completed("[" + strings.Join(out, ",") + "," + string(ans.Payload) + "]"), nil
	}
	e, _ := newEngine(t, openStore(t), g, nil)
	ctx := t.Context()
	if _, _, err := e.Start(ctx, testApp, "flow", "rt", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Signal(ctx, testApp, "rt", "go", []byte(`1`)); err != nil {
		t.Fatal(err)
	}
	if rec := wait(t, e, "rt"); rec.State != StateFailed || rec.Error != "step b: broken" {
		t.Fatalf("run %s %q, want failed by b", rec.State, rec.Error)
	}
	fixed.Store(true)
	back, err := e.Retry(ctx, testApp, "rt")
	if err != nil || back.State != StateRunning || back.Steps != 1 {
		t.Fatalf("retry: %+v %v", back, err)
	}
	rec := wait(t, e, "rt")
	if rec.State != StateCompleted || string(rec.Result) != `["a","b",1]` {
		t.Fatalf("retried run: %s %s %q, want completed with the signal the discarded wait had taken", rec.State, rec.Result, rec.Error)
	}
	if a, b := execCount(&execs, "a"), execCount(&execs, "b"); a != 1 || b != 2 {
		t.Fatalf("a ran %d times, b %d; want 1 and 2", a, b)
	}
	if _, err := e.Retry(ctx, testApp, "rt"); !errors.Is(err, ErrNotRetryable) {
		t.Fatalf("retry of a completed run: %v, want ErrNotRetryable", err)
	}
}
