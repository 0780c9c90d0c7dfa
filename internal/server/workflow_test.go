package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/guesttest"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/server"
	"github.com/nimbus-dev/nimbus/internal/workflow"
)

const wfGuestDir = "../workflow/testdata/wfguest"

// wfOut is the test workflow's result.
type wfOut struct {
	Revs    []uint64 `json:"revs"`
	UUID    string   `json:"uuid"`
	SleptMS int64    `json:"slept_ms"`
}

// deployWF deploys app "shop" with the test workflow "flow" (route POST
// /flow) and its buckets; prefix names its steps.
func deployWF(t *testing.T, srv *server.Server, guest []byte, prefix string) {
	t.Helper()
	deployWFEnv(t, srv, guest, map[string]string{"STEP_PREFIX": prefix})
}

// deployWFEnv is deployWF with the workflow's whole environment.
func deployWFEnv(t *testing.T, srv *server.Server, guest []byte, env map[string]string) {
	t.Helper()
	f := fn("flow", guest, "POST /flow")
	f.Kind = model.KindWorkflow
	f.Capabilities = []string{"log", "kv:ledger", "kv:execs"}
	f.Env = env
	if _, err := srv.PutArtifact(context.Background(), guest); err != nil {
		t.Fatal(err)
	}
	_, _, err := srv.Deploy(context.Background(), "shop", model.Spec{Functions: []model.Function{f}, Buckets: []model.Bucket{
		{Name: "ledger", MaxValueBytes: 1 << 10, History: 1}, {Name: "execs", MaxValueBytes: 1 << 10, History: 1}}})
	if err != nil {
		t.Fatalf("deploy: %v", err)
	}
}

// execs returns how many times the step of key ran.
func execs(t *testing.T, srv *server.Server, key string) string {
	t.Helper()
	v, _, err := srv.KV().Get(context.Background(), "shop", "execs", key)
	if err != nil {
		t.Fatalf("execs %s: %v", key, err)
	}
	return string(v)
}

