package server_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/apierror"
	"github.com/nimbus-dev/nimbus/internal/guesttest"
	"github.com/nimbus-dev/nimbus/internal/state"
	"github.com/nimbus-dev/nimbus/internal/workflow"
)

// TestWorkflowRetryFromFailedStep: a run whose step 1 failed for good is
// retried after the cause is fixed: step 0 is not run again (its
// recorded result is kept), step 1 runs again with the same idempotency
// key, step 2 runs for the first time, and the run completes; the
// timeline keeps the failure and shows the retry. A retry of a run that
// is not failed is a 409 that changes nothing, of an unknown run a 404.
func TestWorkflowRetryFromFailedStep(t *testing.T) {
	t.Parallel()
	guest := guesttest.MustBuild(t, wfGuestDir, guesttest.Reactor)
	srv := start(t, t.TempDir())
	deployWF(t, srv, guest, "")
	ctx := context.Background()
	if _, _, err := srv.Workflows().Start(ctx, "shop", "flow", "gated", []byte(`{"steps":3,"gate_at":1}`)); err != nil {
		t.Fatal(err)
	}
	r := finished(t, srv, "gated")
	if r.State != workflow.StateFailed || !strings.Contains(r.Error, "the gate is closed") {
		t.Fatalf("run %s %q, want failed by the closed gate", r.State, r.Error)
	}
	if _, err := srv.KV().Put(ctx, "shop", "execs", "gate", []byte("open"), state.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	back, err := srv.Retry(ctx, "shop", "gated")
	if err != nil || back.State != workflow.StateRunning || back.Steps != 1 || back.Error != "" {
		t.Fatalf("retry: %+v, %v; want running from position 1", back, err)
	}
	r = finished(t, srv, "gated")
	if r.State != workflow.StateCompleted {
		t.Fatalf("retried run %s %q, want completed", r.State, r.Error)
	}
	for key, want := range map[string]string{"gated/0/s0": "1", "gated/1/s1": "2", "gated/2/s2": "1"} {
		if got := execs(t, srv, key); got != want {
			t.Errorf("step %s ran %s times, want %s", key, got, want)
		}
	}
	info, err := srv.Workflows().Get(ctx, "shop", "gated")
	if err != nil {
		t.Fatal(err)
	}
	var tl []string
	for _, e := range info.Timeline {
		s := e.Type + ":" + e.Name
		if e.Failed {
			s += "!"
		}
		tl = append(tl, s)
	}
	if got, want := strings.Join(tl, " "), "started: step:s0 step:s1! retry:s1 step:s1 step:s2 step:nimbus.uuid completed:"; got != want {
		t.Errorf("timeline %q, want %q", got, want)
	}
	if _, err := srv.Retry(ctx, "shop", "gated"); !errors.Is(err, workflow.ErrNotRetryable) || apierror.Status(err) != http.StatusConflict ||
		!strings.Contains(err.Error(), "completed") {
		t.Errorf("retry of a completed run: %v, want a 409 saying it is completed", err)
	}
	if _, err := srv.Retry(ctx, "shop", "nope"); !errors.Is(err, workflow.ErrRunNotFound) || apierror.Status(err) != http.StatusNotFound {
		t.Errorf("retry of an unknown run: %v, want a 404", err)
	}
}

// TestWorkflowRetryMovesToActiveRevision: a failed run retried after a
// deploy goes on with the active revision (deploy the fix, then retry),
// and the revision it failed on is released.
func TestWorkflowRetryMovesToActiveRevision(t *testing.T) {
	t.Parallel()
	guest := guesttest.MustBuild(t, wfGuestDir, guesttest.Reactor)
	srv := start(t, t.TempDir())
	deployWF(t, srv, guest, "")
	ctx := context.Background()
	old, _, err := srv.Workflows().Start(ctx, "shop", "flow", "gated", []byte(`{"steps":2,"gate_at":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if r := finished(t, srv, "gated"); r.State != workflow.StateFailed {
		t.Fatalf("run %s %q, want failed by the closed gate", r.State, r.Error)
	}
	deployWFEnv(t, srv, guest, map[string]string{"STEP_PREFIX": "", "FIXED": "1"})
	if _, err := srv.KV().Put(ctx, "shop", "execs", "gate", []byte("open"), state.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	back, err := srv.Retry(ctx, "shop", "gated")
	if err != nil {
		t.Fatal(err)
	}
	if back.Revision == old.Revision {
		t.Fatalf("retried run on revision %s, the one it failed on; want the active one", back.Revision)
	}
	if r := finished(t, srv, "gated"); r.State != workflow.StateCompleted || r.Revision != back.Revision {
		t.Fatalf("retried run %s on %s %q, want completed on %s", r.State, r.Revision, r.Error, back.Revision)
	}
	poll(t, "one revision loaded", func() error {
		if got := loadedRevisions(t, srv); got != 1 {
			return errorf("%v function revisions loaded, want 1", got)
		}
		return nil
	})
}
