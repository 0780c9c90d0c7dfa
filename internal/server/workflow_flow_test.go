package server_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/guestlog"
	"github.com/nimbus-dev/nimbus/internal/guesttest"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/server"
	"github.com/nimbus-dev/nimbus/internal/workflow"
)

// deployFlowWF deploys app "shop" with the test workflow "flow" under fl.
func deployFlowWF(t *testing.T, srv *server.Server, guest []byte, fl *model.Flow) error {
	t.Helper()
	f := fn("flow", guest, "POST /flow")
	f.Kind = model.KindWorkflow
	f.Capabilities = []string{"log", "kv:ledger", "kv:execs"}
	f.Flow = fl
	if _, err := srv.PutArtifact(context.Background(), guest); err != nil {
		t.Fatal(err)
	}
	_, _, err := srv.Deploy(context.Background(), "shop", model.Spec{Functions: []model.Function{f}, Buckets: []model.Bucket{
		{Name: "ledger", MaxValueBytes: 1 << 10, History: 1}, {Name: "execs", MaxValueBytes: 1 << 10, History: 1}}})
	return err
}

// TestWorkflowFlowKeyConcurrency: a real workflow with key_concurrency 1
// on input.tenant. Three runs of tenant a and one of tenant b, each with
// two steps that take a while: the recorded step attempts of a's runs
// never overlap (each starts after the previous run's last step ended),
// and every run completes. A flow keyed on a header is refused at deploy.
func TestWorkflowFlowKeyConcurrency(t *testing.T) {
	t.Parallel()
	guest := guesttest.MustBuild(t, wfGuestDir, guesttest.Reactor)
	srv := start(t, t.TempDir())
	err := deployFlowWF(t, srv, guest, &model.Flow{Key: "header.X-Tenant", KeyConcurrency: 1, Priority: 5})
	if !errors.Is(err, model.ErrInvalid) || !strings.Contains(err.Error(), "workflow flow: ") || !strings.Contains(err.Error(), "input.<field>") {
		t.Fatalf("deploy with a header key: %v, want model.ErrInvalid naming the workflow and pointing at input.<field>", err)
	}
	if err := deployFlowWF(t, srv, guest, &model.Flow{Key: "input.tenant", KeyConcurrency: 1, Priority: 5}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	runs := map[string]string{"a1": "a", "a2": "a", "a3": "a", "b1": "b"}
	for id, tenant := range runs {
		if _, _, err := srv.Workflows().Start(ctx, "shop", "flow", id, fmt.Appendf(nil, `{"steps":2,"step_ms":40,"tenant":%q}`, tenant)); err != nil {
			t.Fatal(err)
		}
	}
	type span struct {
		run        string
		begin, end time.Time
	}
	var spans []span
	for id := range runs {
		if r := waitRun(t, srv, id); r.State != workflow.StateCompleted {
			t.Fatalf("run %s: %s %q", id, r.State, r.Error)
		}
		if runs[id] != "a" {
			continue
		}
		info, err := srv.Workflows().Get(ctx, "shop", id)
		if err != nil {
			t.Fatal(err)
		}
		s := span{run: id}
		for _, e := range info.Timeline {
			if e.Type != workflow.EntryStep {
				continue
			}
			b := e.Time.Add(-time.Duration(e.DurationMS) * time.Millisecond) // truncated: never earlier than the real begin
			if s.begin.IsZero() || b.Before(s.begin) {
				s.begin = b
			}
			if e.Time.After(s.end) {
				s.end = e.Time
			}
		}
		spans = append(spans, s)
	}
	slices.SortFunc(spans, func(x, y span) int { return x.begin.Compare(y.begin) })
	for i := 1; i < len(spans); i++ {
		if spans[i].begin.Before(spans[i-1].end) {
			t.Errorf("runs %s and %s of key a ran steps at once: %s began at %s, before %s's last step ended at %s",
				spans[i-1].run, spans[i].run, spans[i].run, spans[i].begin.Format(time.StampMicro), spans[i-1].run, spans[i-1].end.Format(time.StampMicro))
		}
	}
}

// TestWorkflowCallThroughCalleeFlow: a step's nimbus.Call goes through the
// callee's flow control like any invocation: with double at rate 1/1h,
// the first run's call runs, the second's is refused by the rate (it could
// not start within double's timeout), which fails its attempts and, after
// the step's retries, the run, with an error naming the limit; double ran
// once.
func TestWorkflowCallThroughCalleeFlow(t *testing.T) {
	t.Parallel()
	srv := start(t, t.TempDir())
	guest := guesttest.MustBuild(t, callGuestDir, guesttest.Reactor)
	if _, err := srv.PutArtifact(context.Background(), guest); err != nil {
		t.Fatal(err)
	}
	var fns []model.Function
	for _, name := range []string{"parent", "child", "double"} {
		f := fn(name, guest)
		if name != "double" {
			f.Kind = model.KindWorkflow
		} else {
			f.Flow = &model.Flow{Rate: &model.Rate{Limit: 1, PeriodMS: time.Hour.Milliseconds()}, Priority: 5}
		}
		f.Capabilities = []string{"log", "kv:execs"}
		fns = append(fns, f)
	}
	if _, _, err := srv.Deploy(context.Background(), "shop", model.Spec{Functions: fns, Buckets: []model.Bucket{{Name: "execs", MaxValueBytes: 1 << 10, History: 1}}}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, _, err := srv.Workflows().Start(ctx, "shop", "parent", "p1", []byte(`{"n":5}`)); err != nil {
		t.Fatal(err)
	}
	if r := finished(t, srv, "p1"); r.State != workflow.StateCompleted {
		t.Fatalf("p1: %s %q", r.State, r.Error)
	}
	if _, _, err := srv.Workflows().Start(ctx, "shop", "parent", "p2", []byte(`{"n":5}`)); err != nil {
		t.Fatal(err)
	}
	r := finished(t, srv, "p2")
	if r.State != workflow.StateFailed || !strings.Contains(r.Error, "nimbus.call:double") {
		t.Fatalf("p2: %s %q, want failed in its call step", r.State, r.Error)
	}
	// The guest learns "unavailable"; the run's log says why, in the step.
	poll(t, "p2's log names double's rate limit", func() error {
		var lines []string
		err := srv.ReadLogs(ctx, guestlog.Query{App: "shop", Run: "p2"}, func(e guestlog.Entry) error {
			if e.Step != nil && e.Step.Name == "nimbus.call:double" && e.Level == "warn" && strings.Contains(e.Message, "rate limit") {
				lines = append(lines, e.Message)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if len(lines) == 0 {
			return errors.New("no warning of the call step naming the rate limit")
		}
		return nil
	})
	info, err := srv.Workflows().Get(ctx, "shop", "p2")
	if err != nil {
		t.Fatal(err)
	}
	attempts := 0
	for _, e := range info.Timeline {
		if e.Type == workflow.EntryAttempt && e.Name == "nimbus.call:double" {
			attempts++
		}
	}
	if attempts != 2 {
		t.Errorf("p2's call step failed %d attempts before failing for good, want 2 (its Retry: 3 attempts)", attempts)
	}
	if n := execsOf(t, srv, "call/p1/0/nimbus.call.double"); n != 1 {
		t.Errorf("double ran %d times for p1, want 1", n)
	}
	if n := execsOf(t, srv, "call/p2/0/nimbus.call.double"); n != 0 {
		t.Errorf("double ran %d times for p2, want 0 (refused by its rate)", n)
	}
}

// TestWorkflowLogsTaggedWithRunAndStep: every line a run's activations
// write (stdout, stderr, the log call) carries the run id, and inside a
// step its name, position and attempt; the logs API's run= keeps one
// run's lines, in its JSON.
func TestWorkflowLogsTaggedWithRunAndStep(t *testing.T) {
	t.Parallel()
	guest := guesttest.MustBuild(t, wfGuestDir, guesttest.Reactor)
	srv := start(t, t.TempDir())
	deployWF(t, srv, guest, "")
	ctx := context.Background()
	for _, id := range []string{"logged", "other"} {
		if _, _, err := srv.Workflows().Start(ctx, "shop", "flow", id, []byte(`{"steps":2,"fail_times":1,"log":true}`)); err != nil {
			t.Fatal(err)
		}
		if r := waitRun(t, srv, id); r.State != workflow.StateCompleted {
			t.Fatalf("run %s: %s %q", id, r.State, r.Error)
		}
	}
	key := mustAdmin(t, srv)
	// want: per (position, attempt), the streams of the lines.
	want := map[string]string{}
	for pos := range 2 {
		for att := 1; att <= 2; att++ {
			want[fmt.Sprintf("s%d@%d#%d", pos, pos, att)] = "log stderr stdout"
		}
	}
	var got map[string][]string
	var body int
	poll(t, "every line of run logged", func() error {
		req, _ := http.NewRequest("GET", srv.APIURL()+"/api/v1/apps/shop/logs?run=logged", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		got, body = map[string][]string{}, 0
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			var e guestlog.Entry
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				return err
			}
			if e.Run != "logged" {
				return fmt.Errorf("run=logged answered a line of run %q: %s", e.Run, sc.Bytes())
			}
			if e.Stream == guestlog.MarkerStream {
				continue
			}
			if e.Step == nil {
				if e.Message != "body: outside steps" {
					return fmt.Errorf("line outside steps %q", e.Message)
				}
				body++
				continue
			}
			if !bytes.Contains(sc.Bytes(), fmt.Appendf(nil, `"step":{"name":"s%d","position":%d,"attempt":%d}`, e.Step.Position, e.Step.Position, e.Step.Attempt)) {
				return fmt.Errorf("line's JSON lacks its step: %s", sc.Bytes())
			}
			if !strings.HasPrefix(e.Message, fmt.Sprintf("step %d ", e.Step.Position)) {
				return fmt.Errorf("line %q tagged with step %+v", e.Message, *e.Step)
			}
			k := fmt.Sprintf("%s@%d#%d", e.Step.Name, e.Step.Position, e.Step.Attempt)
			got[k] = append(got[k], e.Stream)
		}
		if len(got) != len(want) || body == 0 {
			return fmt.Errorf("lines by step %v, %d outside steps", got, body)
		}
		for k, streams := range got {
			slices.Sort(streams)
			if strings.Join(streams, " ") != want[k] {
				return fmt.Errorf("step %s: streams %v, want %s", k, streams, want[k])
			}
		}
		return nil
	})
}