// TestWorkflowRouteRetriesAndIdempotentStart: a route starts a run and
// answers its result; each step failed once, was retried, and ran twice
// in all; the timeline shows every attempt; the same run id started again
// is the same run and runs nothing.
func TestWorkflowRouteRetriesAndIdempotentStart(t *testing.T) {
	t.Parallel()
	guest := guesttest.MustBuild(t, wfGuestDir, guesttest.Reactor)
	srv := start(t, t.TempDir())
	deployWF(t, srv, guest, "")

	post := func() (int, string, http.Header) {
		req, _ := http.NewRequest("POST", srv.GatewayURL()+"/flow", strings.NewReader(`{"steps":3,"fail_times":1}`))
		req.Header.Set(server.HeaderRunID, "order-1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), resp.Header
	}
	code, body, h := post()
	if code != 200 || h.Get(server.HeaderRunID) != "order-1" {
		t.Fatalf("start: %d %s (run id %q)", code, body, h.Get(server.HeaderRunID))
	}
	var out wfOut
	if err := json.Unmarshal([]byte(body), &out); err != nil || len(out.Revs) != 3 || out.UUID == "" {
		t.Fatalf("result %s: %v", body, err)
	}
	for i := range 3 {
		if got := execs(t, srv, "order-1/"+itoa(i)+"/s"+itoa(i)); got != "2" {
			t.Errorf("step %d ran %s times, want 2 (one failure, one success)", i, got)
		}
	}
	code, body2, _ := post()
	if code != 200 || body2 != body {
		t.Fatalf("second start of order-1: %d %s, want the first result %s", code, body2, body)
	}
	if got := execs(t, srv, "order-1/0/s0"); got != "2" {
		t.Errorf("a second start ran step 0 again: %s executions", got)
	}
	info, err := srv.Workflows().Get(context.Background(), "shop", "order-1")
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, e := range info.Timeline {
		types = append(types, e.Type)
	}
	want := "started attempt step attempt step attempt step step completed"
	if strings.Join(types, " ") != want {
		t.Fatalf("timeline %v, want %s", types, want)
	}
}

func itoa(i int) string { return string(rune('0' + i)) }

// TestWorkflowSleepAcrossRestart: a run sleeping past the short wait
// holds no instance, survives a restart, wakes once and not early, and no
// completed step runs again.
func TestWorkflowSleepAcrossRestart(t *testing.T) {
	t.Parallel()
	guest := guesttest.MustBuild(t, wfGuestDir, guesttest.Reactor)
	dir := t.TempDir()
	srv := start(t, dir)
	deployWF(t, srv, guest, "")
	ctx := context.Background()
	run, created, err := srv.Workflows().Start(ctx, "shop", "flow", "nap", []byte(`{"steps":2,"sleep_ms":2500}`))
	if err != nil || !created {
		t.Fatalf("start: %v (created %v)", err, created)
	}
	poll(t, "run sleeping", func() error {
		r, err := srv.Workflows().Get(ctx, "shop", run.ID)
		if err != nil {
			return err
		}
		if r.State != workflow.StateSleeping {
			return errorf("state %s", r.State)
		}
		return nil
	})
	srv.Close(ctx)

	srv = start(t, dir)
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	done, err := srv.Workflows().Wait(wctx, "shop", "nap")
	if err != nil || done.State != workflow.StateCompleted {
		t.Fatalf("after restart: %+v, %v", done, err)
	}
	var out wfOut
	if err := json.Unmarshal(done.Result, &out); err != nil {
		t.Fatal(err)
	}
	if out.SleptMS < 2500 {
		t.Errorf("slept %dms of 2500: woke early", out.SleptMS)
	}
	for _, key := range []string{"nap/0/s0", "nap/4/s1"} {
		if got := execs(t, srv, key); got != "1" {
			t.Errorf("step %s ran %s times, want once", key, got)
		}
	}
}

// TestWorkflowRunStaysOnItsRevision: a run waiting across a deploy whose
// code names its steps otherwise wakes on the code it started on and
// completes (without pinning it would fail for non-determinism: the
// golden replay tests in internal/workflow keep that case); a run started
// after the deploy runs the new code; after a restart the old run still
// resumes on its old code; the old revision's module is released once
// its last run ends.
func TestWorkflowRunStaysOnItsRevision(t *testing.T) {
	t.Parallel()
	guest := guesttest.MustBuild(t, wfGuestDir, guesttest.Reactor)
	dir := t.TempDir()
	srv := start(t, dir)
	deployWF(t, srv, guest, "a")
	ctx := context.Background()
	old, _, err := srv.Workflows().Start(ctx, "shop", "flow", "drift", []byte(`{"steps":2,"wait_for":"go"}`))
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, srv, "drift", workflow.StateWaiting)
	deployWF(t, srv, guest, "b")

	fresh, _, err := srv.Workflows().Start(ctx, "shop", "flow", "fresh", []byte(`{"steps":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if fresh.Revision == old.Revision {
		t.Fatalf("a run started after the deploy is on revision %s, the old one", fresh.Revision)
	}
	if r := waitRun(t, srv, "fresh"); r.State != workflow.StateCompleted {
		t.Fatalf("fresh run: %s %q", r.State, r.Error)
	}
	checkStepPrefix(t, srv, "fresh", "b")
	if got := loadedRevisions(t, srv); got != 2 {
		t.Fatalf("%v function revisions loaded, want 2 (the active one, and the old one for its run)", got)
	}

	srv.Close(ctx)
	srv = start(t, dir)
	if got := loadedRevisions(t, srv); got != 2 {
		t.Fatalf("after a restart: %v function revisions loaded, want 2", got)
	}
	if _, err := srv.Signal(ctx, "shop", "drift", "go", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	r := waitRun(t, srv, "drift")
	if r.State != workflow.StateCompleted || r.Revision != old.Revision {
		t.Fatalf("old run: %s on %s %q, want completed on its revision %s", r.State, r.Revision, r.Error, old.Revision)
	}
	checkStepPrefix(t, srv, "drift", "a")
	poll(t, "old revision released", func() error {
		if got := loadedRevisions(t, srv); got != 1 {
			return errorf("%v function revisions loaded, want 1", got)
		}
		return nil
	})
}

func waitRun(t *testing.T, srv *server.Server, id string) *workflow.Run {
	t.Helper()
	wctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := srv.Workflows().Wait(wctx, "shop", id)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// checkStepPrefix checks that every step of run id ran code whose step
// names start with prefix (deployWF's prefix).
func checkStepPrefix(t *testing.T, srv *server.Server, id, prefix string) {
	t.Helper()
	info, err := srv.Workflows().Get(context.Background(), "shop", id)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range info.Timeline {
		if e.Type == workflow.EntryStep && !strings.HasPrefix(e.Name, "nimbus.") { // not the SDK's own (uuid)
			n++
			if !strings.HasPrefix(e.Name, prefix) {
				t.Errorf("run %s: step %q at %d, want the code of prefix %q", id, e.Name, e.Pos, prefix)
			}
		}
	}
	if n == 0 {
		t.Errorf("run %s: no steps in its timeline", id)
	}
}

// loadedRevisions is nimbus_function_revisions_loaded of app shop.
func loadedRevisions(t *testing.T, srv *server.Server) float64 {
	t.Helper()
	mfs, err := srv.Metrics().Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "nimbus_function_revisions_loaded" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "app" && l.GetValue() == "shop" {
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatal("no nimbus_function_revisions_loaded for app shop")
	return 0
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }
