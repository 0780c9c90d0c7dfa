package server_test

import (
	"context"
	"strings"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/guesttest"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/server"
	"github.com/nimbus-dev/nimbus/internal/workflow"
)

const callGuestDir = "../workflow/testdata/callguest"

// deployCalls deploys app "shop" with the calling guest as the workflows
// "parent" and "child" and the function "double".
func deployCalls(t *testing.T, srv *server.Server) {
	t.Helper()
	guest := guesttest.MustBuild(t, callGuestDir, guesttest.Reactor)
	if _, err := srv.PutArtifact(context.Background(), guest); err != nil {
		t.Fatal(err)
	}
	var fns []model.Function
	for _, name := range []string{"parent", "child", "double"} {
		f := fn(name, guest)
		if name != "double" {
			f.Kind = model.KindWorkflow
		}
		f.Capabilities = []string{"log", "kv:execs"}
		fns = append(fns, f)
	}
	_, _, err := srv.Deploy(context.Background(), "shop", model.Spec{Functions: fns, Buckets: []model.Bucket{
		{Name: "execs", MaxValueBytes: 1 << 10, History: 1}}})
	if err != nil {
		t.Fatalf("deploy: %v", err)
	}
}

// TestWorkflowCallAndChild: a run calls a function as a step (once, with
// the step's idempotency key) and starts a child workflow whose id comes
// from the parent's and awaits its result (the parent suspends, the
// child's end wakes it, the replay runs neither the call nor the start
// again). Bad targets and a failing child fail the parent with errors
// that name them.
func TestWorkflowCallAndChild(t *testing.T) {
	t.Parallel()
	srv := start(t, t.TempDir())
	deployCalls(t, srv)
	ctx := context.Background()
	if _, _, err := srv.Workflows().Start(ctx, "shop", "parent", "p1", []byte(`{"n":5}`)); err != nil {
		t.Fatal(err)
	}
	r := finished(t, srv, "p1")
	if r.State != workflow.StateCompleted || string(r.Result) != `{"doubled":10,"tripled":15}` {
		t.Fatalf("parent: %s %s %q", r.State, r.Result, r.Error)
	}
	if n := execsOf(t, srv, "call/p1/0/nimbus.call.double"); n != 1 {
		t.Errorf("double ran %d times with the call step's idempotency key, want 1", n)
	}
	if n := execsOf(t, srv, "p1-1/triple"); n != 1 {
		t.Errorf("the child's step ran %d times, want 1", n)
	}
	child, err := srv.Workflows().Get(ctx, "shop", "p1-1")
	if err != nil || child.Parent != "p1" || child.Workflow != "child" || child.State != workflow.StateCompleted {
		t.Fatalf("child run p1-1: %+v, %v", child, err)
	}
	info, err := srv.Workflows().Get(ctx, "shop", "p1")
	if err != nil {
		t.Fatal(err)
	}
	var tl []string
	for _, e := range info.Timeline {
		if e.Type == workflow.EntryStep || e.Type == workflow.EntrySignal || e.Type == workflow.EntryWait {
			tl = append(tl, e.Type+":"+e.Name)
		}
	}
	if got, want := strings.Join(tl, " "), "step:nimbus.call:double step:nimbus.child:child signal:nimbus.child:p1-1 wait:nimbus.child:p1-1"; got != want {
		t.Errorf("parent timeline %q, want %q", got, want)
	}

	for id, c := range map[string]struct{ input, want string }{
		"bad-call":  {`{"n":1,"call":"nope"}`, "no such function"},
		"call-wf":   {`{"n":1,"call":"child"}`, "ChildWorkflow"},
		"bad-child": {`{"n":1,"child_wf":"nope"}`, "no workflow of that name"},
		"neg":       {`{"n":-1}`, "child workflow child (run neg-1) failed: step triple: negative input"},
	} {
		if _, _, err := srv.Workflows().Start(ctx, "shop", "parent", id, []byte(c.input)); err != nil {
			t.Fatal(err)
		}
		r := finished(t, srv, id)
		if r.State != workflow.StateFailed || !strings.Contains(r.Error, c.want) {
			t.Errorf("run %s: %s %q, want failed with %q", id, r.State, r.Error, c.want)
		}
	}
}

