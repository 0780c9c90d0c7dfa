package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/apierror"
	"github.com/nimbus-dev/nimbus/internal/events"
	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
	"github.com/nimbus-dev/nimbus/internal/guestlog"
	"github.com/nimbus-dev/nimbus/internal/guesttest"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/registry"
	"github.com/nimbus-dev/nimbus/internal/security"
	"github.com/nimbus-dev/nimbus/internal/server"
	"github.com/nimbus-dev/nimbus/internal/state"
)

// cacheDir is the compilation cache shared by every server of the test
// binaries (guesttest.WazeroCacheDir): compiling a Go guest is the slowest
// part of a start, and sharing the cache is what a restart does anyway.
var cacheDir = guesttest.WazeroCacheDir()

func start(t *testing.T, dataDir string) *server.Server {
	t.Helper()
	return startConfig(t, func(c *server.Config) { c.DataDir = dataDir })
}

// startConfig starts a node as start does (a fresh data directory), with
// change applied to its configuration.
func startConfig(t *testing.T, change func(*server.Config)) *server.Server {
	t.Helper()
	cfg := server.Config{
		CacheDir:  cacheDir,
		Listen:    "127.0.0.1:0",
		APIListen: "127.0.0.1:0",
		Version:   "test",
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	change(&cfg)
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	srv, err := server.Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Cleanup(func() { srv.Close(context.Background()) })
	return srv
}

// fn is a function of a test deploy.
func fn(name string, wasm []byte, routes ...string) model.Function {
	f := model.Function{
		Name: name, Runtime: "wasm", Module: sha(wasm),
		MemoryBytes: 64 << 20, TimeoutMS: 5000, Concurrency: 1, MaxInstances: 4,
		MaxRequestBytes: 1 << 20, MaxResponseBytes: 1 << 20,
		Capabilities: []string{"log"},
	}
	for _, r := range routes {
		method, path, ok := strings.Cut(r, " ")
		if !ok {
			method, path = "", r
		}
		f.Routes = append(f.Routes, model.Route{Method: method, Path: path})
	}
	return f
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func deploy(t *testing.T, srv *server.Server, app string, modules [][]byte, fns ...model.Function) (*model.Revision, bool) {
	t.Helper()
	ctx := context.Background()
	for _, m := range modules {
		if _, err := srv.PutArtifact(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	rev, changed, err := srv.Deploy(ctx, app, model.Spec{Functions: fns})
	if err != nil {
		t.Fatalf("deploy %s: %v", app, err)
	}
	return rev, changed
}

func get(t *testing.T, url string) (int, string, http.Header) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

var (
	helloDir   = "../../examples/hello/hello"
	wagiDir    = "../../examples/wagi/wagi"
	counterDir = "testdata/counter"
)

func TestDeployNoopChangeRollbackRestart(t *testing.T) {
	t.Parallel()
	hello := guesttest.MustBuild(t, helloDir, guesttest.Reactor)
	dir := t.TempDir()
	srv := start(t, dir)
	if srv.AdminToken() == "" {
		t.Fatal("first start made no admin token")
	}

	f := fn("hello", hello, "GET /hello/{name}")
	f.Env = map[string]string{"GREETING": "hello"}
	rev1, changed := deploy(t, srv, "hello", [][]byte{hello}, f)
	if !changed {
		t.Fatal("first deploy reported no change")
	}
	code, body, hdr := get(t, srv.GatewayURL()+"/hello/nimbus")
	if code != 200 || strings.TrimSpace(body) != "hello, nimbus" {
		t.Fatalf("GET /hello/nimbus = %d %q", code, body)
	}
	if hdr.Get("X-Nimbus-Invocation-Id") == "" || hdr.Get("Traceparent") == "" {
		t.Fatalf("missing invocation id or traceparent: %v", hdr)
	}

	// Same app again: a no-op with the same revision id.
	rev, changed := deploy(t, srv, "hello", nil, f)
	if changed || rev.ID != rev1.ID {
		t.Fatalf("unchanged deploy: changed=%v id %s vs %s", changed, rev.ID, rev1.ID)
	}

	// A config change is a new revision.
	f.Env = map[string]string{"GREETING": "howdy"}
	rev2, changed := deploy(t, srv, "hello", nil, f)
	if !changed || rev2.ID == rev1.ID {
		t.Fatalf("changed deploy: changed=%v id %s", changed, rev2.ID)
	}
	if _, body, _ := get(t, srv.GatewayURL()+"/hello/nimbus"); strings.TrimSpace(body) != "howdy, nimbus" {
		t.Fatalf("after change: %q", body)
	}

	// Rollback moves traffic back.
	rb, err := srv.Rollback(context.Background(), "hello", "")
	if err != nil || rb.ID != rev1.ID {
		t.Fatalf("rollback: %v, %v", rb, err)
	}
	if _, body, _ := get(t, srv.GatewayURL()+"/hello/nimbus"); strings.TrimSpace(body) != "hello, nimbus" {
		t.Fatalf("after rollback: %q", body)
	}

	// A restart serves the same revision, and makes no new admin token.
	if err := srv.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv2 := start(t, dir)
	if srv2.AdminToken() != "" {
		t.Fatal("restart made a second admin token")
	}
	app, err := srv2.Registry().App(context.Background(), "hello")
	if err != nil || app.Active != rev1.ID {
		t.Fatalf("after restart active = %v, %v; want %s", app, err, rev1.ID)
	}
	if code, body, _ := get(t, srv2.GatewayURL()+"/hello/again"); code != 200 || strings.TrimSpace(body) != "hello, again" {
		t.Fatalf("after restart: %d %q", code, body)
	}
}

func TestWAGIThroughGateway(t *testing.T) {
	t.Parallel()
	wagi := guesttest.MustBuild(t, wagiDir, guesttest.Command)
	srv := start(t, t.TempDir())
	deploy(t, srv, "wagi", [][]byte{wagi}, fn("cgi", wagi, "/wagi/{rest...}"))

	req, _ := http.NewRequest(http.MethodPost, srv.GatewayURL()+"/wagi/a/b?x=1", strings.NewReader("payload"))
	req.Header.Set("X-Custom", "yes")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	for _, want := range []string{"POST", "/wagi/a/b", "x=1", "a/b", "payload"} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("WAGI response lacks %q:\n%s", want, b)
		}
	}
}

func TestBrokenModuleRejectedAtDeploy(t *testing.T) {
	t.Parallel()
	hello := guesttest.MustBuild(t, helloDir, guesttest.Reactor)
	srv := start(t, t.TempDir())
	rev1, _ := deploy(t, srv, "app", [][]byte{hello}, fn("hello", hello, "GET /hello/{name}"))

	junk := []byte("\x00asm\x01\x00\x00\x00this is not a module")
	if _, err := srv.PutArtifact(context.Background(), junk); err != nil {
		t.Fatal(err)
	}
	_, _, err := srv.Deploy(context.Background(), "app", model.Spec{Functions: []model.Function{fn("hello", junk, "GET /hello/{name}")}})
	ae := apierror.From(err) // as the API answers it
	if err == nil || ae.Status != http.StatusUnprocessableEntity || ae.Code != "invalid_module" {
		t.Fatalf("deploy of a broken module: %v", err)
	}
	if !strings.Contains(ae.Message, "hello") {
		t.Errorf("message does not name the function: %s", ae.Message)
	}
	app, _ := srv.Registry().App(context.Background(), "app")
	if app.Active != rev1.ID {
		t.Fatalf("a rejected deploy changed the active revision")
	}
	if code, _, _ := get(t, srv.GatewayURL()+"/hello/x"); code != 200 {
		t.Fatalf("old revision stopped serving: %d", code)
	}
}

func TestConcurrentRequestsNeverShareAnInstance(t *testing.T) {
	t.Parallel()
	counter := guesttest.MustBuild(t, counterDir, guesttest.Reactor)
	srv := start(t, t.TempDir())
	f := fn("count", counter, "GET /count")
	f.MaxInstances = 3
	deploy(t, srv, "c", [][]byte{counter}, f)

	const workers, each = 8, 25
	var mu sync.Mutex
	seen := map[string]map[int]bool{} // instance -> request numbers it served
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				resp, err := http.Get(srv.GatewayURL() + "/count")
				if err != nil {
					errs <- err
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs <- fmt.Errorf("status %d: %s", resp.StatusCode, b)
					return
				}
				var id string
				var n int
				if _, err := fmt.Sscanf(string(b), "%s %d", &id, &n); err != nil {
					errs <- fmt.Errorf("answer %q: %v", b, err)
					return
				}
				mu.Lock()
				if seen[id] == nil {
					seen[id] = map[int]bool{}
				}
				if seen[id][n] {
					mu.Unlock()
					errs <- fmt.Errorf("instance %s served request number %d twice", id, n)
					return
				}
				seen[id][n] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(seen) > 3 {
		t.Errorf("%d instances served, max_instances is 3", len(seen))
	}
	total := 0
	for _, ns := range seen {
		total += len(ns)
	}
	if total != workers*each {
		t.Errorf("served %d requests, want %d", total, workers*each)
	}
}

func TestAPIAuthAndScopes(t *testing.T) {
	t.Parallel()
	srv := start(t, t.TempDir())
	call := func(token, method, path string) int {
		req, _ := http.NewRequest(method, srv.APIURL()+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode >= 400 && resp.Header.Get(apierror.Header) == "" {
			t.Errorf("%s %s: error without %s header", method, path, apierror.Header)
		}
		return resp.StatusCode
	}
	if got := call("", "GET", "/api/v1/apps"); got != 401 {
		t.Errorf("no token: %d", got)
	}
	if got := call("nmb_wrong", "GET", "/api/v1/apps"); got != 401 {
		t.Errorf("unknown token: %d", got)
	}
	if got := call(srv.AdminToken(), "GET", "/api/v1/apps"); got != 200 {
		t.Errorf("admin token: %d", got)
	}
	reader, err := srv.Tokens().Create(context.Background(), "ci-reader", []security.Scope{security.ScopeRead})
	if err != nil {
		t.Fatal(err)
	}
	if got := call(reader, "GET", "/api/v1/apps"); got != 200 {
		t.Errorf("read token reading: %d", got)
	}
	if got := call(reader, "POST", "/api/v1/apps/x/rollback"); got != 403 {
		t.Errorf("read token deploying: %d", got)
	}
	if got := call(srv.AdminToken(), "GET", "/api/v1/apps/nope"); got != 404 {
		t.Errorf("unknown app: %d", got)
	}
	// Metrics need no token.
	if got := call("", "GET", "/metrics"); got != 200 {
		t.Errorf("metrics: %d", got)
	}
}

func TestLogsAndMetricsCarryTheInvocation(t *testing.T) {
	t.Parallel()
	hello := guesttest.MustBuild(t, helloDir, guesttest.Reactor)
	srv := start(t, t.TempDir())
	deploy(t, srv, "hello", [][]byte{hello}, fn("hello", hello, "GET /hello/{name}"))
	_, _, hdr := get(t, srv.GatewayURL()+"/hello/logs")
	inv := hdr.Get("X-Nimbus-Invocation-Id")

	// The guest's log line arrives tagged with the invocation id.
	poll(t, "no log line for invocation "+inv, func() error {
		var found bool
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		err := srv.ReadLogs(ctx, guestlog.Query{App: "hello"}, func(e guestlog.Entry) error {
			if e.Invocation == inv && e.Function == "hello" {
				found = true
			}
			return nil
		})
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		if !found {
			return errors.New("not yet")
		}
		return nil
	})

	_, metrics, _ := get(t, srv.APIURL()+"/metrics")
	for _, want := range []string{
		`nimbus_requests_total{app="hello",code="200",function="hello"} 1`,
		`nimbus_cold_starts_total{app="hello",function="hello"} 1`,
		`nimbus_instances{app="hello",function="hello",state="idle"} 1`,
		`nimbus_invocation_duration_seconds_count{app="hello",function="hello"} 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestAPIDeployAndInvoke(t *testing.T) {
	t.Parallel()
	hello := guesttest.MustBuild(t, helloDir, guesttest.Reactor)
	srv := start(t, t.TempDir())
	do := func(method, path string, body []byte) (*http.Response, []byte) {
		req, _ := http.NewRequest(method, srv.APIURL()+path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+srv.AdminToken())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, b
	}
	if resp, _ := do("HEAD", "/api/v1/artifacts/"+sha(hello), nil); resp.StatusCode != 404 {
		t.Fatalf("HEAD missing artifact: %d", resp.StatusCode)
	}
	if resp, b := do("PUT", "/api/v1/artifacts/"+sha([]byte("other")), hello); resp.StatusCode != 400 {
		t.Fatalf("mismatched sha accepted: %d %s", resp.StatusCode, b)
	}
	if resp, b := do("PUT", "/api/v1/artifacts/"+sha(hello), hello); resp.StatusCode != 201 {
		t.Fatalf("PUT artifact: %d %s", resp.StatusCode, b)
	}
	body, _ := json.Marshal(map[string]any{"functions": []model.Function{fn("hello", hello)}})
	if resp, b := do("POST", "/api/v1/apps/hello/deploy", body); resp.StatusCode != 200 {
		t.Fatalf("deploy: %d %s", resp.StatusCode, b)
	}
	resp, b := do("POST", "/api/v1/apps/hello/functions/hello/invoke", []byte("direct"))
	if resp.StatusCode != 200 || string(b) != "direct" {
		t.Fatalf("invoke: %d %q", resp.StatusCode, b)
	}
	if resp, _ := do("POST", "/api/v1/apps/hello/functions/nope/invoke", nil); resp.StatusCode != 404 {
		t.Fatalf("invoke unknown function: %d", resp.StatusCode)
	}
}

// TestLimitsThroughGateway checks that each limit a hostile guest can hit
// comes back as the right status with a message naming the limit, and that
// the node keeps serving afterwards.
func TestLimitsThroughGateway(t *testing.T) {
	t.Parallel()
	guest := guesttest.MustBuild(t, "../runtime/wasm/testdata/sdkguest", guesttest.Reactor)
	srv := start(t, t.TempDir())
	f := fn("g", guest, "/{path...}")
	f.TimeoutMS = 60_000 // the memory bomb must hit memory, not time, on a slow machine
	f.MemoryBytes = 32 << 20
	f.MaxRequestBytes = 1 << 10
	f.MaxResponseBytes = 64 << 10
	loop := fn("loop", guest, "/loop")
	loop.TimeoutMS = 300
	deploy(t, srv, "lim", [][]byte{guest}, f, loop)

	type errBody struct {
		Error struct{ Code, Message string } `json:"error"`
	}
	check := func(method, path string, body string, wantStatus int, wantCode, wantInMessage string) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.GatewayURL()+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != wantStatus {
			t.Fatalf("%s %s: status %d, want %d: %s", method, path, resp.StatusCode, wantStatus, b)
		}
		if wantCode == "" {
			return
		}
		var eb errBody
		if err := json.Unmarshal(b, &eb); err != nil {
			t.Fatalf("%s %s: error body %q: %v", method, path, b, err)
		}
		if eb.Error.Code != wantCode || !strings.Contains(eb.Error.Message, wantInMessage) {
			t.Fatalf("%s %s: error %+v, want code %s and message containing %q", method, path, eb.Error, wantCode, wantInMessage)
		}
	}
	check("GET", "/bomb", "", 500, "memory_limit", "functions.g.memory")
	check("GET", "/hello", "", 200, "", "")
	check("GET", "/loop", "", 504, "timeout", "functions.loop.timeout")
	check("GET", "/hello", "", 200, "", "")
	check("POST", "/echo", strings.Repeat("x", 2<<10), 413, "request_too_large", "1KiB")
	check("GET", "/huge?n=200000", "", 502, "response_too_large", "64KiB")
	check("GET", "/panic", "", 502, "guest_failed", "")
	check("GET", "/hello", "", 200, "", "")
	// Every failure counts under its reason, the 413 refused at the
	// gateway (before the scheduler) too.
	_, metrics, _ := get(t, srv.APIURL()+"/metrics")
	for _, reason := range []string{"memory_limit", "timeout", "request_too_large", "response_too_large", "guest_failed"} {
		if !strings.Contains(metrics, `reason="`+reason+`"`) {
			t.Errorf("metrics lack nimbus_request_errors_total with reason %s", reason)
		}
	}
	if !strings.Contains(metrics, `nimbus_requests_total{app="lim",code="413",function="g"} 1`) {
		t.Errorf("metrics lack the 413 in nimbus_requests_total")
	}
}

func TestGatewayNotFoundAndMethodNotAllowed(t *testing.T) {
	t.Parallel()
	hello := guesttest.MustBuild(t, helloDir, guesttest.Reactor)
	srv := start(t, t.TempDir())
	deploy(t, srv, "hello", [][]byte{hello}, fn("hello", hello, "GET /hello/{name}"))
	resp, err := http.Post(srv.GatewayURL()+"/hello/x", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 || !strings.Contains(resp.Header.Get("Allow"), "GET") {
		t.Fatalf("POST on a GET route: %d Allow=%q", resp.StatusCode, resp.Header.Get("Allow"))
	}
	code, body, _ := get(t, srv.GatewayURL()+"/nowhere")
	if code != 404 || !strings.Contains(body, "route_not_found") {
		t.Fatalf("unknown path: %d %s", code, body)
	}
}

// TestFlowRateLimitPerKey: a per-tenant rate limit answers 429 with
// Retry-After to the tenant over its rate, and not to the others.
func TestFlowRateLimitPerKey(t *testing.T) {
	t.Parallel()
	hello := guesttest.MustBuild(t, helloDir, guesttest.Reactor)
	srv := start(t, t.TempDir())
	f := fn("hello", hello, "GET /hello/{name}")
	f.Flow = &model.Flow{Key: "header.X-Tenant", Rate: &model.Rate{Limit: 1, PeriodMS: 3_600_000}, Priority: model.DefaultPriority}
	deploy(t, srv, "hello", [][]byte{hello}, f)
	call := func(tenant string) *http.Response {
		req, _ := http.NewRequest("GET", srv.GatewayURL()+"/hello/x", nil)
		req.Header.Set("X-Tenant", tenant)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	if r := call("a"); r.StatusCode != 200 {
		t.Fatalf("first request of tenant a: %d", r.StatusCode)
	}
	r := call("a")
	if r.StatusCode != 429 || r.Header.Get("Retry-After") == "" {
		t.Fatalf("second request of tenant a within the period: %d, Retry-After %q", r.StatusCode, r.Header.Get("Retry-After"))
	}
	if r := call("b"); r.StatusCode != 200 {
		t.Fatalf("tenant b is limited by tenant a: %d", r.StatusCode)
	}
}

// TestGuestPublishReachesSubscribers: a guest granted publish:orders
// publishes through the node's event log, a topic trigger delivers it, and
// an ungranted topic or an undeclared one are refused to the guest.
func TestGuestPublishReachesSubscribers(t *testing.T) {
	t.Parallel()
	pub := guesttest.MustBuild(t, "../runtime/wasm/testdata/pubguest", guesttest.Reactor)
	counter := guesttest.MustBuild(t, counterDir, guesttest.Reactor)
	srv := start(t, t.TempDir())
	p := fn("pub", pub, "/{path...}")
	p.Capabilities = []string{"publish:orders"}
	sub := fn("sub", counter)
	sub.Triggers = []model.Trigger{{Name: "t", Kind: model.TriggerTopic, Topic: "orders",
		MaxAttempts: 3, BackoffMS: 10, MaxBackoffMS: 100, DeadLetter: model.DeadLetterTopic}}
	for _, m := range [][]byte{pub, counter} {
		if _, err := srv.PutArtifact(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	topics := []model.Topic{{Name: "orders", MaxEventBytes: 1 << 16, RetentionMS: 3_600_000},
		{Name: "audit", MaxEventBytes: 1 << 16, RetentionMS: 3_600_000},
		{Name: model.DeadLetterTopic, MaxEventBytes: 1 << 20, RetentionMS: 3_600_000}}
	if _, _, err := srv.Deploy(context.Background(), "shop", model.Spec{Functions: []model.Function{p, sub}, Topics: topics}); err != nil {
		t.Fatal(err)
	}
	post := func(query string) (int, string) {
		resp, err := http.Post(srv.GatewayURL()+"/publish?"+query, "text/plain", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	if code, body := post("t=orders&type=order.created&id=1&source=/shop"); code != 200 {
		t.Fatalf("granted publish: %d %s", code, body)
	}
	if code, body := post("t=audit&type=x&id=2&source=/shop"); code != 403 {
		t.Fatalf("publish to a topic not granted: %d %s", code, body)
	}
	// The subscriber (the counter guest) was invoked with the event.
	poll(t, "the subscriber never ran", func() error {
		if idle, busy := srv.Instances("shop", "sub"); idle+busy == 0 {
			return errors.New("no instance of shop/sub yet")
		}
		return nil
	})
}

// TestCronTriggerInvokesFunction: a cron trigger's tick becomes an event on
// its internal topic, which the dispatcher delivers to the function.
func TestCronTriggerInvokesFunction(t *testing.T) {
	t.Parallel()
	counter := guesttest.MustBuild(t, counterDir, guesttest.Reactor)
	srv := start(t, t.TempDir())
	f := fn("tick", counter)
	f.Triggers = []model.Trigger{{Name: "every-second", Kind: model.TriggerCron, Cron: "@every 1s",
		CatchUpMS: model.CatchUpNoLimit, MaxAttempts: 3, BackoffMS: 10, MaxBackoffMS: 100, DeadLetter: model.DeadLetterTopic}}
	if _, err := srv.PutArtifact(context.Background(), counter); err != nil {
		t.Fatal(err)
	}
	topics := []model.Topic{{Name: model.DeadLetterTopic, MaxEventBytes: 1 << 20, RetentionMS: 3_600_000}}
	if _, _, err := srv.Deploy(context.Background(), "clock", model.Spec{Functions: []model.Function{f}, Topics: topics}); err != nil {
		t.Fatal(err)
	}
	poll(t, "the cron trigger never invoked the function", func() error {
		if idle, busy := srv.Instances("clock", "tick"); idle+busy == 0 {
			return errors.New("no instance of clock/tick yet")
		}
		return nil
	})
	if err := srv.Delete(context.Background(), "clock"); err != nil {
		t.Fatalf("delete: %v", err)
	}
}

// TestBucketTriggerInvokesFunction: a write to a bucket, through the KV API
// or by a guest, invokes the function whose bucket trigger matches its key,
// with the change; also after a restart. Internal topics stay closed to
// publishers.
func TestBucketTriggerInvokesFunction(t *testing.T) {
	t.Parallel()
	counter := guesttest.MustBuild(t, "../../examples/counter/counter", guesttest.Reactor)
	watch := guesttest.MustBuild(t, "testdata/kvwatch", guesttest.Reactor)
	dir := t.TempDir()
	srv := start(t, dir)
	ctx := context.Background()
	c := fn("counter", counter, "POST /count/{name}")
	c.Capabilities = []string{"kv:counts"}
	w := fn("watch", watch)
	w.Capabilities = []string{"kv:seen"}
	w.Triggers = []model.Trigger{{Name: "bucket-counts", Kind: model.TriggerBucket, Bucket: "counts", KeyPrefix: "count.",
		MaxAttempts: 3, BackoffMS: 10, MaxBackoffMS: 100, DeadLetter: model.DeadLetterTopic}}
	for _, m := range [][]byte{counter, watch} {
		if _, err := srv.PutArtifact(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	spec := model.Spec{Functions: []model.Function{c, w},
		Topics:  []model.Topic{{Name: model.DeadLetterTopic, MaxEventBytes: 1 << 20, RetentionMS: 3_600_000}},
		Buckets: []model.Bucket{{Name: "counts", History: 1}, {Name: "seen", History: 1}}}
	if _, _, err := srv.Deploy(ctx, "shop", spec); err != nil {
		t.Fatal(err)
	}
	// waitSeen waits until the guest recorded want for key.
	waitSeen := func(srv *server.Server, key, want string) {
		t.Helper()
		poll(t, fmt.Sprintf("the watcher never recorded %q for %s", want, key), func() error {
			v, _, err := srv.KV().Get(ctx, "shop", "seen", "seen."+key)
			if err == nil && string(v) != want {
				err = fmt.Errorf("value %q", v)
			}
			return err
		})
	}

	// Through the KV API (what `nimbus kv put` calls).
	rev, err := srv.KV().Put(ctx, "shop", "counts", "count.api", []byte("7"), state.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.KV().Put(ctx, "shop", "counts", "other.x", []byte("1"), state.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	waitSeen(srv, "count.api", fmt.Sprintf("dev.nimbus.kv.put %d put application/octet-stream 7", rev))
	if err := srv.KV().Delete(ctx, "shop", "counts", "count.api", nil); err != nil {
		t.Fatal(err)
	}
	waitSeen(srv, "count.api", fmt.Sprintf("dev.nimbus.kv.delete %d delete  ", rev+2))

	// A guest's write (the counter example's kv put) triggers the watcher.
	resp, err := http.Post(srv.GatewayURL()+"/count/guest", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	_, grev, err := srv.KV().Get(ctx, "shop", "counts", "count.guest")
	if err != nil {
		t.Fatalf("the counter guest did not write: %v", err)
	}
	waitSeen(srv, "count.guest", fmt.Sprintf("dev.nimbus.kv.put %d put application/octet-stream 1", grev))
	if _, _, err := srv.KV().Get(ctx, "shop", "seen", "seen.other.x"); err == nil {
		t.Fatal("the key_prefix count. trigger got other.x")
	}

	// The internal topic of the bucket is not a topic anyone may publish to.
	_, _, err = srv.Publish(ctx, "shop", "_kv_counts", []cloudevents.Event{{SpecVersion: "1.0", ID: "x", Source: "/x", Type: "dev.nimbus.kv.put", Subject: "count.fake"}}, "")
	if !errors.Is(err, events.ErrTopicNotFound) || !strings.Contains(err.Error(), `app shop has no topic "_kv_counts"`) {
		t.Fatalf("publish to the internal topic _kv_counts: %v", err)
	}
	if _, _, err := srv.Publish(ctx, "nope", "orders", nil, ""); !errors.Is(err, registry.ErrAppNotFound) || err.Error() != "app \"nope\" is not deployed; `nimbus ls` lists apps" {
		t.Fatalf("publish to an app not deployed: %v", err)
	}

	// After a restart the trigger resumes.
	srv.Close(ctx)
	srv = start(t, dir)
	rev, err = srv.KV().Put(ctx, "shop", "counts", "count.api", []byte("8"), state.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitSeen(srv, "count.api", fmt.Sprintf("dev.nimbus.kv.put %d put application/octet-stream 8", rev))
	if err := srv.Delete(ctx, "shop"); err != nil {
		t.Fatalf("delete: %v", err)
	}
}
