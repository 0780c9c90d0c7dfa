package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestWorkflowBadInput: a start with malformed input (not JSON, a body
// that is not a start request, input over the workflow's limit, a bad run
// id), of an unknown workflow or app, a signal to a finished run and a
// second cancel are each refused with a status and a message naming what
// is wrong, through the API and the CLI; input that is JSON of the wrong
// shape starts a run that fails saying why. Nothing is lost: a refused
// start creates no run (its id stays free), and the runs in flight meanwhile
// complete with their results. (The examples' test covers the CLI's
// refusals of signals to finished or unknown runs, a second cancel and a
// second pause of the approval workflow.)
func TestWorkflowBadInput(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary and a guest and starts a node")
	}
	tmp := t.TempDir()
	c := newCLI(t, tmp)
	_, f, _ := c.up(filepath.Join("testdata", "killwf"), filepath.Join(tmp, "data"))
	api := &nodeAPI{client: &http.Client{Timeout: 30 * time.Second}, url: f["API"], token: f["admin"]}
	const runs = "/api/v1/apps/killwf/workflows/flow/runs"

	// Runs in flight while the bad requests come: one sleeping (cancelled
	// below), one that completes.
	for id, input := range map[string]string{"keep": `{"steps":3,"sleep_ms":1500}`, "nap": `{"steps":2,"sleep_ms":600000}`} {
		if _, err := api.do("POST", runs, map[string]any{"id": id, "input": json.RawMessage(input)}, nil); err != nil {
			t.Fatal(err)
		}
	}

	// The API: each refusal is a 4xx whose JSON error has a stable code and
	// a message naming the problem.
	type apiErr struct {
		Error struct{ Code, Message string }
	}
	raw := func(method, path, body string) (int, apiErr) {
		t.Helper()
		req, _ := http.NewRequest(method, api.url+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+api.token)
		resp, err := api.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e apiErr
		json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e
	}
	// 3MiB is under the default max_request_body (6MiB), but more than
	// a run's record (one store write) holds; 7MiB is over both.
	big := `{"id":"big","input":"` + strings.Repeat("x", 3<<20) + `"}`
	huge := `{"id":"huge","input":"` + strings.Repeat("x", 7<<20) + `"}`
	for _, tc := range []struct {
		what, path, body string
		status           int
		code, says       string
	}{
		{"input not JSON", runs, `{"id":"bad1","input":{steps:3}}`, 400, "invalid_run", "not a start request"},
		{"body not a start request", runs, `[1,2]`, 400, "invalid_run", "not a start request"},
		{"input over what a run record holds", runs, big, 400, "invalid_run", "pass large data by reference"},
		{"input over max_request_body", runs, huge, 400, "invalid_run", "max_request_body"},
		{"run id with a space", runs, `{"id":"a b"}`, 400, "invalid_run", "run id"},
		{"unknown workflow", "/api/v1/apps/killwf/workflows/nope/runs", `{"id":"bad2"}`, 404, "workflow_not_found", `no workflow "nope"`},
		{"unknown app", "/api/v1/apps/nope/workflows/flow/runs", `{"id":"bad3"}`, 404, "", "nope"},
		{"bad state filter", "/api/v1/apps/killwf/runs?state=asleep", ``, 400, "invalid_run", `state "asleep"`},
		{"unknown run", "/api/v1/apps/killwf/runs/ghost", ``, 404, "run_not_found", "ghost"},
	} {
		method := "POST"
		if tc.body == "" {
			method = "GET"
		}
		status, e := raw(method, tc.path, tc.body)
		if status != tc.status || (tc.code != "" && e.Error.Code != tc.code) || !strings.Contains(e.Error.Message, tc.says) {
			t.Errorf("%s: %d %s %q, want %d %s naming %q", tc.what, status, e.Error.Code, e.Error.Message, tc.status, tc.code, tc.says)
		}
	}

	// The CLI: exit status 1 and the reason.
	for _, tc := range []struct {
		what string
		args []string
		says string
	}{
		{"input not JSON", []string{"wf", "start", "killwf/flow", "--id", "bad4", "-i", "{steps:3}"}, "is not JSON"},
		{"unknown workflow", []string{"wf", "start", "killwf/nope", "--id", "bad5"}, `no workflow "nope"`},
		{"no workflow named", []string{"wf", "start", "killwf"}, "APP/WORKFLOW"},
	} {
		if out, err := c.run(tc.args...); err == nil || !strings.Contains(out, tc.says) {
			t.Errorf("nimbus %s (%s): %v, want a failure naming %q\n%s", strings.Join(tc.args, " "), tc.what, err, tc.says, out)
		}
	}

	// JSON of the wrong shape reaches the workflow, which fails the run
	// with the decoding error.
	var shaped struct{ Run struct{ State, Error string } }
	if _, err := api.do("POST", runs, map[string]any{"id": "shape", "input": json.RawMessage(`{"steps":"three"}`), "wait": "30s"}, &shaped); err != nil {
		t.Fatal(err)
	}
	if shaped.Run.State != "failed" || !strings.Contains(shaped.Run.Error, "input") || !strings.Contains(shaped.Run.Error, "steps") {
		t.Errorf("a run of input of the wrong shape: %s %q, want failed naming the input's field", shaped.Run.State, shaped.Run.Error)
	}

	// Control of runs: a second cancel, a signal to a finished run.
	if _, err := api.do("POST", "/api/v1/apps/killwf/runs/nap/cancel", map[string]string{"reason": "test"}, nil); err != nil {
		t.Fatal(err)
	}
	if status, e := raw("POST", "/api/v1/apps/killwf/runs/nap/cancel", `{}`); status != http.StatusConflict || !strings.Contains(e.Error.Message, "nap") {
		t.Errorf("second cancel: %d %+v, want 409 naming the run", status, e)
	}
	if out, err := c.run("wf", "cancel", "killwf", "nap"); err == nil || !strings.Contains(out, "already") {
		t.Errorf("second cancel through the CLI: %v, want a failure saying it is cancelled already\n%s", err, out)
	}
	poll(t, 30*time.Second, func() error {
		var r struct{ State string }
		if _, err := api.do("GET", "/api/v1/apps/killwf/runs/nap", nil, &r); err != nil {
			return err
		}
		if r.State != "cancelled" {
			return fmt.Errorf("nap is %s", r.State)
		}
		return nil
	})
	if status, e := raw("POST", "/api/v1/apps/killwf/runs/nap/signals/go", `1`); status != http.StatusConflict || e.Error.Code != "run_finished" {
		t.Errorf("signal to a cancelled run: %d %+v, want 409 run_finished", status, e)
	}
	if out, err := c.run("wf", "signal", "killwf", "shape", "go"); err == nil || !strings.Contains(out, "failed") {
		t.Errorf("signal to a failed run through the CLI: %v, want a failure saying it failed\n%s", err, out)
	}

	// Nothing lost: the run in flight completed with its three steps, the
	// refused starts made no run, and their ids are free.
	poll(t, 30*time.Second, func() error {
		var r struct {
			State  string
			Result struct{ Revs []uint64 }
		}
		if _, err := api.do("GET", "/api/v1/apps/killwf/runs/keep", nil, &r); err != nil {
			return err
		}
		if r.State != "completed" || len(r.Result.Revs) != 3 {
			return fmt.Errorf("keep is %s with %v", r.State, r.Result.Revs)
		}
		return nil
	})
	var list struct{ Runs []struct{ ID, State string } }
	if _, err := api.do("GET", "/api/v1/apps/killwf/runs?limit=100", nil, &list); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range list.Runs {
		ids = append(ids, r.ID+":"+r.State)
	}
	if got := strings.Join(ids, " "); len(list.Runs) != 3 || !strings.Contains(got, "keep:completed") || !strings.Contains(got, "nap:cancelled") || !strings.Contains(got, "shape:failed") {
		t.Errorf("runs after the refusals: %s, want keep, nap and shape only", got)
	}
	var again struct{ Created bool }
	if _, err := api.do("POST", runs, map[string]any{"id": "bad1", "input": json.RawMessage(`{"steps":1}`)}, &again); err != nil || !again.Created {
		t.Errorf("start bad1 (refused before) with good input: created %v, %v", again.Created, err)
	}
}
