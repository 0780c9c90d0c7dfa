package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLambdaExamples runs `nimbus up examples/lambda-go`: an unmodified
// aws-lambda-go function (lambda.Start), built by its build step in its
// own module, called through a route (an API Gateway 2.0 event) and with
// `nimbus invoke` (the raw payload), and failing both ways. Then it
// deploys examples/lambda-python, a custom runtime bootstrap, and calls it
// the same ways. The examples run sandboxed, so the host must allow it.
func TestLambdaExamples(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary and the example, starts processes")
	}
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("no python3")
	}
	tmp := t.TempDir()
	c := newCLI(t, tmp)
	examples := filepath.Join("..", "..", "examples")
	_, f, stderr := c.up(filepath.Join(examples, "lambda-go"), filepath.Join(tmp, "data"))
	if strings.Contains(stderr.String(), "cannot sandbox") {
		t.Skipf("host cannot sandbox processes:\n%s", stderr)
	}
	get := func(path string) (int, http.Header, []byte) {
		t.Helper()
		resp, err := http.Get(f["gateway"] + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, resp.Header, body
	}

	status, h, body := get("/lambda/you?x=1")
	var got map[string]any
	if status != 200 || h.Get("X-Lambda") != "yes" || json.Unmarshal(body, &got) != nil {
		t.Fatalf("GET /lambda/you: %d %v %s\nstderr:\n%s", status, h, body, stderr)
	}
	if got["greeting"] != "hello from lambda, you" || got["method"] != "GET" || got["path"] != "/lambda/you" ||
		got["routeKey"] != "GET /lambda/{name}" || got["function"] != "lambda-go-api" || got["memoryMB"] != 64.0 ||
		got["region"] != "us-east-1" || got["hasTraceId"] != true || got["requestId"] != h.Get("X-Nimbus-Invocation-Id") {
		t.Errorf("GET /lambda/you: %v (invocation %s)", got, h.Get("X-Nimbus-Invocation-Id"))
	}
	if q, _ := got["query"].(map[string]any); q["x"] != "1" {
		t.Errorf("query %v", got["query"])
	}
	status, h, body = get("/lambda/fail")
	if status != 502 || string(body) != `{"message":"Internal Server Error"}` || h.Get("X-Amz-Function-Error") != "errorString" {
		t.Errorf("GET /lambda/fail: %d %v %s", status, h, body)
	}

	out, err := c.run("invoke", "lambda-go/greet", "-d", `{"name":"nimbus"}`)
	if err != nil || !strings.Contains(out, `"message":"hello nimbus"`) {
		t.Fatalf("invoke greet: %v\n%s", err, out)
	}
	out, err = c.run("invoke", "lambda-go/greet", "-d", `{}`)
	if err == nil || !strings.Contains(out, `{"errorMessage":"name is required","errorType":"errorString"`) || !strings.Contains(out, "function answered 502") {
		t.Fatalf("invoke greet without a name: %v\n%s", err, out)
	}
	// The failure is in the function's log, tagged with its invocation.
	deadline := time.Now().Add(10 * time.Second)
	for {
		logs, _ := c.run("logs", "lambda-go/greet")
		if strings.Contains(logs, "name is required") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line of the failed invocation:\n%s", logs)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// A custom runtime: the Runtime API loop in a Python script.
	if out, err := c.run("deploy", filepath.Join(examples, "lambda-python")); err != nil || !strings.Contains(out, "deployed lambda-python") {
		t.Fatalf("deploy lambda-python: %v\n%s", err, out)
	}
	status, _, body = get("/pylambda/py")
	if status != 200 || !strings.Contains(string(body), `"greeting": "hello py"`) {
		t.Fatalf("GET /pylambda/py: %d %s\nstderr:\n%s", status, body, stderr)
	}
	out, err = c.run("invoke", "lambda-python/greet", "-d", `{"name":"snake"}`)
	if err != nil || !strings.Contains(out, `"greeting": "hello snake"`) {
		t.Fatalf("invoke lambda-python/greet: %v\n%s", err, out)
	}
	out, err = c.run("invoke", "lambda-python/greet", "-d", `{}`)
	if err == nil || !strings.Contains(out, `"errorMessage":"name is required","errorType":"ValueError"`) {
		t.Fatalf("invoke lambda-python/greet without a name: %v\n%s", err, out)
	}
}
