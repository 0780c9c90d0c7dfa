package server_test

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/guesttest"
	"github.com/nimbus-dev/nimbus/internal/workflow"
)

// TestWorkflowTraceAndMetrics: a run is one trace (its id derived from
// the run's), each step attempt a span with its duration in the
// timeline; the node's metrics count the run's start and end and time
// every step attempt by outcome.
func TestWorkflowTraceAndMetrics(t *testing.T) {
	t.Parallel()
	guest := guesttest.MustBuild(t, wfGuestDir, guesttest.Reactor)
	srv := start(t, t.TempDir())
	deployWF(t, srv, guest, "")
	ctx := context.Background()
	if _, _, err := srv.Workflows().Start(ctx, "shop", "flow", "seen", []byte(`{"steps":2,"fail_times":1,"step_ms":5}`)); err != nil {
		t.Fatal(err)
	}
	if r := finished(t, srv, "seen"); r.State != workflow.StateCompleted {
		t.Fatalf("run %s %q", r.State, r.Error)
	}
	info, err := srv.Workflows().Get(ctx, "shop", "seen")
	if err != nil {
		t.Fatal(err)
	}
	if info.TraceID != workflow.RunTraceID("shop", "seen") || len(info.TraceID) != 32 {
		t.Errorf("trace id %q", info.TraceID)
	}
	spans := map[string]bool{}
	n := 0
	for _, e := range info.Timeline {
		if (e.Type != workflow.EntryStep && e.Type != workflow.EntryAttempt) || e.Name == "nimbus.uuid" {
			continue
		}
		n++
		if len(e.Span) != 16 || spans[e.Span] || e.DurationMS < 5 {
			t.Errorf("%s %s attempt %d: span %q (seen before: %v), %d ms; want a new span of at least 5ms", e.Type, e.Name, e.Attempt, e.Span, spans[e.Span], e.DurationMS)
		}
		spans[e.Span] = true
	}
	if n != 4 {
		t.Errorf("%d step attempts in the timeline, want 4 (2 steps, each failing once)", n)
	}
	rec := httptest.NewRecorder()
	srv.Metrics().Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	text := rec.Body.String()
	for _, line := range []string{
		`nimbus_workflow_runs_started_total{app="shop",workflow="flow"} 1`,
		`nimbus_workflow_runs_ended_total{app="shop",state="completed",workflow="flow"} 1`,
		`nimbus_workflow_step_duration_seconds_count{app="shop",outcome="retried",workflow="flow"} 2`,
		`nimbus_workflow_step_duration_seconds_count{app="shop",outcome="completed",workflow="flow"} 3`, // and nimbus.uuid
	} {
		if !strings.Contains(text, line+"\n") {
			t.Errorf("metrics lack %s", line)
		}
	}
}
