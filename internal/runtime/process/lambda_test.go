package process

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime"
)

// The Lambda contract's tests run testdata/lambda/bootstrap: a custom
// runtime in Python (stdlib only) that implements the Runtime API loop.
// The unmodified aws-lambda-go function is cmd/nimbus's end-to-end test
// (examples/lambda-go).

func lambdaSpec(t *testing.T, sandbox bool, mutate ...func(*runtime.Spec)) runtime.Spec {
	t.Helper()
	if _, err := exec.LookPath("/usr/bin/python3"); err != nil {
		t.Skip("no /usr/bin/python3")
	}
	return spec(t, sandbox, append([]func(*runtime.Spec){func(s *runtime.Spec) {
		s.Artifact = tarDir(t, filepath.Join("testdata", "lambda"))
		s.Process.Command = []string{"./bootstrap"}
		s.Process.Contract = model.ContractLambda
	}}, mutate...)...)
}

// invoke sends a raw payload, as `nimbus invoke` and event triggers do.
func invoke(t *testing.T, inst runtime.Instance, payload string, log runtime.LogSink) (*runtime.Response, error) {
	t.Helper()
	return inst.Handle(context.Background(), &runtime.Request{Method: "POST", Path: "/", Body: []byte(payload),
		Header: http.Header{}, InvocationID: "0123456789abcdef0123456789abcdef",
		TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", Log: log})
}

// TestLambdaContract: a custom runtime gets the Lambda environment and
// the invocation headers, answers raw payloads, reports a handler error
// (the Lambda error shape, 502, a log line) and goes on serving.
func TestLambdaContract(t *testing.T) {
	t.Setenv("NIMBUS_NODE_SECRET", "must-not-leak")
	modes(t, func(t *testing.T, sandbox bool) {
		rt := newRuntime(t)
		m := load(t, rt, lambdaSpec(t, sandbox))
		if m.Contract() != runtime.ContractLambda || m.MaxConcurrency() != 1 || !m.Reusable() {
			t.Fatalf("contract %s, max concurrency %d, reusable %v", m.Contract(), m.MaxConcurrency(), m.Reusable())
		}
		inst := start(t, m)
		before := time.Now()
		resp, err := invoke(t, inst, `{"op":"echo","n":1}`, nil)
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Event   map[string]any
			Headers map[string]string
			Env     map[string]string
		}
		if resp.Status != 200 || resp.Header.Get("Content-Type") != "application/json" || json.Unmarshal(resp.Body, &got) != nil {
			t.Fatalf("echo: %d %v %s", resp.Status, resp.Header, resp.Body)
		}
		if got.Event["op"] != "echo" || got.Event["n"] != 1.0 {
			t.Errorf("event %v, want the raw payload", got.Event)
		}
		h := http.Header{}
		for k, v := range got.Headers {
			h.Set(k, v)
		}
		deadline, _ := strconv.ParseInt(h.Get(hdrDeadline), 10, 64)
		if h.Get(hdrRequestID) != "0123456789abcdef0123456789abcdef" ||
			h.Get(hdrFunctionARN) != "arn:aws:lambda:us-east-1:000000000000:function:app-fn" ||
			h.Get(hdrTraceID) != "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1" ||
			deadline < before.Add(4*time.Second).UnixMilli() || deadline > time.Now().Add(5*time.Second).UnixMilli() {
			t.Errorf("invocation headers %v", got.Headers)
		}
		want := map[string]string{
			"AWS_LAMBDA_FUNCTION_NAME": "app-fn", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "64", "AWS_REGION": "us-east-1",
			"AWS_LAMBDA_FUNCTION_VERSION": "abababababab", "_HANDLER": "bootstrap", "TZ": ":UTC", "GREETING": "hello", "PATH": Path,
		}
		if sandbox {
			want["AWS_LAMBDA_RUNTIME_API"] = LambdaRuntimeAPIAddr
		}
		for k, v := range want {
			if got.Env[k] != v {
				t.Errorf("env %s=%q, want %q", k, got.Env[k], v)
			}
		}
		if got.Env["LAMBDA_TASK_ROOT"] == "" || got.Env["AWS_LAMBDA_RUNTIME_API"] == "" || got.Env["PORT"] != "" {
			t.Errorf("env %v", got.Env)
		}
		for k, v := range got.Env {
			if strings.Contains(v, "must-not-leak") {
				t.Errorf("the node's environment leaked: %s", k)
			}
		}

		logs := &sink{}
		resp, err = invoke(t, inst, `{"op":"fail"}`, logs)
		if err != nil {
			t.Fatal(err)
		}
		var le LambdaError
		if resp.Status != 502 || resp.Header.Get(HeaderFunctionError) != "TestError" || json.Unmarshal(resp.Body, &le) != nil ||
			le.ErrorMessage != "failed as asked" || le.ErrorType != "TestError" || string(le.StackTrace) != `["bootstrap:1"]` {
			t.Fatalf("handler error: %d %v %s", resp.Status, resp.Header, resp.Body)
		}
		if !logs.has(`log: lambda function error: {"errorMessage":"failed as asked","errorType":"TestError","stackTrace":["bootstrap:1"]}`) {
			t.Errorf("log of the failed invocation: %q", logs.lines)
		}
		// The process stays: the next invocation is served by it.
		resp, err = invoke(t, inst, `{"op":"wrongid"}`, nil)
		if err != nil || string(resp.Body) != `{"wrongid": 400}` {
			t.Fatalf("after the error: %v %s", err, resp.Body)
		}
	})
}

// TestLambdaAPIGateway: a routed request reaches the runtime as an API
// Gateway 2.0 event, and its proxy response becomes the HTTP answer.
func TestLambdaAPIGateway(t *testing.T) {
	rt := newRuntime(t)
	inst := start(t, load(t, rt, lambdaSpec(t, false)))
	route := func(method, path, body string, h http.Header, log runtime.LogSink) *runtime.Response {
		t.Helper()
		p, q, _ := strings.Cut(path, "?")
		resp, err := inst.Handle(context.Background(), &runtime.Request{
			Method: method, Path: p, RawQuery: q, Header: h, Host: "api.example.test:8080", RemoteAddr: "127.0.0.9:4000",
			Body: []byte(body), Route: method + " /items/{id}", Params: map[string]string{"id": strings.TrimPrefix(p, "/items/")},
			InvocationID: "inv1", Log: log,
		})
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		return resp
	}
	resp := route("POST", "/items/a b?x=1&x=2&y=3", "héllo", http.Header{"Content-Type": {"text/plain"}, "Cookie": {"c1=1; c2=2"},
		"X-Multi": {"a", "b"}, "User-Agent": {"test"}}, nil)
	if resp.Status != 201 || resp.Header.Get("X-From") != "lambda" || resp.Header.Get("Set-Cookie") != "a=1" {
		t.Fatalf("proxy response: %d %v %s", resp.Status, resp.Header, resp.Body)
	}
	var got struct {
		Event   apiGatewayV2Request
		Headers map[string]string
	}
	if err := json.Unmarshal(resp.Body, &got); err != nil {
		t.Fatal(err)
	}
	e := got.Event
	if e.Version != "2.0" || e.RouteKey != "POST /items/{id}" || e.RawPath != "/items/a%20b" || e.RawQueryString != "x=1&x=2&y=3" ||
		e.QueryStringParameters["x"] != "1,2" || e.PathParameters["id"] != "a b" || e.Body != "héllo" || e.IsBase64Encoded ||
		strings.Join(e.Cookies, ";") != "c1=1;c2=2" || e.Headers["x-multi"] != "a,b" || e.Headers["cookie"] != "" ||
		e.Headers["host"] != "api.example.test:8080" || e.RequestContext.HTTP.Method != "POST" || e.RequestContext.HTTP.SourceIP != "127.0.0.9" ||
		e.RequestContext.HTTP.UserAgent != "test" || e.RequestContext.RequestID != "inv1" || e.RequestContext.Stage != "$default" ||
		e.RequestContext.DomainPrefix != "api" {
		t.Errorf("event %+v", e)
	}

	resp = route("PUT", "/items/bin", "\xff\x00", http.Header{"Content-Type": {"application/octet-stream"}}, nil)
	if err := json.Unmarshal(resp.Body, &got); err != nil || !got.Event.IsBase64Encoded || got.Event.Body != base64.StdEncoding.EncodeToString([]byte("\xff\x00")) {
		t.Errorf("binary body: %v %+v", err, got.Event)
	}

	resp = route("GET", "/items/plain", "", nil, nil)
	if resp.Status != 200 || resp.Header.Get("Content-Type") != "application/json" || string(resp.Body) != `{"plain": true}` {
		t.Errorf("JSON without statusCode: %d %v %s", resp.Status, resp.Header, resp.Body)
	}
	logs := &sink{}
	resp = route("GET", "/items/bad", "", nil, logs)
	if resp.Status != 502 || string(resp.Body) != `{"message":"Internal Server Error"}` || !strings.Contains(strings.Join(logs.lines, "\n"), "malformed Lambda proxy response") {
		t.Errorf("not JSON: %d %s %q", resp.Status, resp.Body, logs.lines)
	}
	logs = &sink{}
	resp = route("GET", "/items/fail", "", nil, logs)
	if resp.Status != 502 || string(resp.Body) != `{"message":"Internal Server Error"}` || resp.Header.Get(HeaderFunctionError) != "TestError" ||
		!strings.Contains(strings.Join(logs.lines, "\n"), `"errorMessage":"failed on /items/fail"`) {
		t.Errorf("handler error through a route: %d %s %q", resp.Status, resp.Body, logs.lines)
	}
}

// TestLambdaFailures: past the timeout the process is killed; a process
// that exits mid-invocation, an answer over the response cap and an init
// error each fail with what happened.
func TestLambdaFailures(t *testing.T) {
	rt := newRuntime(t)
	m := load(t, rt, lambdaSpec(t, false, func(s *runtime.Spec) {
		s.Limits.Timeout = time.Second
		s.Limits.MaxResponseBytes = 1000
	}))

	inst := start(t, m)
	p := inst.(*instance).p
	_, err := invoke(t, inst, `{"op":"sleep"}`, nil)
	if !errors.Is(err, runtime.ErrTimeout) {
		t.Fatalf("sleep: %v, want ErrTimeout", err)
	}
	eventually(t, 5*time.Second, "the stuck process is killed", p.hasExited)

	_, err = invoke(t, start(t, m), `{"op":"exit"}`, nil)
	if !errors.Is(err, runtime.ErrGuestFailed) || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("exit: %v", err)
	}
	_, err = invoke(t, start(t, m), `{"op":"big","n":1001}`, nil)
	if !errors.Is(err, runtime.ErrResponseTooLarge) {
		t.Fatalf("big: %v", err)
	}
	if resp, err := invoke(t, start(t, m), `{"op":"big","n":1000}`, nil); err != nil || len(resp.Body) != 1000 {
		t.Fatalf("at the cap: %v", err)
	}

	bad := load(t, rt, lambdaSpec(t, false, func(s *runtime.Spec) { s.Env = map[string]string{"INIT_FAIL": "1"} }))
	_, err = bad.NewInstance(context.Background())
	if !errors.Is(err, runtime.ErrGuestFailed) || !strings.Contains(err.Error(), "Runtime.InitTest: cannot init") {
		t.Fatalf("init error: %v", err)
	}
}

