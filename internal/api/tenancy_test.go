package api_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/api"
	"github.com/nimbus-dev/nimbus/internal/audit"
	"github.com/nimbus-dev/nimbus/internal/events"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/registry"
	"github.com/nimbus-dev/nimbus/internal/security"
	"github.com/nimbus-dev/nimbus/internal/store"
	"github.com/nimbus-dev/nimbus/internal/telemetry"
)

// tenantPlatform is a node with a real registry, tokens and audit log on a
// real store. What the tenant walk must never reach is left nil (a call
// panics, which the walk reports).
type tenantPlatform struct {
	api.Platform
	st      *store.Store
	reg     *registry.Registry
	log     *audit.Log
	secrets *memSecrets
}

func (p *tenantPlatform) Registry() *registry.Registry        { return p.reg }
func (p *tenantPlatform) Instances(string, string) (int, int) { return 0, 0 }
func (p *tenantPlatform) Audit() api.AuditLog                 { return p.log }
func (p *tenantPlatform) Secrets() api.SecretStore            { return p.secrets }
func (p *tenantPlatform) HasArtifact(context.Context, string) (bool, error) {
	return false, nil
}
func (p *tenantPlatform) Invocation(_ context.Context, id string) (*events.Invocation, error) {
	if id == "inv-b" {
		return &events.Invocation{ID: id, App: "beta", Function: "f"}, nil
	}
	return nil, events.ErrNoRecord
}
func (p *tenantPlatform) Deploy(ctx context.Context, app string, spec model.Spec) (*model.Revision, bool, error) {
	return p.reg.DeploySpec(ctx, app, spec)
}
func (p *tenantPlatform) Rollback(ctx context.Context, app, rev string) (*model.Revision, error) {
	return p.reg.Rollback(ctx, app, rev)
}
func (p *tenantPlatform) Delete(ctx context.Context, app string) error { return p.reg.Delete(ctx, app) }

// memSecrets keeps names only.
type memSecrets struct {
	mu    sync.Mutex
	names map[string]bool
}

func (m *memSecrets) Set(_ context.Context, app, name string, _ []byte) (security.SecretInfo, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.names[app+"/"+name] = true
	return security.SecretInfo{Name: name, Version: 1}, nil
}
func (m *memSecrets) List(context.Context, string) ([]security.SecretInfo, error) { return nil, nil }
func (m *memSecrets) Delete(_ context.Context, app, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.names, app+"/"+name)
	return nil
}

type tenantEnv struct {
	p          *tenantPlatform
	h          *api.Mux
	tokens     *security.Tokens
	keyA, keyB string // admin keys of team-a and team-b
	node       string // the node-wide admin token
	idB        string // keyB's id
	fnA, fnB   model.Function
}

