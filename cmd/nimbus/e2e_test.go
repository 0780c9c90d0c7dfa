package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestQuickStart follows the README: `nimbus up examples/hello` on a fresh
// data directory, then the CLI against it, then a restart.
func TestQuickStart(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary and the example guest")
	}
	tmp := t.TempDir()
	c := newCLI(t, tmp)
	data := filepath.Join(tmp, "data")
	example := filepath.Join("..", "..", "examples", "hello")
	up := func() (*exec.Cmd, map[string]string, *syncBuffer) { return c.up(example, data) }
	run := c.run

	srv, f, stderr := up()
	if !strings.HasPrefix(f["admin"], "nmb_") {
		t.Fatalf("first start printed no admin token:\n%s", f["out"])
	}
	if !strings.Contains(stderr.String(), "[activate]") || !strings.Contains(stderr.String(), "[build") {
		t.Errorf("deploy progress missing:\n%s", stderr)
	}
	resp, err := http.Get(f["gateway"] + "/hello/nimbus")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != "hello, nimbus" {
		t.Fatalf("GET /hello/nimbus: %d %q", resp.StatusCode, body)
	}
	// The same greeting from the example's lean-API function.
	resp, err = http.Get(f["gateway"] + "/lean/nimbus")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "hello, nimbus\n" {
		t.Fatalf("GET /lean/nimbus: %d %q", resp.StatusCode, body)
	}

	// The CLI finds the server and token in the config file `up` wrote.
	out, err := run("invoke", "hello/hello", "-d", "world")
	if err != nil || strings.TrimSpace(out) != "world" {
		t.Fatalf("invoke: %v\n%s", err, out)
	}
	// Async: queued, run with retries, its result read back; an
	// idempotency key runs it once.
	out, err = run("invoke", "hello/hello", "--async", "--wait", "--json", "-d", "later")
	var inv struct {
		ID, State string
		Attempts  int
		Body      []byte
	}
	if err != nil || json.Unmarshal([]byte(out), &inv) != nil || inv.State != "succeeded" || string(inv.Body) != "later" {
		t.Fatalf("invoke --async --wait: %v\n%s", err, out)
	}
	out1, err1 := run("invoke", "hello/hello", "--idempotency-key", "k1", "-d", "once")
	out2, err2 := run("invoke", "hello/hello", "--idempotency-key", "k1", "-d", "once")
	id1, _, _ := strings.Cut(out1, "\n")
	if err1 != nil || err2 != nil || !strings.HasPrefix(id1, "inv-") || !strings.HasPrefix(out2, id1+" (already queued") {
		t.Fatalf("idempotency key: %v %v\n%s\n%s", err1, err2, out1, out2)
	}
	if out, err := run("invocation", id1, "--wait"); err != nil || !strings.Contains(out, "succeeded") {
		t.Fatalf("invocation --wait: %v\n%s", err, out)
	}
	out, err = run("ls", "--json")
	if err != nil {
		t.Fatalf("ls: %v\n%s", err, out)
	}
	var apps []struct {
		Name   string `json:"name"`
		Active string `json:"active"`
	}
	if err := json.Unmarshal([]byte(out), &apps); err != nil || len(apps) != 1 || apps[0].Name != "hello" {
		t.Fatalf("ls --json: %v\n%s", err, out)
	}
	out, err = run("deploy", example)
	if err != nil || !strings.Contains(out, "unchanged") {
		t.Fatalf("redeploy of an unchanged app: %v\n%s", err, out)
	}
	// The WAGI example deploys beside it and answers through the gateway.
	out, err = run("deploy", filepath.Join("..", "..", "examples", "wagi"))
	if err != nil || !strings.Contains(out, "deployed wagi") {
		t.Fatalf("deploy examples/wagi: %v\n%s", err, out)
	}
	resp, err = http.Post(f["gateway"]+"/wagi/cgi?x=1", "text/plain", strings.NewReader("ping"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"hello, cgi", "method: POST", "query: x=1", "body: ping"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("WAGI example answer lacks %q:\n%s", want, body)
		}
	}
	// Key-value state: the counter example increments through the SDK, the
	// CLI reads and writes the same bucket.
	out, err = run("deploy", filepath.Join("..", "..", "examples", "counter"))
	if err != nil || !strings.Contains(out, "deployed counter") {
		t.Fatalf("deploy examples/counter: %v\n%s", err, out)
	}
	for want := 1; want <= 3; want++ {
		resp, err := http.Post(f["gateway"]+"/count/visits", "text/plain", nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.TrimSpace(string(b)) != fmt.Sprint(want) {
			t.Fatalf("POST /count/visits #%d: %d %q", want, resp.StatusCode, b)
		}
	}
	if out, err = run("kv", "get", "counter/counts", "count.visits"); err != nil || strings.TrimSpace(out) != "3" {
		t.Fatalf("kv get: %v\n%s", err, out)
	}
	if out, err = run("kv", "put", "counter/counts", "count.visits", "41"); err != nil {
		t.Fatalf("kv put: %v\n%s", err, out)
	}
	if out, err = run("kv", "put", "counter/counts", "count.visits", "0", "--if-revision", "1"); err == nil || !strings.Contains(out, "revision") {
		t.Fatalf("kv put with a stale revision succeeded: %v\n%s", err, out)
	}
	resp, err = http.Post(f["gateway"]+"/count/visits", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.TrimSpace(string(body)) != "42" {
		t.Fatalf("counter after kv put: %q", body)
	}
	if out, err = run("kv", "ls", "counter/counts", "count.", "--json"); err != nil || !strings.Contains(out, `"count.visits"`) {
		t.Fatalf("kv ls: %v\n%s", err, out)
	}
	if out, err = run("kv", "get", "counter/counts", "nope"); err == nil || !strings.Contains(out, "not found") {
		t.Fatalf("kv get of a missing key: %v\n%s", err, out)
	}
	// Events: the orders example counts events in KV through one trigger,
	// dead-letters them through another that always fails, and a bucket
	// trigger on the count copies its latest value.
	out, err = run("deploy", filepath.Join("..", "..", "examples", "orders"))
	if err != nil || !strings.Contains(out, "deployed orders") {
		t.Fatalf("deploy examples/orders: %v\n%s", err, out)
	}
	for i, id := range []string{"o-1", "o-2", "o-1"} {
		out, err := run("publish", "orders/orders", "--type", "order.created", "--id", id, "--subject", "eu/"+id, "-d", `{"total": 12}`)
		if err != nil {
			t.Fatalf("publish %s: %v\n%s", id, err, out)
		}
		if dup := strings.Contains(out, "already published"); dup != (i == 2) {
			t.Fatalf("publish #%d (%s): %s", i, id, out)
		}
	}
	// HTTP -> topic: the place function publishes each order it is posted;
	// a retried request (same Idempotency-Key) is one order.
	for i := range 2 {
		req, _ := http.NewRequest("POST", f["gateway"]+"/orders?customer=eu/o-3", strings.NewReader(`{"total": 30}`))
		req.Header.Set("Idempotency-Key", "o-3")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 202 || !strings.Contains(string(b), fmt.Sprintf(`"duplicate": %t`, i == 1)) {
			t.Fatalf("POST /orders #%d: %d %s", i, resp.StatusCode, b)
		}
	}
	// A CloudEvents client posting straight to the gateway.
	ce, _ := http.NewRequest("POST", f["gateway"]+"/_nimbus/events/orders/orders", strings.NewReader(`{"specversion":"1.0","id":"o-4","source":"/shop"}`))
	ce.Header.Set("Content-Type", "application/cloudevents+json")
	resp, err = http.DefaultClient.Do(ce)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(body), `attribute \"type\"`) {
		t.Fatalf("event without a type: %d %s", resp.StatusCode, body)
	}
	resp, err = http.Post(f["gateway"]+"/_nimbus/events/orders/nope", "application/cloudevents+json",
		strings.NewReader(`{"specversion":"1.0","id":"o-5","source":"/shop","type":"order.created"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 404 || !strings.Contains(string(body), "nope") {
		t.Fatalf("event to an unknown topic: %d %s", resp.StatusCode, body)
	}
	// waitStats polls the orders example's counters until they read want.
	waitStats := func(want, what string) {
		t.Helper()
		poll(t, 60*time.Second, func() error {
			resp, err := http.Get(f["gateway"] + "/orders/stats")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.TrimSpace(string(b)) != want {
				return fmt.Errorf("%s: orders stats %s, want %s", what, b, want)
			}
			return nil
		})
	}
	// seen: a bucket trigger on orders.* copied the latest count.
	waitStats(`{"orders": 3, "dead_letters": 3, "seen": 3}`, "3 delivered, 3 dead letters and 3 seen by the bucket trigger")
	// A write from the CLI reaches the bucket trigger too (docs/kv.md).
	if out, err = run("kv", "put", "orders/counts", "orders.total", "41"); err != nil {
		t.Fatalf("kv put orders.total: %v\n%s", err, out)
	}
	waitStats(`{"orders": 41, "dead_letters": 3, "seen": 41}`, "a kv put never reached the bucket trigger")
	// Dead letters: the three events audit failed are listed with their
	// error and attempts. Replayed, they go back to audit alone (count
	// stays at 3), fail again, and return as three new dead letters.
	dlq := func() []deadLetterRow {
		t.Helper()
		out, err := run("dlq", "ls", "orders", "--json")
		var list struct {
			DeadLetters []deadLetterRow `json:"dead_letters"`
		}
		if err != nil || json.Unmarshal([]byte(out), &list) != nil {
			t.Fatalf("dlq ls --json: %v\n%s", err, out)
		}
		return list.DeadLetters
	}
	first := dlq()
	ids := map[string]bool{}
	for _, d := range first {
		if d.Function != "audit" || d.Topic != "orders" || d.Attempts != 2 || !strings.Contains(d.Error, "audit service unavailable") {
			t.Fatalf("dead letter %+v", d)
		}
		ids[d.ID] = true
	}
	if len(first) != 3 || !ids["o-1"] || !ids["o-2"] || !ids["o-3"] {
		t.Fatalf("dlq ls: %+v, want the dead letters of o-1, o-2 and o-3", first)
	}
	if out, err = run("dlq", "ls", "orders"); err != nil || !strings.Contains(out, "SEQ") || !strings.Contains(out, "audit/") {
		t.Fatalf("dlq ls: %v\n%s", err, out)
	}
	if out, err = run("dlq", "replay", "orders", "--all"); err != nil || !strings.Contains(out, "replayed 3 ") {
		t.Fatalf("dlq replay --all: %v\n%s", err, out)
	}
	waitStats(`{"orders": 41, "dead_letters": 6, "seen": 41}`, "after the replay, 6 dead letters (count and seen unchanged)")
	var again []deadLetterRow
	poll(t, 60*time.Second, func() error {
		if again = dlq(); len(again) < 3 {
			return fmt.Errorf("%d dead letters after the replay, want 3: %+v", len(again), again)
		}
		return nil
	})
	if len(again) != 3 || again[0].Seq <= first[2].Seq {
		t.Fatalf("dead letters after the replay: %+v (before: %+v)", again, first)
	}
	if out, err = run("dlq", "replay", "orders", fmt.Sprint(first[0].Seq)); err == nil || !strings.Contains(out, "not found") {
		t.Fatalf("replay of a replayed dead letter: %v\n%s", err, out)
	}
	out, err = run("logs", "hello", "--json")
	if err != nil || !strings.Contains(out, `"invocation"`) {
		t.Fatalf("logs: %v\n%s", err, out)
	}
	for _, c := range []string{"new", "up", "validate", "deploy", "ls", "rollback", "invoke", "invocation", "logs", "kv", "publish", "dlq", "dlq ls", "dlq replay", "delete", "token", "token create", "token ls", "token revoke", "version"} {
		out, err := run(append(strings.Fields(c), "--help")...)
		if err != nil || !strings.Contains(out, "Examples:") {
			t.Errorf("%s --help has no example: %v\n%s", c, err, out)
		}
	}

	// Ctrl-C stops it cleanly; a restart serves the same revision without
	// rebuilding and prints no new token.
	srv.Process.Signal(syscall.SIGINT)
	if err := srv.Wait(); err != nil {
		t.Fatalf("nimbus up did not exit cleanly on SIGINT: %v\n%s", err, stderr)
	}
	_, f2, stderr2 := up()
	if f2["admin"] != "" {
		t.Errorf("restart printed a new admin token")
	}
	if strings.Contains(stderr2.String(), "[build") {
		t.Errorf("restart rebuilt the app:\n%s", stderr2)
	}
	out, err = run("invoke", "hello/hello", "-d", "again")
	if err != nil || strings.TrimSpace(out) != "again" {
		t.Fatalf("invoke after restart: %v\n%s", err, out)
	}
}

// TestValidateReportsPosition: `nimbus validate --json` names the field of
// a manifest problem, and of a problem only a deploy's checks see (a route
// over the model's length limit) the function it is about.
func TestValidateReportsPosition(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ fields, field string }{
		{"memory: lots", "functions.f.memory"},
		{"routes: [/" + strings.Repeat("a", 1100) + "]", "functions.f"},
	} {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "nimbus.yaml"), []byte("app: demo\nfunctions:\n  f:\n    module: f.wasm\n    "+tc.fields+"\n"), 0o644)
		cmd := newRoot()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs([]string{"validate", dir, "--json"})
		stdout := os.Stdout
		r, w, _ := os.Pipe()
		os.Stdout = w
		err := cmd.Execute()
		w.Close()
		os.Stdout = stdout
		got, _ := io.ReadAll(r)
		if err == nil {
			t.Fatalf("validate accepted a bad manifest (%s)", tc.field)
		}
		var res struct {
			Valid  bool `json:"valid"`
			Errors []struct {
				Field string `json:"field"`
			} `json:"errors"`
		}
		if err := json.Unmarshal(got, &res); err != nil {
			t.Fatalf("validate --json output: %v\n%s", err, got)
		}
		if res.Valid || len(res.Errors) != 1 || res.Errors[0].Field != tc.field {
			t.Fatalf("validate --json: %s, want one error at %s", got, tc.field)
		}
	}
}

// deadLetterRow is what the e2e test reads of `nimbus dlq ls --json`.
type deadLetterRow struct {
	Seq      uint64 `json:"seq"`
	ID       string `json:"id"`
	Function string `json:"function"`
	Topic    string `json:"topic"`
	Error    string `json:"error"`
	Attempts int    `json:"attempts"`
}

// syncBuffer is a bytes.Buffer that a child process writes while the test
// reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
