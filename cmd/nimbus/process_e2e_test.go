package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestProcessExamples runs `nimbus up examples/process-python`, deploys
// the Node and Go examples beside it with `nimbus deploy` (the Go one is
// built natively by its build step), and calls each through the gateway.
// The examples run sandboxed, so the host must allow it (root, namespaces,
// cgroups); otherwise the node refuses them and the test says why.
func TestProcessExamples(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary, starts processes")
	}
	for _, bin := range []string{"python3", "node"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("no %s", bin)
		}
	}
	tmp := t.TempDir()
	c := newCLI(t, tmp)
	examples := filepath.Join("..", "..", "examples")
	// One waiting request per app (--max-waiting 2), for the check of
	// requests past a busy function's capacity below.
	_, f, stderr := c.up(filepath.Join(examples, "process-python"), filepath.Join(tmp, "data"), "--max-waiting", "2")
	if strings.Contains(stderr.String(), "cannot sandbox") {
		t.Skipf("host cannot sandbox processes:\n%s", stderr)
	}
	for _, app := range []string{"process-node", "process-go"} {
		if out, err := c.run("deploy", filepath.Join(examples, app)); err != nil || !strings.Contains(out, "deployed "+app) {
			t.Fatalf("deploy %s: %v\n%s", app, err, out)
		}
	}
	for _, tc := range []struct{ path, runtime, greeting string }{
		{"/python/x", "python", "hello from python"},
		{"/node/x", "node", "hello from node"},
		{"/go/x", "go", "hello from go"},
	} {
		resp, err := http.Get(f["gateway"] + tc.path + "?q=1")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var got map[string]string
		if resp.StatusCode != 200 || json.Unmarshal(body, &got) != nil {
			t.Fatalf("GET %s: %d %s\nstderr:\n%s", tc.path, resp.StatusCode, body, stderr)
		}
		if got["runtime"] != tc.runtime || got["greeting"] != tc.greeting || got["path"] != tc.path+"?q=1" || got["invocation"] == "" {
			t.Errorf("GET %s: %v", tc.path, got)
		}
	}
	// The Python example counts in KV through the platform API, within its
	// grant (kv:counts); another bucket is refused.
	for want := 1; want <= 2; want++ {
		if got := getBody(t, f["gateway"]+"/python/count/visits"); got != fmt.Sprintf(`{"name": "visits", "count": %d}`, want) {
			t.Fatalf("count %d: %s\nstderr:\n%s", want, got, stderr)
		}
	}
	if got := getBody(t, f["gateway"]+"/python/kv/orders/x"); !strings.Contains(got, `"error":"denied"`) || !strings.Contains(got, "kv:orders") {
		t.Fatalf("ungranted bucket: %s", got)
	}
	// A client that hangs up before the answer costs the process only that
	// request's connection: the next request is served by the same
	// instance, with no new cold start.
	colds := func() string {
		for _, l := range strings.Split(getBody(t, f["API"]+"/metrics"), "\n") {
			if strings.HasPrefix(l, `nimbus_cold_start_duration_seconds_count{app="process-python"`) {
				return l
			}
		}
		return "none"
	}
	before := colds()
	impatient := &http.Client{Timeout: 200 * time.Millisecond}
	if resp, err := impatient.Get(f["gateway"] + "/python/sleep/2000"); err == nil {
		resp.Body.Close()
		t.Fatalf("GET /python/sleep/2000 answered %d within 200ms", resp.StatusCode)
	}
	if got := getBody(t, f["gateway"]+"/python/x"); !strings.Contains(got, "hello from python") {
		t.Fatalf("after a client hung up: %s", got)
	}
	if after := colds(); after != before {
		t.Fatalf("a client that hung up cost a new instance: cold starts %q, then %q\nstderr:\n%s", before, after, stderr)
	}
	// Past the function's capacity (4 instances of 8 requests) and the
	// one request the app may have waiting, requests are answered 503 busy
	// at once; every other one is served, and the requests that start the
	// instances do not count as waiting (the capacity is used whole).
	var wg sync.WaitGroup
	statuses := make(chan string, 40)
	for range 40 {
		wg.Go(func() {
			resp, err := http.Get(f["gateway"] + "/python/sleep/5000")
			if err != nil {
				statuses <- err.Error()
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			switch {
			case resp.StatusCode == 200:
				statuses <- "200"
			case resp.StatusCode == 503 && resp.Header.Get("Retry-After") == "1" && strings.Contains(string(body), `"code":"busy"`) &&
				strings.Contains(string(body), "--max-waiting"):
				statuses <- "503 busy"
			default:
				statuses <- fmt.Sprintf("%d %s", resp.StatusCode, body)
			}
		})
	}
	wg.Wait()
	close(statuses)
	counts := map[string]int{}
	for s := range statuses {
		counts[s]++
	}
	if counts["200"]+counts["503 busy"] != 40 || counts["200"] < 32 || counts["503 busy"] < 40-32-1 {
		t.Fatalf("40 requests at once to a function of 32 slots, one waiter allowed: %v", counts)
	}
	// `nimbus invoke` reaches a process function too.
	if out, err := c.run("invoke", "process-node/hello"); err != nil || !strings.Contains(out, `"runtime":"node"`) {
		t.Fatalf("invoke process-node/hello: %v\n%s", err, out)
	}
}

// getBody GETs url and returns its body.
func getBody(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
