package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/apierror"
	"github.com/nimbus-dev/nimbus/internal/audit"
	"github.com/nimbus-dev/nimbus/internal/guesttest"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/policy"
	"github.com/nimbus-dev/nimbus/internal/security"
	"github.com/nimbus-dev/nimbus/internal/server"
)

func startWithPolicy(t *testing.T, src string) *server.Server {
	t.Helper()
	p, err := policy.Parse("policy.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.Start(context.Background(), server.Config{DataDir: t.TempDir(), CacheDir: cacheDir,
		Listen: "127.0.0.1:0", APIListen: "127.0.0.1:0", Version: "test", Policy: p,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Cleanup(func() { srv.Close(context.Background()) })
	return srv
}

// tenantKey issues a key of tenant with every scope.
func tenantKey(t *testing.T, srv *server.Server, tenant string) string {
	t.Helper()
	key, _, err := srv.Tokens().Issue(context.Background(), security.TokenSpec{Name: tenant + "-key", Tenant: tenant,
		Scopes: []security.Scope{security.ScopeAdmin}})
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// apiCall calls the API with key and returns the status, the error body
// (if any), the headers and the raw body.
func apiCall(t *testing.T, srv *server.Server, key, method, path string, body any) (int, apierror.Error, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, srv.APIURL()+path, rd)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var e apierror.Body
	json.Unmarshal(raw, &e)
	if e.Error == nil {
		e.Error = &apierror.Error{}
	}
	return resp.StatusCode, *e.Error, resp.Header, raw
}

const docRules = `
- name: routes-need-auth
  expression: functions.all(f, f.routes.all(r, r.auth != "none"))
  message: every route must require auth (a key or a JWT)
- name: memory-cap
  expression: functions.all(f, f.memory <= quantity("256Mi"))
  message: a function may have at most 256MiB of memory
- name: no-egress-to-any-host
  expression: functions.all(f, f.egress.all(e, e.host != "*"))
  message: name the hosts a function calls; http:* is not allowed
`

// TestPolicyRefusesDeploys: a deploy that breaks the operator's rules is
// refused with 403 policy_denied naming every rule broken and its
// message, nothing is recorded, and the refusal is in the audit log with
// the rules; a compliant deploy goes through; a rollback is checked too.
func TestPolicyRefusesDeploys(t *testing.T) {
	t.Parallel()
	hello := guesttest.MustBuild(t, helloDir, guesttest.Reactor)
	srv := startWithPolicy(t, docRules)
	if _, err := srv.PutArtifact(context.Background(), hello); err != nil {
		t.Fatal(err)
	}
	key := tenantKey(t, srv, "team-a")

	ok := fn("hello", hello)
	ok.Capabilities = []string{"log", "http:api.stripe.com"}
	if code, e, _, _ := apiCall(t, srv, key, "POST", "/api/v1/apps/shop/deploy", model.Spec{Functions: []model.Function{ok}}); code != 200 {
		t.Fatalf("compliant deploy: %d %s", code, e.Message)
	}

	bad := ok
	bad.MemoryBytes = 512 << 20
	bad.Capabilities = []string{"log", "http:*"}
	bad.Routes = []model.Route{{Path: "/shop/hello"}}
	code, e, _, raw := apiCall(t, srv, key, "POST", "/api/v1/apps/shop/deploy", model.Spec{Functions: []model.Function{bad}})
	if code != 403 || e.Code != "policy_denied" {
		t.Fatalf("violating deploy: %d %s", code, raw)
	}
	for _, want := range []string{`rule "routes-need-auth": every route must require auth`, `rule "memory-cap": a function may have at most 256MiB`, `rule "no-egress-to-any-host"`} {
		if !strings.Contains(e.Message, want) {
			t.Errorf("message %q lacks %q", e.Message, want)
		}
	}
	var details struct {
		Violations []policy.Violation `json:"violations"`
	}
	b, _ := json.Marshal(e.Details)
	if json.Unmarshal(b, &details); len(details.Violations) != 3 || details.Violations[1].Rule != "memory-cap" {
		t.Fatalf("details: %s", b)
	}
	// Nothing changed: one revision, the compliant one, still serves.
	revs, err := srv.Registry().Revisions(context.Background(), "shop")
	if err != nil || len(revs) != 1 {
		t.Fatalf("revisions after a refused deploy: %d %v", len(revs), err)
	}
	if code, _, _, body := apiCall(t, srv, key, "POST", "/api/v1/apps/shop/functions/hello/invoke", []byte("still")); code != 200 || string(body) != "still" {
		t.Fatalf("invoke after a refused deploy: %d %s", code, body)
	}

	// The refusal is audited, with the rules, as a denial.
	entries, err := srv.Audit().List(context.Background(), audit.Filter{Action: "deploy", Target: "shop"})
	if err != nil || len(entries) != 2 {
		t.Fatalf("audit: %+v %v", entries, err)
	}
	if d := entries[1]; d.Outcome != audit.OutcomeDenied || d.Tenant != "team-a" ||
		d.Detail != "policy_denied: rules routes-need-auth,memory-cap,no-egress-to-any-host" {
		t.Fatalf("audit entry of the refusal: %+v", d)
	}

	// A rollback must pass the rules as well: deploy a second compliant
	// revision, then tighten nothing and roll back to the first (allowed).
	ok2 := ok
	ok2.Env = map[string]string{"V": "2"}
	if code, e, _, _ := apiCall(t, srv, key, "POST", "/api/v1/apps/shop/deploy", model.Spec{Functions: []model.Function{ok2}}); code != 200 {
		t.Fatalf("second deploy: %d %s", code, e.Message)
	}
	if code, e, _, _ := apiCall(t, srv, key, "POST", "/api/v1/apps/shop/rollback", nil); code != 200 {
		t.Fatalf("rollback to a compliant revision: %d %s", code, e.Message)
	}
}

// TestPolicyRollbackChecked: a revision deployed before the policy
// existed keeps serving after a restart with the policy (rules gate
// changes, not restarts), and rolling back to it is refused.
func TestPolicyRollbackChecked(t *testing.T) {
	t.Parallel()
	hello := guesttest.MustBuild(t, helloDir, guesttest.Reactor)
	dir := t.TempDir()
	srv := start(t, dir)
	big := fn("hello", hello)
	big.MemoryBytes = 512 << 20
	bigRev, _ := deploy(t, srv, "shop", [][]byte{hello}, big)
	small := fn("hello", hello)
	deploy(t, srv, "shop", nil, small)
	deploy(t, srv, "shop", nil, big) // active: over the cap
	srv.Close(context.Background())

	p, err := policy.Parse("policy.yaml", []byte(docRules))
	if err != nil {
		t.Fatal(err)
	}
	srv2, err := server.Start(context.Background(), server.Config{DataDir: dir, CacheDir: cacheDir, Listen: "127.0.0.1:0", APIListen: "127.0.0.1:0",
		Policy: p, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv2.Close(context.Background()) })
	if _, ok := srv2.Function("shop", "hello"); !ok {
		t.Fatal("an app deployed before the policy was not restored")
	}
	_, err = srv2.Rollback(context.Background(), "shop", "") // to the small one: allowed
	if err != nil {
		t.Fatalf("rollback to a compliant revision: %v", err)
	}
	code, e, _, _ := apiCall(t, srv2, mustAdmin(t, srv2), "POST", "/api/v1/apps/shop/rollback", map[string]string{"revision": bigRev.ID})
	if code != 403 || e.Code != "policy_denied" || !strings.Contains(e.Message, "memory-cap") {
		t.Fatalf("rollback to a revision over the cap: %d %s %s", code, e.Code, e.Message)
	}
	entries, err := srv2.Audit().List(context.Background(), audit.Filter{Action: "rollback"})
	if err != nil || len(entries) != 1 || entries[0].Outcome != audit.OutcomeDenied || entries[0].Detail != "policy_denied: rules memory-cap" {
		t.Fatalf("audit of the refused rollback: %+v %v", entries, err)
	}
}

func mustAdmin(t *testing.T, srv *server.Server) string {
	t.Helper()
	key, _, err := srv.Tokens().Issue(context.Background(), security.TokenSpec{Name: "admin2", Scopes: []security.Scope{security.ScopeAdmin}})
	if err != nil {
		t.Fatal(err)
	}
	return key
}

// TestQuotas: a tenant at its apps, functions or kv_bytes quota is
// refused with 403 quota_exceeded naming the quota; over its request rate
// with 429 quota_requests and Retry-After, on the gateway and the API;
// other tenants are not affected.
func TestQuotas(t *testing.T) {
	t.Parallel()
	hello := guesttest.MustBuild(t, helloDir, guesttest.Reactor)
	srv := startWithPolicy(t, `
quotas:
  tenants:
    team-a: {apps: 1, functions: 2, kv_bytes: 4KiB, requests_per_second: 0.5}
    team-c: {kv_bytes: 2KiB}
`)
	if _, err := srv.PutArtifact(context.Background(), hello); err != nil {
		t.Fatal(err)
	}
	a, b := tenantKey(t, srv, "team-a"), tenantKey(t, srv, "team-b")
	spec := model.Spec{Functions: []model.Function{fn("hello", hello, "GET /hello/{name}")},
		Buckets: []model.Bucket{{Name: "data", MaxValueBytes: 64 << 10, History: 1}}}
	if code, e, _, _ := apiCall(t, srv, a, "POST", "/api/v1/apps/a1/deploy", spec); code != 200 {
		t.Fatalf("first app: %d %s", code, e.Message)
	}
	code, e, _, _ := apiCall(t, srv, a, "POST", "/api/v1/apps/a2/deploy", model.Spec{Functions: []model.Function{fn("x", hello)}})
	if code != 403 || e.Code != "quota_exceeded" || !strings.Contains(e.Message, "tenant team-a is at its quota of 1 apps") {
		t.Fatalf("second app: %d %s %s", code, e.Code, e.Message)
	}
	if d, _ := json.Marshal(e.Details); string(d) != `{"limit":1,"quota":"apps","tenant":"team-a","used":1}` {
		t.Fatalf("details of the apps quota: %s", d)
	}
	three := spec
	three.Functions = []model.Function{fn("hello", hello, "GET /hello/{name}"), fn("f2", hello), fn("f3", hello)}
	code, e, _, _ = apiCall(t, srv, a, "POST", "/api/v1/apps/a1/deploy", three)
	if code != 403 || e.Code != "quota_exceeded" || !strings.Contains(e.Message, "may have 2 functions across its apps and this deploy would make 3") {
		t.Fatalf("three functions: %d %s %s", code, e.Code, e.Message)
	}
	// Another tenant has no quota.
	for i := range 3 {
		if code, e, _, _ := apiCall(t, srv, b, "POST", fmt.Sprintf("/api/v1/apps/b%d/deploy", i), model.Spec{Functions: []model.Function{fn("x", hello)}}); code != 200 {
			t.Fatalf("team-b app %d: %d %s", i, code, e.Message)
		}
	}

	// Requests: 0.5/s, bursts of one. The first request passes; the next
	// ones, on the gateway or the API, are refused until a token is back.
	if code, body, _ := get(t, srv.GatewayURL()+"/hello/x"); code != 200 {
		t.Fatalf("first request: %d %s", code, body)
	}
	code, body, hdr := get(t, srv.GatewayURL()+"/hello/x")
	if code != 429 || hdr.Get(apierror.Header) != "quota_requests" || !strings.Contains(body, "tenant team-a is over its quota of 0.5 requests per second") {
		t.Fatalf("second request: %d %s", code, body)
	}
	if ra, err := strconv.Atoi(hdr.Get("Retry-After")); err != nil || ra < 1 || ra > 2 {
		t.Fatalf("Retry-After %q", hdr.Get("Retry-After"))
	}
	if code, e, hdr, _ := apiCall(t, srv, a, "POST", "/api/v1/apps/a1/functions/hello/invoke", nil); code != 429 || e.Code != "quota_requests" || hdr.Get("Retry-After") == "" {
		t.Fatalf("API invoke over the rate: %d %s", code, e.Code)
	}
	if code, e, _, _ := apiCall(t, srv, b, "POST", "/api/v1/apps/b0/functions/x/invoke", nil); code != 200 {
		t.Fatalf("team-b invoke: %d %s", code, e.Message)
	}

	// KV bytes: 4KiB. 1KiB values go in until the quota refuses one;
	// deleting frees the space.
	val := bytes.Repeat([]byte("v"), 1024)
	refused := -1
	for i := range 10 {
		code, e, _, _ := apiCall(t, srv, a, "PUT", fmt.Sprintf("/api/v1/apps/a1/buckets/data/keys/k%d", i), val)
		if code == 403 && e.Code == "quota_exceeded" {
			if !strings.Contains(e.Message, "tenant team-a's key-value buckets hold") || !strings.Contains(e.Message, "at its quota of 4KiB") {
				t.Fatalf("kv quota message: %s", e.Message)
			}
			refused = i
			break
		}
		if code != 200 && code != 201 {
			t.Fatalf("put %d: %d %s", i, code, e.Message)
		}
	}
	if refused < 1 || refused > 4 {
		t.Fatalf("the kv quota refused put %d (want one of the first five, after at least one)", refused)
	}
	for i := range refused {
		if code, e, _, _ := apiCall(t, srv, a, "DELETE", fmt.Sprintf("/api/v1/apps/a1/buckets/data/keys/k%d", i), nil); code >= 300 {
			t.Fatalf("delete k%d: %d %s", i, code, e.Message)
		}
	}
	if code, e, _, _ := apiCall(t, srv, a, "PUT", "/api/v1/apps/a1/buckets/data/keys/again", val); code >= 300 {
		t.Fatalf("put after deleting: %d %s", code, e.Message)
	}

	// A function's put is held to the same quota: once team-c's bucket
	// is within a few bytes of 2KiB, the counter's put fails.
	counter := guesttest.MustBuild(t, "../../examples/counter/counter", guesttest.Reactor)
	if _, err := srv.PutArtifact(context.Background(), counter); err != nil {
		t.Fatal(err)
	}
	cf := fn("counter", counter, "POST /count/{name}")
	cf.Capabilities = []string{"kv:counts"}
	c := tenantKey(t, srv, "team-c")
	if code, e, _, _ := apiCall(t, srv, c, "POST", "/api/v1/apps/counter/deploy", model.Spec{Functions: []model.Function{cf},
		Buckets: []model.Bucket{{Name: "counts", MaxValueBytes: 64 << 10, History: 1}}}); code != 200 {
		t.Fatalf("deploy counter: %d %s", code, e.Message)
	}
	resp, err := http.Post(srv.GatewayURL()+"/count/a", "", nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("first count: %v %v", resp, err)
	}
	resp.Body.Close()
	// Fill to within 4 bytes of the quota: the largest value that still
	// fits, found from above (a refused put stores nothing).
	filled := false
	for n := 2048 - len("fill"); n > 1024 && !filled; n -= 4 {
		code, e, _, _ := apiCall(t, srv, c, "PUT", "/api/v1/apps/counter/buckets/counts/keys/fill", bytes.Repeat([]byte("x"), n))
		switch {
		case code < 300:
			filled = true
		case code != 403 || e.Code != "quota_exceeded":
			t.Fatalf("fill: %d %s", code, e.Message)
		}
	}
	if !filled {
		t.Fatal("no value over 1KiB fits a 2KiB quota")
	}
	resp, err = http.Post(srv.GatewayURL()+"/count/a", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 500 {
		t.Fatalf("a function's put over the kv quota: %d %s", resp.StatusCode, out)
	}
	if code, _, _, v := apiCall(t, srv, c, "GET", "/api/v1/apps/counter/buckets/counts/keys/count.a", nil); code != 200 || string(v) != "1" {
		t.Fatalf("the counter after a refused put: %d %q", code, v)
	}
}