func newTenantEnv(t *testing.T) *tenantEnv {
	t.Helper()
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(ctx, store.Options{DataDir: t.TempDir(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log, err := audit.Open(ctx, st.Committer())
	if err != nil {
		t.Fatal(err)
	}
	e := &tenantEnv{p: &tenantPlatform{st: st, reg: registry.New(st.Registry(), st), log: log, secrets: &memSecrets{names: map[string]bool{}}}}
	e.tokens = security.NewTokens(st.Security())
	if e.node, _, err = e.tokens.EnsureAdmin(ctx); err != nil {
		t.Fatal(err)
	}
	e.keyA, _ = e.issue(t, "a-admin", "team-a", security.ScopeAdmin)
	var info security.TokenInfo
	e.keyB, info = e.issue(t, "b-admin", "team-b", security.ScopeAdmin)
	e.idB = info.ID
	e.fnA, e.fnB = e.fn(t, "f", "/a"), e.fn(t, "f", "/b")
	for app, tenant := range map[string]string{"alpha": "team-a", "beta": "team-b"} {
		fn := e.fnA
		if app == "beta" {
			fn = e.fnB
		}
		if _, _, err := e.p.reg.Deploy(model.WithTenant(ctx, tenant), app, []model.Function{fn}); err != nil {
			t.Fatal(err)
		}
	}
	e.h = api.Handler(e.p, e.tokens, telemetry.NewMetrics(), "test", quiet)
	return e
}

func (e *tenantEnv) issue(t *testing.T, name, tenant string, scopes ...security.Scope) (string, security.TokenInfo) {
	t.Helper()
	tok, info, err := e.tokens.Issue(context.Background(), security.TokenSpec{Name: name, Tenant: tenant, Scopes: scopes})
	if err != nil {
		t.Fatal(err)
	}
	return tok, info
}

func (e *tenantEnv) fn(t *testing.T, name, route string) model.Function {
	t.Helper()
	sha, err := e.p.st.PutArtifact(context.Background(), []byte("\x00asm "+route))
	if err != nil {
		t.Fatal(err)
	}
	return model.Function{Name: name, Runtime: "wasm", Module: sha, MemoryBytes: 64 << 20, TimeoutMS: 2000, Concurrency: 1,
		MaxInstances: 10, MaxRequestBytes: 1 << 20, MaxResponseBytes: 1 << 20, Routes: []model.Route{{Path: route}}}
}

// do serves one call; a handler that panics (it reached the nil part of
// the platform) answers 599.
func (e *tenantEnv) do(key, method, path, body string) (res *httptest.ResponseRecorder) {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	res = httptest.NewRecorder()
	defer func() {
		if recover() != nil {
			res = httptest.NewRecorder()
			res.Code = 599
		}
	}()
	e.h.ServeHTTP(res, req)
	return res
}

// wrongTenant is what a key of team-a must get on a route when it asks for
// team-b's things.
type wrongTenant struct {
	path, body string
	status     int
	code       string // the error code, when status is an error
	absent     string // must not appear in the answer
}

// walkTable is, for each route of the API, a call of it on team-b's app,
// invocation, keys or audit entries, and what a key of team-a must get.
func (e *tenantEnv) walkTable(t *testing.T) map[string]wrongTenant {
	forbid := func(path string) wrongTenant { return wrongTenant{path: path, status: 403, code: "wrong_tenant"} }
	return map[string]wrongTenant{
		"GET /api/v1/status":                                       {path: "/api/v1/status", status: 200, absent: `"apps": 2`},
		"HEAD /api/v1/artifacts/{sha}":                             {path: "/api/v1/artifacts/" + e.fnB.Module, status: 404}, // shared: by content address
		"PUT /api/v1/artifacts/{sha}":                              {path: "/api/v1/artifacts/nope", status: 400, code: "bad_sha256"},
		"GET /api/v1/apps":                                         {path: "/api/v1/apps", status: 200, absent: "beta"},
		"GET /api/v1/apps/{app}":                                   forbid("/api/v1/apps/beta"),
		"DELETE /api/v1/apps/{app}":                                forbid("/api/v1/apps/beta"),
		"POST /api/v1/apps/{app}/deploy":                           {path: "/api/v1/apps/beta/deploy", status: 403, code: "wrong_tenant", body: e.spec(t, "/b")},
		"GET /api/v1/apps/{app}/revisions":                         forbid("/api/v1/apps/beta/revisions"),
		"POST /api/v1/apps/{app}/rollback":                         forbid("/api/v1/apps/beta/rollback"),
		"POST /api/v1/apps/{app}/functions/{function}/invoke":      forbid("/api/v1/apps/beta/functions/f/invoke"),
		"GET /api/v1/apps/{app}/logs":                              forbid("/api/v1/apps/beta/logs"),
		"GET /api/v1/apps/{app}/buckets/{bucket}/keys":             forbid("/api/v1/apps/beta/buckets/b/keys"),
		"GET /api/v1/apps/{app}/buckets/{bucket}/keys/{key...}":    forbid("/api/v1/apps/beta/buckets/b/keys/k"),
		"PUT /api/v1/apps/{app}/buckets/{bucket}/keys/{key...}":    forbid("/api/v1/apps/beta/buckets/b/keys/k"),
		"DELETE /api/v1/apps/{app}/buckets/{bucket}/keys/{key...}": forbid("/api/v1/apps/beta/buckets/b/keys/k"),
		"GET /api/v1/invocations/{id}":                             forbid("/api/v1/invocations/inv-b"),
		"POST /api/v1/apps/{app}/workflows/{workflow}/runs":        forbid("/api/v1/apps/beta/workflows/w/runs"),
		"GET /api/v1/apps/{app}/runs":                              forbid("/api/v1/apps/beta/runs"),
		"GET /api/v1/apps/{app}/runs/{id}":                         forbid("/api/v1/apps/beta/runs/r1"),
		"POST /api/v1/apps/{app}/runs/{id}/signals/{name}":         forbid("/api/v1/apps/beta/runs/r1/signals/go"),
		"POST /api/v1/apps/{app}/runs/{id}/cancel":                 forbid("/api/v1/apps/beta/runs/r1/cancel"),
		"POST /api/v1/apps/{app}/runs/{id}/pause":                  forbid("/api/v1/apps/beta/runs/r1/pause"),
		"POST /api/v1/apps/{app}/runs/{id}/resume":                 forbid("/api/v1/apps/beta/runs/r1/resume"),
		"POST /api/v1/apps/{app}/runs/{id}/terminate":              forbid("/api/v1/apps/beta/runs/r1/terminate"),
		"POST /api/v1/apps/{app}/runs/{id}/retry":                  forbid("/api/v1/apps/beta/runs/r1/retry"),
		"GET /api/v1/apps/{app}/dead-letters":                      forbid("/api/v1/apps/beta/dead-letters"),
		"POST /api/v1/apps/{app}/dead-letters/replay":              forbid("/api/v1/apps/beta/dead-letters/replay"),
		"POST /api/v1/tokens":                                      {path: "/api/v1/tokens", status: 403, code: "wrong_tenant", body: `{"name":"x","scopes":["admin"],"tenant":"team-b"}`},
		"GET /api/v1/tokens":                                       {path: "/api/v1/tokens", status: 200, absent: e.idB},
		"DELETE /api/v1/tokens/{ref}":                              {path: "/api/v1/tokens/" + e.idB, status: 404, code: "token_not_found"},
		"GET /api/v1/apps/{app}/secrets":                           forbid("/api/v1/apps/beta/secrets"),
		"PUT /api/v1/apps/{app}/secrets/{name}":                    {path: "/api/v1/apps/beta/secrets/S", status: 403, code: "wrong_tenant", body: `{"value":"v"}`},
		"DELETE /api/v1/apps/{app}/secrets/{name}":                 forbid("/api/v1/apps/beta/secrets/S"),
		"GET /api/v1/audit":                                        {path: "/api/v1/audit?tenant=team-b", status: 403, code: "wrong_tenant"},
		"GET /api/v1/audit/verify":                                 {path: "/api/v1/audit/verify", status: 403, code: "node_key_required"},
		"POST /api/v1/apps/{app}/topics/{topic}/events":            forbid("/api/v1/apps/beta/topics/t/events"),
		"GET /metrics":                                             {}, // public: no token, no tenant (see docs/security.md)
	}
}

// TestWrongTenantKeyOnEveryRoute walks every route of the API (from the
// mux: a route added without a row here fails the test) with a key of
// team-a asking for team-b's app, invocation, keys or audit entries.
func TestWrongTenantKeyOnEveryRoute(t *testing.T) {
	e := newTenantEnv(t)
	table := e.walkTable(t)
	seen := map[string]bool{}
	for _, rt := range e.h.Routes() {
		seen[rt.Pattern] = true
		c, ok := table[rt.Pattern]
		if !ok {
			t.Errorf("route %s (tenancy %s) is not in this test's table: add what a key of another tenant must get", rt.Pattern, rt.Tenancy)
			continue
		}
		if rt.Tenancy == api.TenancyPublic {
			continue
		}
		method, _, _ := strings.Cut(rt.Pattern, " ")
		res := e.do(e.keyA, method, c.path, c.body)
		if res.Code != c.status || (c.code != "" && res.Header().Get("X-Nimbus-Error") != c.code) {
			t.Errorf("%s %s with team-a's key: %d %s %s, want %d %s", method, c.path, res.Code, res.Header().Get("X-Nimbus-Error"), res.Body, c.status, c.code)
		}
		if c.absent != "" && strings.Contains(res.Body.String(), c.absent) {
			t.Errorf("%s %s with team-a's key shows %q: %s", method, c.path, c.absent, res.Body)
		}
	}
	// The control: team-b's own key is not refused on the same calls
	// (deleting beta last, as it ends the walk).
	for _, rt := range e.h.Routes() {
		c := table[rt.Pattern]
		if (rt.Tenancy == api.TenancyApp || rt.Tenancy == api.TenancyInvocation) && rt.Pattern != "DELETE /api/v1/apps/{app}" {
			method, _, _ := strings.Cut(rt.Pattern, " ")
			if res := e.do(e.keyB, method, c.path, c.body); res.Code == 403 {
				t.Errorf("%s %s with team-b's own key: 403 %s", method, c.path, res.Body)
			}
		}
	}
	for p := range table {
		if !seen[p] {
			t.Errorf("the table has %s, which the API does not serve", p)
		}
	}
	// Nothing of team-b changed.
	if _, err := e.tokens.Verify(context.Background(), e.keyB); err != nil {
		t.Fatalf("team-b's key: %v", err)
	}
	if res := e.do(e.keyB, "DELETE", "/api/v1/apps/beta", ""); res.Code != 204 {
		t.Fatalf("team-b deletes beta: %d %s", res.Code, res.Body)
	}
}

// spec is a deploy body: alpha's module on route.
func (e *tenantEnv) spec(t *testing.T, route string) string {
	t.Helper()
	fn := e.fnA
	fn.Routes = []model.Route{{Path: route}}
	b, err := json.Marshal(model.Spec{Functions: []model.Function{fn}})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestAuditEntries: each control-plane call appends one entry naming the
// key, the tenant, the target and the outcome (never a secret's value or
// a key's plaintext); the chain verifies; a tenant's key lists its own
// tenant's entries only.
func TestAuditEntries(t *testing.T) {
	e := newTenantEnv(t)
	steps := []struct {
		key, method, path, body string
		status                  int
	}{
		{e.keyA, "POST", "/api/v1/apps/alpha/deploy", e.spec(t, "/a2"), 200},
		{e.keyA, "POST", "/api/v1/apps/alpha/rollback", "", 200},
		{e.keyA, "PUT", "/api/v1/apps/alpha/secrets/STRIPE_KEY", `{"value":"sk_live_canary"}`, 200},
		{e.keyA, "DELETE", "/api/v1/apps/alpha/secrets/STRIPE_KEY", "", 204},
		{e.keyA, "POST", "/api/v1/apps/beta/deploy", e.spec(t, "/b"), 403},
		{e.keyA, "POST", "/api/v1/tokens", `{"name":"ci","scopes":["deploy"]}`, 201},
		{e.keyA, "DELETE", "/api/v1/tokens/ci", "", 200},
		{e.keyA, "DELETE", "/api/v1/apps/alpha", "", 204},
		{e.node, "POST", "/api/v1/tokens", `{"name":"ops","scopes":["read"],"tenant":"team-b"}`, 201},
	}
	var plaintexts []string
	for _, s := range steps {
		res := e.do(s.key, s.method, s.path, s.body)
		if res.Code != s.status {
			t.Fatalf("%s %s: %d %s", s.method, s.path, res.Code, res.Body)
		}
		if strings.Contains(res.Body.String(), `"token"`) {
			var ct api.CreatedToken
			json.Unmarshal(res.Body.Bytes(), &ct)
			plaintexts = append(plaintexts, ct.Token)
		}
	}
	res := e.do(e.node, "GET", "/api/v1/audit", "")
	var got []audit.Entry
	if err := json.Unmarshal(res.Body.Bytes(), &got); err != nil || res.Code != 200 {
		t.Fatalf("audit: %d %s", res.Code, res.Body)
	}
	want := []struct{ action, tenant, target, outcome string }{
		{"deploy", "team-a", "alpha", "ok"},
		{"rollback", "team-a", "alpha", "ok"},
		{"secret.set", "team-a", "alpha/STRIPE_KEY", "ok"},
		{"secret.rm", "team-a", "alpha/STRIPE_KEY", "ok"},
		{"deploy", "team-b", "beta", "denied"},
		{"key.create", "team-a", "", "ok"},
		{"key.revoke", "team-a", "", "ok"},
		{"delete", "team-a", "alpha", "ok"},
		{"key.create", "team-b", "", "ok"},
	}
	if len(got) != len(want) {
		t.Fatalf("%d entries, want %d: %s", len(got), len(want), res.Body)
	}
	aID := strings.Fields(got[0].Actor)[0]
	for i, w := range want {
		g := got[i]
		if g.Action != w.action || g.Tenant != w.tenant || (w.target != "" && g.Target != w.target) || g.Outcome != w.outcome || g.Seq != uint64(i+1) {
			t.Errorf("entry %d: %+v, want %+v", i+1, g, w)
		}
		if i < 8 && !strings.HasPrefix(g.Actor, aID+" a-admin") {
			t.Errorf("entry %d: actor %q", i+1, g.Actor)
		}
	}
	if got[5].Target != got[6].Target || len(got[5].Target) != 12 {
		t.Errorf("key.create target %q, key.revoke target %q: want the key's id", got[5].Target, got[6].Target)
	}
	body := res.Body.String()
	for _, secret := range append(plaintexts, "sk_live_canary", e.keyA) {
		if strings.Contains(body, secret) {
			t.Errorf("the audit log holds a secret: %q", secret)
		}
	}
	var rep audit.Report
	if res := e.do(e.node, "GET", "/api/v1/audit/verify", ""); res.Code != 200 || json.Unmarshal(res.Body.Bytes(), &rep) != nil || !rep.OK() || rep.Entries != len(want) {
		t.Fatalf("verify: %d %s", res.Code, res.Body)
	}
	res = e.do(e.keyB, "GET", "/api/v1/audit", "")
	var mine []audit.Entry
	if json.Unmarshal(res.Body.Bytes(), &mine) != nil || len(mine) != 2 || mine[0].Tenant != "team-b" || mine[1].Tenant != "team-b" {
		t.Fatalf("team-b's audit: %s", res.Body)
	}
}

// TestEveryScopeOnEveryRoute walks every route of the API with a key of
// team-b holding one verb (read, invoke, deploy, secrets, admin) on
// team-b's own things: a route needing another verb answers 403 naming
// the verb it needs (X-Nimbus-Required-Scope); a route the verb covers is
// not refused for its scope. Admin covers every verb. An expired key is
// refused on every route with 401.
func TestEveryScopeOnEveryRoute(t *testing.T) {
	e := newTenantEnv(t)
	table := e.walkTable(t)
	ctx := context.Background()
	scopes := []security.Scope{security.ScopeRead, security.ScopeInvoke, security.ScopeSecrets, security.ScopeDeploy, security.ScopeAdmin}
	covered := map[security.Scope]int{}
	const deleteApp = "DELETE /api/v1/apps/{app}" // called last: it ends the walk
	for _, scope := range scopes {
		key, _ := e.issue(t, "b-"+string(scope), "team-b", scope)
		for _, rt := range e.h.Routes() {
			if rt.Tenancy == api.TenancyPublic {
				continue
			}
			allowed := scope == security.ScopeAdmin || scope == rt.Scope
			if allowed && rt.Pattern == deleteApp {
				continue
			}
			c := table[rt.Pattern]
			method, _, _ := strings.Cut(rt.Pattern, " ")
			res := e.do(key, method, c.path, c.body)
			refused := res.Code == 403 && res.Header().Get(api.HeaderRequiredScope) != ""
			switch {
			case !allowed && (!refused || res.Header().Get(api.HeaderRequiredScope) != string(rt.Scope)):
				t.Errorf("%s with a %s key: %d %s %s, want 403 needing %s", rt.Pattern, scope, res.Code, res.Header().Get(api.HeaderRequiredScope), res.Body, rt.Scope)
			case allowed && (refused || res.Code == 401):
				t.Errorf("%s with a %s key: refused %d %s", rt.Pattern, scope, res.Code, res.Body)
			case allowed:
				covered[scope]++
			}
		}
	}
	for _, scope := range scopes[:4] {
		if covered[scope] == 0 {
			t.Errorf("no route needs the %s scope", scope)
		}
	}
	// Expired: refused everywhere, before its scope is looked at.
	expired, _, err := e.tokens.Issue(ctx, security.TokenSpec{Name: "b-old", Tenant: "team-b", Scopes: []security.Scope{security.ScopeAdmin}, TTL: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for e.do(expired, "GET", "/api/v1/apps", "").Code != 401 {
		if time.Now().After(deadline) {
			t.Fatal("a key that expired after 1ms is still accepted after 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for _, rt := range e.h.Routes() {
		if rt.Tenancy == api.TenancyPublic {
			continue
		}
		c := table[rt.Pattern]
		method, _, _ := strings.Cut(rt.Pattern, " ")
		if res := e.do(expired, method, c.path, c.body); res.Code != 401 || !strings.Contains(res.Body.String(), "expired") {
			t.Errorf("%s with an expired key: %d %s", rt.Pattern, res.Code, res.Body)
		}
	}
	// Deleting the app is the deploy verb's (admin's too): last.
	key, _ := e.issue(t, "b-deploy-last", "team-b", security.ScopeDeploy)
	if res := e.do(key, "DELETE", "/api/v1/apps/beta", ""); res.Code != 204 {
		t.Fatalf("delete with a deploy key: %d %s", res.Code, res.Body)
	}
}
