package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/apierror"
	"github.com/nimbus-dev/nimbus/internal/guesttest"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/server"
	"github.com/nimbus-dev/nimbus/internal/workflow"
)

const sagaGuestDir = "../workflow/testdata/sagaguest"

// deploySaga deploys app "shop" with the saga test workflow "saga".
func deploySaga(t *testing.T, srv *server.Server) {
	t.Helper()
	guest := guesttest.MustBuild(t, sagaGuestDir, guesttest.Reactor)
	f := fn("saga", guest)
	f.Kind = model.KindWorkflow
	f.Capabilities = []string{"log", "kv:ledger", "kv:execs"}
	if _, err := srv.PutArtifact(context.Background(), guest); err != nil {
		t.Fatal(err)
	}
	_, _, err := srv.Deploy(context.Background(), "shop", model.Spec{Functions: []model.Function{f}, Buckets: []model.Bucket{
		{Name: "ledger", MaxValueBytes: 1 << 10, History: 1}, {Name: "execs", MaxValueBytes: 1 << 10, History: 1}}})
	if err != nil {
		t.Fatalf("deploy: %v", err)
	}
}

// waitState polls until the run is in state.
func waitState(t *testing.T, srv *server.Server, id, state string) {
	t.Helper()
	poll(t, "run "+id+" "+state, func() error {
		r, err := srv.Workflows().Get(context.Background(), "shop", id)
		if err != nil {
			return err
		}
		if r.State != state {
			return errorf("state %s", r.State)
		}
		return nil
	})
}

// finished waits for the run to end.
func finished(t *testing.T, srv *server.Server, id string) *workflow.Run {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := srv.Workflows().Wait(ctx, "shop", id)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Done() {
		t.Fatalf("run %s still %s", id, r.State)
	}
	return r
}

// ledgerRev is the ledger revision of key, 0 when absent.
func ledgerRev(t *testing.T, srv *server.Server, key string) uint64 {
	t.Helper()
	_, rev, err := srv.KV().Get(context.Background(), "shop", "ledger", key)
	if err != nil {
		return 0
	}
	return rev
}

// execsOf is how many times key's effect ran (0 when never).
func execsOf(t *testing.T, srv *server.Server, key string) int {
	t.Helper()
	v, _, err := srv.KV().Get(context.Background(), "shop", "execs", key)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(string(v))
	return n
}