func TestAPIGatewayResponse(t *testing.T) {
	for _, tc := range []struct {
		in, status, body, header string
		err                      bool
	}{
		{in: `{"statusCode":404,"body":"nope","headers":{"Content-Type":"text/plain"}}`, status: "404", body: "nope", header: "text/plain"},
		{in: `{"statusCode":200,"body":"aGk=","isBase64Encoded":true}`, status: "200", body: "hi", header: "application/json"},
		{in: `"just a string"`, status: "200", body: `"just a string"`, header: "application/json"},
		{in: `{"message":"no status"}`, status: "200", body: `{"message":"no status"}`, header: "application/json"},
		{in: `{"statusCode":700}`, err: true},
		{in: `{"statusCode":"200"}`, err: true},
		{in: `{"statusCode":200,"body":"!","isBase64Encoded":true}`, err: true},
		{in: `nope`, err: true},
	} {
		resp, err := apiGatewayResponse([]byte(tc.in))
		if tc.err {
			if err == nil {
				t.Errorf("%s: want an error, got %d %s", tc.in, resp.Status, resp.Body)
			}
			continue
		}
		if err != nil || strconv.Itoa(resp.Status) != tc.status || string(resp.Body) != tc.body || resp.Header.Get("Content-Type") != tc.header {
			t.Errorf("%s: %v %+v", tc.in, err, resp)
		}
	}
	if got := xrayTraceID("garbage"); got != "" {
		t.Errorf("xrayTraceID(garbage) = %q", got)
	}
	if got := lambdaRequestID("../x"); len(got) != 32 {
		t.Errorf("lambdaRequestID of an unsafe id = %q", got)
	}
}
