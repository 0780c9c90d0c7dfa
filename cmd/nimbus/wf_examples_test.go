package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestWorkflowExamples deploys examples/checkout and examples/approval on
// a real `nimbus up` and drives them with the CLI and the gateway as
// docs/workflows.md does: a checkout that completes, one whose shipment
// fails (refund, then release) and one whose charge fails (release);
// an approval that waits for its signal, one that expires, one
// cancelled; and the refusals: a signal to a finished or unknown run, a
// second cancel.
func TestWorkflowExamples(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary and two example guests")
	}
	tmp := t.TempDir()
	c := newCLI(t, tmp)
	data := filepath.Join(tmp, "data")
	examples := filepath.Join("..", "..", "examples")
	_, f, _ := c.up(filepath.Join(examples, "checkout"), data)
	if out, err := c.run("deploy", filepath.Join(examples, "approval")); err != nil {
		t.Fatalf("deploy examples/approval: %v\n%s", err, out)
	}

	type run struct {
		ID, State, Error string
		Result           json.RawMessage
		Timeline         []struct{ Type, Name string }
	}
	show := func(app, id string) run {
		t.Helper()
		out, err := c.run("wf", "show", app, id, "--json")
		var r run
		if err != nil || json.Unmarshal([]byte(out), &r) != nil {
			t.Fatalf("wf show %s %s: %v\n%s", app, id, err, out)
		}
		var compact bytes.Buffer
		if json.Compact(&compact, r.Result) == nil {
			r.Result = compact.Bytes()
		}
		return r
	}
	steps := func(r run) string {
		var s []string
		for _, e := range r.Timeline {
			if e.Type == "step" {
				s = append(s, e.Name)
			}
		}
		return strings.Join(s, " ")
	}
	keys := func(order string) string {
		out, err := c.run("kv", "ls", "checkout/orders", order+".")
		if err != nil {
			t.Fatalf("kv ls: %v\n%s", err, out)
		}
		return strings.Join(strings.Fields(out), " ")
	}

	// Checkout: the happy path, then a shipment that fails for good.
	out, err := c.run("wf", "start", "checkout/checkout", "--id", "o-1", "-i", `{"order":"o-1","amount":42}`, "--wait", "30s")
	if err != nil || !strings.Contains(out, "completed") || !strings.Contains(out, `"shipment": "o-1-shipped"`) {
		t.Fatalf("checkout o-1: %v\n%s", err, out)
	}
	out, err = c.run("wf", "start", "checkout/checkout", "--id", "o-2", "-i", `{"order":"o-2","amount":42,"fail":"ship"}`, "--wait", "30s")
	if err == nil || !strings.Contains(out, "failed") || !strings.Contains(out, "carrier unavailable") {
		t.Fatalf("checkout o-2 (ship fails): want exit 1 and the error: %v\n%s", err, out)
	}
	if got := steps(show("checkout", "o-2")); got != "reserve charge ship nimbus.compensate:refund nimbus.compensate:release" {
		t.Errorf("o-2 steps: %s", got)
	}
	if got := keys("o-2"); got != "o-2.charged o-2.refunded o-2.released o-2.reserved" {
		t.Errorf("o-2 effects: %s", got)
	}
	// A retry of a run whose compensations ran, or of a completed run, is
	// refused and changes nothing.
	if out, err := c.run("wf", "retry", "checkout", "o-2"); err == nil || !strings.Contains(out, `compensation "refund"`) {
		t.Errorf("wf retry of a compensated run: want exit 1 naming the compensation: %v\n%s", err, out)
	}
	if out, err := c.run("wf", "retry", "checkout", "o-1"); err == nil || !strings.Contains(out, "only a failed run") {
		t.Errorf("wf retry of a completed run: want exit 1 and why: %v\n%s", err, out)
	}
	if r := show("checkout", "o-2"); r.State != "failed" {
		t.Errorf("o-2 after refused retries: %s", r.State)
	}
	// Through the gateway's route: the charge is declined.
	req, _ := http.NewRequest("POST", f["gateway"]+"/checkout", strings.NewReader(`{"order":"o-3","amount":7,"fail":"charge"}`))
	req.Header.Set("Nimbus-Run-Id", "o-3")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(string(b), "card declined") {
		t.Fatalf("POST /checkout (charge fails): %d %s", resp.StatusCode, b)
	}
	if got := keys("o-3"); got != "o-3.released o-3.reserved" {
		t.Errorf("o-3 effects: %s", got)
	}

	// Approval: waits for its signal, holding no instance.
	for _, id := range []string{"req-1", "req-2"} {
		if out, err := c.run("wf", "start", "approval/approve", "--id", id, "-i", `{"request":"`+id+`","amount":900}`); err != nil {
			t.Fatalf("start %s: %v\n%s", id, err, out)
		}
	}
	poll(t, 30*time.Second, func() error {
		out, err := c.run("wf", "ls", "approval", "--state", "waiting", "--json")
		if err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		var runs []run
		if err := json.Unmarshal([]byte(out), &runs); err != nil || len(runs) != 2 {
			return fmt.Errorf("waiting runs: %s", out)
		}
		return nil
	})
	if out, err := c.run("wf", "revisions", "approval"); err != nil || !regexp.MustCompile(`(?m)^\S+\s+approve\s+2$`).MatchString(out) {
		t.Errorf("wf revisions approval: want approve with 2 runs in flight: %v\n%s", err, out)
	}
	if out, err := c.run("wf", "signal", "approval", "req-1", "approval", "-d", `{"approved":true,"by":"ana"}`); err != nil {
		t.Fatalf("signal: %v\n%s", err, out)
	}
	poll(t, 30*time.Second, func() error {
		if r := show("approval", "req-1"); r.State != "completed" || string(r.Result) != `{"request":"req-1","decision":"approved","by":"ana"}` {
			return fmt.Errorf("req-1 %s %s", r.State, r.Result)
		}
		return nil
	})
	if out, err := c.run("kv", "get", "approval/requests", "req-1"); err != nil || strings.TrimSpace(out) != "approved" {
		t.Errorf("request state: %v %s", err, out)
	}
	if out, err := c.run("wf", "signal", "approval", "req-1", "approval", "-d", `{"approved":false}`); err == nil || !strings.Contains(out, "completed") || !strings.Contains(out, "no more signals") {
		t.Errorf("signal to a finished run: want exit 1 and why: %v\n%s", err, out)
	}
	if out, err := c.run("wf", "signal", "approval", "nope", "approval"); err == nil || !strings.Contains(out, `no run "nope"`) {
		t.Errorf("signal to an unknown run: want exit 1 and why: %v\n%s", err, out)
	}
	if out, err := c.run("wf", "cancel", "approval", "req-2", "--reason", "withdrawn"); err != nil || !strings.Contains(out, "cancelling") {
		t.Fatalf("cancel: %v\n%s", err, out)
	}
	poll(t, 30*time.Second, func() error {
		if r := show("approval", "req-2"); r.State != "cancelled" {
			return fmt.Errorf("req-2 %s", r.State)
		}
		return nil
	})
	if out, err := c.run("wf", "cancel", "approval", "req-2"); err == nil || !strings.Contains(out, "cancelled already") {
		t.Errorf("second cancel: want exit 1 and why: %v\n%s", err, out)
	}
	// Pause and resume through the CLI: paused twice is refused.
	if out, err := c.run("wf", "start", "approval/approve", "--id", "req-4", "-i", `{"request":"req-4"}`); err != nil {
		t.Fatalf("start req-4: %v\n%s", err, out)
	}
	if out, err := c.run("wf", "pause", "approval", "req-4"); err != nil || !strings.Contains(out, "paused") {
		t.Fatalf("pause: %v\n%s", err, out)
	}
	if out, err := c.run("wf", "pause", "approval", "req-4"); err == nil || !strings.Contains(out, "paused already") {
		t.Errorf("second pause: want exit 1 and why: %v\n%s", err, out)
	}
	if out, err := c.run("wf", "resume", "approval", "req-4", "--json"); err != nil || !strings.Contains(out, `"state": "running"`) {
		t.Fatalf("resume: %v\n%s", err, out)
	}
	if out, err := c.run("wf", "signal", "approval", "req-4", "approval", "-d", `{"approved":false,"by":"bo"}`); err != nil {
		t.Fatalf("signal req-4: %v\n%s", err, out)
	}
	poll(t, 30*time.Second, func() error {
		if r := show("approval", "req-4"); r.State != "completed" || string(r.Result) != `{"request":"req-4","decision":"rejected","by":"bo"}` {
			return fmt.Errorf("req-4 %s %s", r.State, r.Result)
		}
		return nil
	})
	out, err = c.run("wf", "start", "approval/approve", "--id", "req-3", "-i", `{"request":"req-3","timeout_s":1}`, "--wait", "30s")
	if err != nil || !strings.Contains(out, `"decision": "expired"`) {
		t.Errorf("approval without a signal: want expired: %v\n%s", err, out)
	}
}
