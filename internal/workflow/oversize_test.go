package workflow

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// TestOversizedResultsFailTheRun: whatever a guest answers, a result over
// wire.MaxResultLen, a response over max_response_body or an error too
// long for the record never leaves a run stuck (activated again and
// again on a commit that cannot be made): a step's oversized result is a
// final failure of the step, a run's fails the run, and a long error is
// cut to MaxErrorBytes. (The Go SDK checks results itself first: see
// TestWorkflowOversizedResults in internal/server.)
func TestOversizedResultsFailTheRun(t *testing.T) {
	t.Parallel()
	big := `"` + strings.Repeat("x", wire.MaxResultLen) + `"`
	long := strings.Repeat("e", 3<<20)
	answers := map[string]func(ctx context.Context, e *Engine, inv string) (*runtime.Response, error){
		"step": func(ctx context.Context, e *Engine, inv string) (*runtime.Response, error) {
			ans, err := e.StepBegin(ctx, testApp, inv, 0, "big")
			if err != nil || ans.Replay {
				return nil, err
			}
			if _, err := e.StepEnd(ctx, testApp, inv, 0, "big", []byte(big), false, -1); err != nil {
				return nil, err
			}
			return completed(`"done"`), nil
		},
		"result": func(context.Context, *Engine, string) (*runtime.Response, error) { return completed(big), nil },
		"response": func(context.Context, *Engine, string) (*runtime.Response, error) {
			return nil, &runtime.LimitError{Err: runtime.ErrResponseTooLarge, Limit: "1MiB"}
		},
		"error": func(context.Context, *Engine, string) (*runtime.Response, error) {
			return &runtime.Response{Status: http.StatusOK, Header: http.Header{wire.HeaderOutcome: {wire.OutcomeFailed}}, Body: []byte(long)}, nil
		},
	}
	g := func(ctx context.Context, e *Engine, inv string, n int) (*runtime.Response, error) {
		a, err := e.activation(testApp, inv)
		if err != nil {
			return nil, err
		}
		return answers[a.r.id](ctx, e, inv)
	}
	e, _ := newEngine(t, openStore(t), g, newClock().Now)
	for id := range answers {
		if _, _, err := e.Start(t.Context(), testApp, "flow", id, nil); err != nil {
			t.Fatal(err)
		}
	}
	for id, want := range map[string]string{
		"step":     "over the limit of 1048576 bytes: pass large data by reference, such as a KV key",
		"result":   "the run's result is 1048578 bytes, over the limit of 1048576 bytes: pass large data by reference",
		"response": "the run's result is over the workflow's max_response_body: response too large (limit 1MiB)",
		"error":    "eee...",
	} {
		rec := wait(t, e, id)
		if id == "step" {
			// The step failed for good; the guest went on and completed.
			info, err := e.Get(t.Context(), testApp, id)
			if err != nil {
				t.Fatal(err)
			}
			var stepErr string
			for _, ent := range info.Timeline {
				if ent.Type == EntryStep && ent.Name == "big" && ent.Failed {
					stepErr = ent.Error
				}
			}
			if !strings.Contains(stepErr, "result is 1048578 bytes, "+want) || rec.State != StateCompleted {
				t.Errorf("run step: %s, step error %q, want a failed step saying %q", rec.State, stepErr, want)
			}
			continue
		}
		if rec.State != StateFailed || !strings.Contains(rec.Error, want) {
			t.Errorf("run %s: %s %.200q, want failed with %q", id, rec.State, rec.Error, want)
		}
		if len(rec.Error) > MaxErrorBytes+3 {
			t.Errorf("run %s: error of %d bytes, want at most %d", id, len(rec.Error), MaxErrorBytes+3)
		}
	}
}