// TestWorkflowOversizedResults: a step whose result is over the limit
// fails that attempt with an error naming the step, the size and the
// limit (of its JSON: the string and its quotes), and is retried by its
// policy (2 attempts here); a run whose
// result is over it ends failed with such an error. Neither is stuck.
func TestWorkflowOversizedResults(t *testing.T) {
	t.Parallel()
	srv := start(t, t.TempDir())
	deployCalls(t, srv)
	ctx := context.Background()
	for id, c := range map[string]struct {
		input string
		want  []string
	}{
		"big-step":   {`{"step_bytes":1572864}`, []string{"step big: result is 1572866 bytes", "over the limit of 1048576 bytes", "KV key"}},
		"big-result": {`{"result_bytes":1572864}`, []string{"the run's result is 1572", "over the limit of 1048576 bytes", "KV key"}},
	} {
		if _, _, err := srv.Workflows().Start(ctx, "shop", "parent", id, []byte(c.input)); err != nil {
			t.Fatal(err)
		}
		r := finished(t, srv, id)
		if r.State != workflow.StateFailed {
			t.Errorf("run %s: %s %q, want failed", id, r.State, r.Error)
		}
		for _, w := range c.want {
			if !strings.Contains(r.Error, w) {
				t.Errorf("run %s: error %q, want it to say %q", id, r.Error, w)
			}
		}
	}
	if n := execsOf(t, srv, "big-step/big"); n != 2 {
		t.Errorf("the oversized step ran %d times, want 2 (its retry policy)", n)
	}
}

// TestWorkflowParentClose: a parent waiting on a child that waits for a
// signal. Cancelling the parent cancels the child (which runs its
// compensation); terminating it terminates the child (no compensation);
// a child started with nimbus.Detached() runs on after its parent is
// cancelled or terminated, and completes when signalled.
func TestWorkflowParentClose(t *testing.T) {
	t.Parallel()
	srv := start(t, t.TempDir())
	deployCalls(t, srv)
	ctx := context.Background()
	wf := srv.Workflows()
	for id, input := range map[string]string{
		"pc": `{"n":1,"wait":"go"}`, "pt": `{"n":1,"wait":"go"}`,
		"dc": `{"n":1,"wait":"go","detached":true}`, "dt": `{"n":1,"wait":"go","detached":true}`,
	} {
		if _, _, err := wf.Start(ctx, "shop", "parent", id, []byte(input)); err != nil {
			t.Fatal(err)
		}
		waitState(t, srv, id+"-1", workflow.StateWaiting)
		waitState(t, srv, id, workflow.StateWaiting)
	}
	for _, id := range []string{"pc", "dc"} {
		if _, err := srv.Cancel(ctx, "shop", id, "test"); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"pt", "dt"} {
		if _, err := srv.Terminate(ctx, "shop", id, "test"); err != nil {
			t.Fatal(err)
		}
	}
	for id, want := range map[string]string{"pc": workflow.StateCancelled, "pc-1": workflow.StateCancelled,
		"pt": workflow.StateTerminated, "pt-1": workflow.StateTerminated, "dc": workflow.StateCancelled, "dt": workflow.StateTerminated} {
		if r := finished(t, srv, id); r.State != want {
			t.Errorf("run %s: %s %q, want %s", id, r.State, r.Error, want)
		}
	}
	if n, m := execsOf(t, srv, "pc-1/undo"), execsOf(t, srv, "pt-1/undo"); n != 1 || m != 0 {
		t.Errorf("compensations: the cancelled child's ran %d times, the terminated child's %d; want 1 and 0", n, m)
	}
	info, err := wf.Get(ctx, "shop", "pc-1")
	if err != nil {
		t.Fatal(err)
	}
	reason := ""
	for _, e := range info.Timeline {
		if e.Type == workflow.EntryCancel {
			reason = e.Error
		}
	}
	if reason != "its parent run pc was cancelled" {
		t.Errorf("the child's cancellation reason is %q", reason)
	}
	// The detached children wait still (their parents ended after any
	// cancellation of them would have been asked), and complete when
	// signalled.
	for _, id := range []string{"dc-1", "dt-1"} {
		r, err := wf.Get(ctx, "shop", id)
		if err != nil || r.State != workflow.StateWaiting || !r.Detached {
			t.Fatalf("detached child %s: %+v %v, want it waiting, detached", id, r, err)
		}
		if _, err := srv.Signal(ctx, "shop", id, "go", []byte(`1`)); err != nil {
			t.Fatal(err)
		}
		if r := finished(t, srv, id); r.State != workflow.StateCompleted || string(r.Result) != `{"doubled":0,"tripled":3}` {
			t.Errorf("detached child %s: %s %s %q, want completed", id, r.State, r.Result, r.Error)
		}
	}
}