// TestWorkflowSignals: signals sent before the run waits are buffered and
// taken in order, each once; a waiting run survives a restart and holds
// no activation; a wait times out with a clear result; a signal to a
// finished run is a 409, to an unknown run a 404, and a bad name a 400.
func TestWorkflowSignals(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv := start(t, dir)
	deploySaga(t, srv)
	ctx := context.Background()
	wf := srv.Workflows()
	if _, _, err := wf.Start(ctx, "shop", "saga", "sig", []byte(`{"steps":2,"waits":["a","b","b"]}`)); err != nil {
		t.Fatal(err)
	}
	waitState(t, srv, "sig", workflow.StateWaiting)
	// b arrives before its wait: buffered.
	for _, p := range []string{`1`, `2`} {
		if _, err := srv.Signal(ctx, "shop", "sig", "b", []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	waitState(t, srv, "sig", workflow.StateWaiting) // still waiting for a
	srv.Close(ctx)

	srv = start(t, dir)
	if _, err := srv.Signal(ctx, "shop", "sig", "a", []byte(`{"go":true}`)); err != nil {
		t.Fatal(err)
	}
	r := finished(t, srv, "sig")
	if r.State != workflow.StateCompleted || string(r.Result) != `{"steps":["s1","s2"],"got":[{"go":true},1,2]}` {
		t.Fatalf("run %s: %s %s", r.State, r.Result, r.Error)
	}
	if n := execsOf(t, srv, "sig/s1"); n != 1 {
		t.Errorf("s1 ran %d times, want once (a wait replays it)", n)
	}

	if _, _, err := srv.Workflows().Start(ctx, "shop", "saga", "late", []byte(`{"steps":1,"waits":["never"],"wait_ms":200}`)); err != nil {
		t.Fatal(err)
	}
	if r := finished(t, srv, "late"); r.State != workflow.StateCompleted || string(r.Result) != `{"steps":["s1"],"got":["timeout"]}` {
		t.Fatalf("timed-out run %s: %s %s", r.State, r.Result, r.Error)
	}

	for _, c := range []struct {
		id, name string
		status   int
		want     error
	}{
		{"sig", "a", http.StatusConflict, workflow.ErrRunFinished},
		{"nope", "a", http.StatusNotFound, workflow.ErrRunNotFound},
		{"sig", "no spaces", http.StatusBadRequest, workflow.ErrInvalid},
	} {
		_, err := srv.Signal(ctx, "shop", c.id, c.name, []byte(`1`))
		if !errors.Is(err, c.want) || apierror.Status(err) != c.status {
			t.Errorf("signal %s to %s: %v (status %d), want %v (%d)", c.name, c.id, err, apierror.Status(err), c.want, c.status)
		}
	}
}

// TestWorkflowSagaCompensates: step 3 of 5 fails for good; the
// compensations of steps 2 and 1 run, in that order, each once, and the
// run fails with the step's error.
func TestWorkflowSagaCompensates(t *testing.T) {
	t.Parallel()
	srv := start(t, t.TempDir())
	deploySaga(t, srv)
	if _, _, err := srv.Workflows().Start(context.Background(), "shop", "saga", "fail3", []byte(`{"steps":5,"fail_at":3}`)); err != nil {
		t.Fatal(err)
	}
	r := finished(t, srv, "fail3")
	if r.State != workflow.StateFailed || !strings.Contains(r.Error, "s3 fails for good") {
		t.Fatalf("run %s: %q, want failed by s3", r.State, r.Error)
	}
	for key, want := range map[string]int{"fail3/s1": 1, "fail3/s2": 1, "fail3/s3": 1, "fail3/s4": 0, "fail3/c2": 1, "fail3/c1": 1, "fail3/c3": 0} {
		if n := execsOf(t, srv, key); n != want {
			t.Errorf("%s ran %d times, want %d", key, n, want)
		}
	}
	if c2, c1 := ledgerRev(t, srv, "fail3/c2"), ledgerRev(t, srv, "fail3/c1"); c2 == 0 || c1 <= c2 {
		t.Errorf("compensations applied at revisions c2=%d c1=%d, want c2 then c1", c2, c1)
	}
	info, err := srv.Workflows().Get(context.Background(), "shop", "fail3")
	if err != nil {
		t.Fatal(err)
	}
	var steps []string
	for _, e := range info.Timeline {
		if e.Type == workflow.EntryStep {
			steps = append(steps, e.Name)
		}
	}
	if got := strings.Join(steps, " "); got != "s1 s2 s3 nimbus.compensate:c2 nimbus.compensate:c1" {
		t.Errorf("journaled steps %q", got)
	}
}

// TestWorkflowCancel: cancelling a waiting run and a sleeping run stops
// each at once, runs its compensations and ends it cancelled; a second
// cancel is a 409 that changes nothing.
func TestWorkflowCancel(t *testing.T) {
	t.Parallel()
	srv := start(t, t.TempDir())
	deploySaga(t, srv)
	ctx := context.Background()
	wf := srv.Workflows()
	if _, _, err := wf.Start(ctx, "shop", "saga", "waiter", []byte(`{"steps":3,"waits":["never"]}`)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := wf.Start(ctx, "shop", "saga", "sleeper", []byte(`{"steps":3,"sleep_ms":600000}`)); err != nil {
		t.Fatal(err)
	}
	waitState(t, srv, "waiter", workflow.StateWaiting)
	waitState(t, srv, "sleeper", workflow.StateSleeping)
	for _, id := range []string{"waiter", "sleeper"} {
		r, err := srv.Cancel(ctx, "shop", id, "test")
		if err != nil || r.State != workflow.StateCancelling {
			t.Fatalf("cancel %s: %v (%+v)", id, err, r)
		}
		_, err = srv.Cancel(ctx, "shop", id, "again")
		if apierror.Status(err) != http.StatusConflict {
			t.Errorf("second cancel of %s: %v, want a 409", id, err)
		}
	}
	for _, id := range []string{"waiter", "sleeper"} {
		r := finished(t, srv, id)
		if r.State != workflow.StateCancelled {
			t.Fatalf("run %s: %s %q, want cancelled", id, r.State, r.Error)
		}
		if n1, n2, c1 := execsOf(t, srv, id+"/s1"), execsOf(t, srv, id+"/s2"), execsOf(t, srv, id+"/c1"); n1 != 1 || n2 != 0 || c1 != 1 {
			t.Errorf("run %s: s1 ran %d times, s2 %d, c1 %d; want 1, 0, 1", id, n1, n2, c1)
		}
		_, err := srv.Cancel(ctx, "shop", id, "late")
		if !errors.Is(err, workflow.ErrRunFinished) || apierror.Status(err) != http.StatusConflict {
			t.Errorf("cancel of cancelled %s: %v, want run_finished 409", id, err)
		}
	}
	info, err := wf.Get(ctx, "shop", "waiter")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(info.Timeline)
	if !strings.Contains(string(b), `"type":"cut"`) || !strings.Contains(string(b), `"type":"cancelled"`) {
		t.Errorf("timeline without the cut and the end: %s", b)
	}
}

// TestWorkflowPauseResume: a paused run that gets its signal starts no
// new step until resumed (the wait's outcome is journaled after the
// resume), and pausing twice or resuming a run that is not paused are
// 409s.
func TestWorkflowPauseResume(t *testing.T) {
	t.Parallel()
	srv := start(t, t.TempDir())
	deploySaga(t, srv)
	ctx := context.Background()
	wf := srv.Workflows()
	if _, _, err := wf.Start(ctx, "shop", "saga", "p", []byte(`{"steps":2,"waits":["go"]}`)); err != nil {
		t.Fatal(err)
	}
	waitState(t, srv, "p", workflow.StateWaiting)
	if _, err := srv.Resume(ctx, "shop", "p"); !errors.Is(err, workflow.ErrRunNotPaused) || apierror.Status(err) != http.StatusConflict {
		t.Errorf("resume of a running run: %v, want run_not_paused 409", err)
	}
	if r, err := srv.Pause(ctx, "shop", "p", "test"); err != nil || r.State != workflow.StatePaused {
		t.Fatalf("pause: %v %+v", err, r)
	}
	if _, err := srv.Pause(ctx, "shop", "p", "again"); !errors.Is(err, workflow.ErrRunPaused) || apierror.Status(err) != http.StatusConflict {
		t.Errorf("second pause: %v, want run_paused 409", err)
	}
	if _, err := srv.Signal(ctx, "shop", "p", "go", []byte(`"now"`)); err != nil {
		t.Fatal(err)
	}
	// Paused, the signal wakes it, but it does not go on (bounded check:
	// it would finish in milliseconds if it did).
	wctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	r, err := wf.Wait(wctx, "shop", "p")
	cancel()
	if err != nil || r.Done() || execsOf(t, srv, "p/s2") != 0 {
		t.Fatalf("paused run went on: %+v %v", r, err)
	}
	waitState(t, srv, "p", workflow.StatePaused)
	if _, err := srv.Resume(ctx, "shop", "p"); err != nil {
		t.Fatal(err)
	}
	r = finished(t, srv, "p")
	if r.State != workflow.StateCompleted || string(r.Result) != `{"steps":["s1","s2"],"got":["now"]}` {
		t.Fatalf("resumed run %s: %s %s", r.State, r.Result, r.Error)
	}
	info, err := wf.Get(ctx, "shop", "p")
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, e := range info.Timeline {
		switch e.Type {
		case workflow.EntryPause, workflow.EntrySignal, workflow.EntryResume, workflow.EntryWait:
			order = append(order, e.Type)
		}
	}
	if got := strings.Join(order, " "); got != "pause signal resume wait" {
		t.Errorf("journal order %q, want the wait's outcome after the resume", got)
	}
}

// TestWorkflowTerminate: terminating a waiting run and a run in the
// middle of a step ends each at once, terminated, without compensations;
// the step in flight may record its result but no further step starts;
// terminating again, or signalling, is a 409.
func TestWorkflowTerminate(t *testing.T) {
	t.Parallel()
	srv := start(t, t.TempDir())
	deploySaga(t, srv)
	ctx := context.Background()
	wf := srv.Workflows()
	if _, _, err := wf.Start(ctx, "shop", "saga", "t1", []byte(`{"steps":2,"waits":["never"]}`)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := wf.Start(ctx, "shop", "saga", "t2", []byte(`{"steps":3,"step_ms":1000}`)); err != nil {
		t.Fatal(err)
	}
	waitState(t, srv, "t1", workflow.StateWaiting)
	poll(t, "t2's first step running", func() error {
		if execsOf(t, srv, "t2/s1") == 0 {
			return errorf("not yet")
		}
		return nil
	})
	for _, id := range []string{"t1", "t2"} {
		if r, err := srv.Terminate(ctx, "shop", id, "test"); err != nil || r.State != workflow.StateTerminated {
			t.Fatalf("terminate %s: %v %+v", id, err, r)
		}
		if r := finished(t, srv, id); r.State != workflow.StateTerminated || r.Error != "terminated: test" {
			t.Errorf("run %s: %s %q", id, r.State, r.Error)
		}
		if _, err := srv.Terminate(ctx, "shop", id, ""); !errors.Is(err, workflow.ErrRunFinished) || apierror.Status(err) != http.StatusConflict {
			t.Errorf("second terminate of %s: %v, want run_finished 409", id, err)
		}
	}
	if _, err := srv.Signal(ctx, "shop", "t1", "never", nil); apierror.Status(err) != http.StatusConflict {
		t.Errorf("signal to a terminated run: %v, want 409", err)
	}
	// t2's step in flight finishes (its effect lands), then nothing more.
	poll(t, "t2's first step done", func() error {
		if ledgerRev(t, srv, "t2/s1") == 0 {
			return errorf("not yet")
		}
		return nil
	})
	wctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	<-wctx.Done()
	cancel()
	r, err := wf.Get(ctx, "shop", "t2")
	if err != nil {
		t.Fatal(err)
	}
	if r.State != workflow.StateTerminated || execsOf(t, srv, "t2/s2") != 0 || execsOf(t, srv, "t2/c1") != 0 || execsOf(t, srv, "t1/c1") != 0 {
		t.Errorf("after terminate: t2 %s, s2 ran %d times, compensations ran %d+%d times; want terminated and none",
			r.State, execsOf(t, srv, "t2/s2"), execsOf(t, srv, "t2/c1"), execsOf(t, srv, "t1/c1"))
	}
}

// TestWorkflowSignalsHammer: signals sent while runs start, replay and
// wait (some before a wait, some during, some between two) are each
// taken once, in the order they were sent: the compare-and-swap between
// a wait and a signal loses none.
func TestWorkflowSignalsHammer(t *testing.T) {
	t.Parallel()
	srv := start(t, t.TempDir())
	deploySaga(t, srv)
	ctx := context.Background()
	const runs, signals = 20, 5
	waits, _ := json.Marshal(slices.Repeat([]string{"x"}, signals))
	var wg sync.WaitGroup
	for i := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := "h" + strconv.Itoa(i)
			if _, _, err := srv.Workflows().Start(ctx, "shop", "saga", id, []byte(`{"steps":1,"waits":`+string(waits)+`}`)); err != nil {
				t.Error(err)
				return
			}
			for k := range signals {
				if _, err := srv.Signal(ctx, "shop", id, "x", []byte(strconv.Itoa(k))); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for i := range runs {
		id := "h" + strconv.Itoa(i)
		r := finished(t, srv, id)
		if r.State != workflow.StateCompleted || string(r.Result) != `{"steps":["s1"],"got":[0,1,2,3,4]}` {
			t.Errorf("run %s: %s %s %s", id, r.State, r.Result, r.Error)
		}
	}
}
