package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
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

// TestMaxWaiting: with a function's only instance busy, HTTP requests
// wait for it up to the app's share of --max-waiting (half of it); the
// next one, through a route or the invoke API, is answered at once with
// 503 busy and Retry-After instead of holding its connection for the
// function's timeout, and nimbus_requests_waiting counts the waiters.
func TestMaxWaiting(t *testing.T) {
	t.Parallel()
	guest := guesttest.MustBuild(t, "../runtime/wasm/testdata/sdkguest", guesttest.Reactor)
	srv := startConfig(t, func(c *server.Config) { c.MaxWaiting = 2 }) // one waiter per app
	loop := fn("loop", guest, "/loop")
	loop.MaxInstances = 1
	loop.TimeoutMS = 60_000
	deploy(t, srv, "busy", [][]byte{guest}, loop)

	type answer struct {
		status int
		err    error
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	call := func(out chan<- answer) {
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.GatewayURL()+"/loop", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			out <- answer{resp.StatusCode, nil}
			return
		}
		out <- answer{0, err}
	}
	running, waiter := make(chan answer, 1), make(chan answer, 1)
	go call(running)
	poll(t, "the instance is busy", func() error {
		if _, busy := srv.Instances("busy", "loop"); busy != 1 {
			return fmt.Errorf("%d busy", busy)
		}
		return nil
	})
	go call(waiter)
	poll(t, "one request waits", waitingIs(t, srv, 1))

	refused := func(resp *http.Response, b []byte) {
		t.Helper()
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		_ = json.Unmarshal(b, &e)
		if resp.StatusCode != 503 || e.Error.Code != "busy" || resp.Header.Get("Retry-After") != "1" ||
			!strings.Contains(e.Error.Message, `app "busy" has as many requests waiting for an instance as it may (1:`) {
			t.Fatalf("%d %v %s", resp.StatusCode, resp.Header, b)
		}
	}
	start := time.Now()
	resp, err := http.Get(srv.GatewayURL() + "/loop")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	refused(resp, b)
	req, _ := http.NewRequest("POST", srv.APIURL()+"/api/v1/apps/busy/functions/loop/invoke", bytes.NewReader(nil))
	req.Header.Set("Authorization", "Bearer "+srv.AdminToken())
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	refused(resp, b)
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("the refusals took %v: they waited", d)
	}

	// Both clients go away: the loop is interrupted, the waiter leaves;
	// nothing waits any more.
	cancel()
	<-running
	<-waiter
	poll(t, "nothing waits", waitingIs(t, srv, 0))
}

// waitingIs checks nimbus_requests_waiting.
func waitingIs(t *testing.T, srv *server.Server, n int) func() error {
	return func() error {
		_, m, _ := get(t, srv.APIURL()+"/metrics")
		if want := fmt.Sprintf("\nnimbus_requests_waiting %d\n", n); !strings.Contains(m, want) {
			return fmt.Errorf("metrics lack %q", strings.TrimSpace(want))
		}
		return nil
	}
}

// TestMaxWaitingWorkflowStart: a client waiting for a run's result holds
// a place among the waiters; with none left, a start through a route is
// not refused: the run starts and the client gets its id at once (202).
func TestMaxWaitingWorkflowStart(t *testing.T) {
	t.Parallel()
	guest := guesttest.MustBuild(t, wfGuestDir, guesttest.Reactor)
	srv := startConfig(t, func(c *server.Config) { c.MaxWaiting = 2 }) // one waiter per app
	deployWF(t, srv, guest, "w")
	start := func(id string) (int, string) {
		req, _ := http.NewRequest("POST", srv.GatewayURL()+"/flow", strings.NewReader(`{"steps":1,"wait_for":"go"}`))
		req.Header.Set(server.HeaderRunID, id)
		req.Header.Set(server.HeaderWait, "50s")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			return 0, ""
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	first := make(chan int, 1)
	go func() { code, _ := start("a"); first <- code }()
	poll(t, "the first start waits for its result", waitingIs(t, srv, 1))

	began := time.Now()
	code, body := start("b")
	if code != http.StatusAccepted || !strings.Contains(body, `"run_id":"b"`) {
		t.Fatalf("second start: %d %s, want 202 with its run id", code, body)
	}
	if d := time.Since(began); d > 40*time.Second {
		t.Fatalf("the second start answered after %v: it waited", d)
	}
	for _, id := range []string{"a", "b"} {
		if _, err := srv.Signal(context.Background(), "shop", id, "go", []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	if code := <-first; code != http.StatusOK {
		t.Fatalf("first start: %d, want its result", code)
	}
	waitState(t, srv, "b", "completed")
	poll(t, "nothing waits", waitingIs(t, srv, 0))
}

// TestMaxActiveRuns: with --max-active-runs 2 and a workflow whose runs
// queue one at a time (flow max_concurrency 1, two steps of a second), a
// third start through the route while two runs are active is refused
// with 503 busy and Retry-After, names the flag, and stores nothing; once
// the runs end, the same start is taken.
func TestMaxActiveRuns(t *testing.T) {
	t.Parallel()
	guest := guesttest.MustBuild(t, wfGuestDir, guesttest.Reactor)
	srv := startConfig(t, func(c *server.Config) { c.MaxActiveRuns = 2 })
	if err := deployFlowWF(t, srv, guest, &model.Flow{MaxConcurrency: 1}); err != nil {
		t.Fatal(err)
	}
	start := func(id string) (*http.Response, string) {
		req, _ := http.NewRequest("POST", srv.GatewayURL()+"/flow", strings.NewReader(`{"steps":2,"step_ms":1000}`))
		req.Header.Set(server.HeaderRunID, id)
		req.Header.Set(server.HeaderWait, "0s")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	for _, id := range []string{"a", "b"} {
		if resp, body := start(id); resp.StatusCode != http.StatusAccepted {
			t.Fatalf("start %s: %d %s", id, resp.StatusCode, body)
		}
	}
	resp, body := start("c")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "1" ||
		!strings.Contains(body, `"code":"busy"`) || !strings.Contains(body, "--max-active-runs") {
		t.Fatalf("a third start with two runs active: %d %v %s, want 503 busy with Retry-After naming --max-active-runs", resp.StatusCode, resp.Header, body)
	}
	if _, err := srv.Workflows().Get(context.Background(), "shop", "c"); !errors.Is(err, workflow.ErrRunNotFound) {
		t.Fatalf("the refused start: %v, want no run stored", err)
	}
	_, metrics, _ := get(t, srv.APIURL()+"/metrics")
	for _, m := range []string{"nimbus_workflow_runs_active 2", "nimbus_workflow_wakes_deferred 0"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %q", m)
		}
	}
	waitState(t, srv, "a", "completed")
	waitState(t, srv, "b", "completed")
	poll(t, "no run active", func() error {
		if n := srv.Workflows().ActiveRuns(); n != 0 {
			return fmt.Errorf("%d runs active", n)
		}
		return nil
	})
	if resp, body := start("c"); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start c once the runs ended: %d %s", resp.StatusCode, body)
	}
	waitState(t, srv, "c", "completed")
}
