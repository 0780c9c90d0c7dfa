package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/nimbus-dev/nimbus/internal/gateway"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/security"
	"github.com/nimbus-dev/nimbus/internal/security/jwtauth"
	"github.com/nimbus-dev/nimbus/internal/security/jwtauth/jwttest"
	"github.com/nimbus-dev/nimbus/internal/store"
	"github.com/nimbus-dev/nimbus/internal/telemetry"
)

// tenantKeys is gateway.Keys over real tokens, with each app's tenant
// given (the server reads it from the registry).
type tenantKeys struct {
	tokens  *security.Tokens
	tenants map[string]string
}

func (k tenantKeys) CheckRouteKey(ctx context.Context, key, app string) (gateway.KeyIdentity, error) {
	id, err := k.tokens.CheckInvoke(ctx, key, k.tenants[app])
	if err != nil {
		return gateway.KeyIdentity{}, err
	}
	return gateway.KeyIdentity{ID: id.ID, Tenant: id.Tenant}, nil
}

// authFixture is a real gateway on loopback serving app "shop" of tenant
// team-a: GET /public (no auth), GET /private (auth key), GET /me (auth
// jwt against a JWKS served on loopback, forwarding email and roles).
type authFixture struct {
	url    string
	inv    *recorder
	iss    *jwttest.Issuer
	tokens *security.Tokens
	aud    string

	metrics *telemetry.Metrics
	mu      sync.Mutex
	denials []gateway.AuthDenial // what SetAuthDenials reported
}

func newAuthFixture(t *testing.T) *authFixture {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, store.Options{DataDir: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &authFixture{inv: &recorder{}, iss: jwttest.New("https://issuer.test/"), tokens: security.NewTokens(st.Security()), aud: "shop-api"}
	f.iss.AddKey(t, "k1", "EdDSA")
	f.iss.AddKey(t, "k2", "RS256")
	jwksURL := f.iss.Serve(t)

	g := gateway.New(f.inv, slog.New(slog.DiscardHandler))
	g.SetAuth(tenantKeys{tokens: f.tokens, tenants: map[string]string{"shop": "team-a"}}, jwtauth.Options{MinRefresh: -1})
	f.metrics = telemetry.NewMetrics()
	g.SetMetrics(f.metrics)
	g.SetAuthDenials(func(d gateway.AuthDenial) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.denials = append(f.denials, d)
	})
	fn := model.Function{Name: "f", MaxRequestBytes: 1 << 10, Routes: []model.Route{
		{Method: "GET", Path: "/public"},
		{Method: "GET", Path: "/private", Auth: &model.RouteAuth{Type: model.AuthKey}},
		{Method: "GET", Path: "/me", Auth: &model.RouteAuth{Type: model.AuthJWT, Issuer: f.iss.Name, Audience: f.aud,
			JWKSURL: jwksURL, Algorithms: []string{"EdDSA", "RS256"}, Claims: []string{"email", "roles"}}},
	}}
	rev, err := model.Plan("shop", []model.Function{withModule(fn)})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Validate(ctx, rev); err != nil {
		t.Fatal(err)
	}
	if err := g.Provision(ctx, rev); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

// withModule fills what model.Plan needs of a function.
func withModule(f model.Function) model.Function {
	f.Runtime, f.Module = model.RuntimeWasm, strings.Repeat("a", 64)
	f.MemoryBytes, f.TimeoutMS, f.Concurrency, f.MaxInstances, f.MaxResponseBytes = 1<<20, 1000, 1, 1, 1<<10
	return f
}

func (f *authFixture) issue(t *testing.T, name, tenant string, scopes ...security.Scope) string {
	t.Helper()
	tok, _, err := f.tokens.Issue(context.Background(), security.TokenSpec{Name: name, Tenant: tenant, Scopes: scopes})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// call sends GET path with the headers and returns the status, the error
// code, and the headers the function saw (nil if it did not run).
func (f *authFixture) call(t *testing.T, path string, headers map[string]string) (int, string, http.Header) {
	t.Helper()
	before := f.inv.runs()
	req, _ := http.NewRequest(http.MethodGet, f.url+path, nil)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var e struct {
		Error struct{ Code, Message string }
	}
	_ = json.Unmarshal(body, &e)
	if resp.StatusCode == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("%s: 401 without WWW-Authenticate", path)
	}
	if f.inv.runs() == before {
		if resp.StatusCode == 200 {
			t.Fatalf("%s: 200 without running the function", path)
		}
		return resp.StatusCode, e.Error.Code + ": " + e.Error.Message, nil
	}
	f.inv.mu.Lock()
	seen := f.inv.reqs[len(f.inv.reqs)-1].Header.Clone()
	f.inv.mu.Unlock()
	return resp.StatusCode, "", seen
}

// hmacToken is a token signed with HS256 under a guessable secret: the
// algorithm-confusion attack (a public key used as an HMAC secret).
func hmacToken(t *testing.T, claims map[string]any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte("0123456789abcdef0123456789abcdef")}, (&jose.SignerOptions{}).WithHeader("kid", "k1"))
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(claims)
	jws, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := jws.CompactSerialize()
	return out
}

func bearer(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

// TestRouteAuthKey: a route with auth type key runs its function for a key
// of the app's tenant with invoke (and for a node-wide key); another
// tenant's key is 403, a key without invoke 403, no key or an unknown one
// 401. The function never sees the key, and learns its public id.
func TestRouteAuthKey(t *testing.T) {
	t.Parallel()
	f := newAuthFixture(t)
	own := f.issue(t, "a-invoke", "team-a", security.ScopeInvoke)
	other := f.issue(t, "b-invoke", "team-b", security.ScopeInvoke)
	reader := f.issue(t, "a-read", "team-a", security.ScopeRead)
	ops := f.issue(t, "ops", "", security.ScopeInvoke)

	code, _, seen := f.call(t, "/private", bearer(own))
	if code != 200 || seen.Get("Authorization") != "" || seen.Get(gateway.HeaderAuth) != "key" ||
		seen.Get(gateway.HeaderAuthTenant) != "team-a" || len(seen.Get(gateway.HeaderAuthSubject)) != 12 {
		t.Fatalf("own tenant's key: %d, function saw %v", code, seen)
	}
	if code, _, _ := f.call(t, "/private", bearer(ops)); code != 200 {
		t.Fatalf("node-wide key: %d", code)
	}
	revoked := f.issue(t, "gone", "team-a", security.ScopeInvoke)
	if code, _, _ := f.call(t, "/private", bearer(revoked)); code != 200 {
		t.Fatalf("key before revocation: %d", code)
	}
	if _, err := f.tokens.Revoke(context.Background(), "gone"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name    string
		headers map[string]string
		status  int
		msg     string
	}{
		{"revoked", bearer(revoked), 401, "unknown token"},
		{"no credentials", nil, 401, "requires an API key of app shop's tenant"},
		{"basic auth", map[string]string{"Authorization": "Basic YTpi"}, 401, "requires an API key"},
		{"unknown key", bearer(security.TokenPrefix + strings.Repeat("A", 43)), 401, "unknown token"},
		{"a JWT on a key route", bearer(f.iss.Token(t, "k1", f.iss.Claims(f.aud, "alice"))), 401, "not a Nimbus token"},
		{"other tenant", bearer(other), 403, `forbidden: key "b-invoke" belongs to tenant team-b`},
		{"no invoke scope", bearer(reader), 403, `key "a-read" lacks the invoke scope`},
	} {
		code, msg, seen := f.call(t, "/private", c.headers)
		if code != c.status || !strings.Contains(msg, c.msg) || seen != nil {
			t.Errorf("%s: %d %q (function ran: %v), want %d with %q", c.name, code, msg, seen != nil, c.status, c.msg)
		}
	}
}

// TestRouteAuthJWT walks the ways a token can be wrong; each is refused
// with 401 and a message saying what was wrong, and the function does not
// run. A good token runs it with sub and the configured claims as headers.
func TestRouteAuthJWT(t *testing.T) {
	t.Parallel()
	f := newAuthFixture(t)
	good := f.iss.Claims(f.aud, "alice")
	good["email"] = "alice@example.com"
	good["roles"] = []string{"admin"}
	code, _, seen := f.call(t, "/me", bearer(f.iss.Token(t, "k1", good)))
	if code != 200 || seen.Get(gateway.HeaderAuthSubject) != "alice" || seen.Get(gateway.HeaderAuth) != "jwt" ||
		seen.Get("X-Nimbus-Auth-Claim-Email") != "alice@example.com" || seen.Get("X-Nimbus-Auth-Claim-Roles") != `["admin"]` ||
		seen.Get("Authorization") != "" {
		t.Fatalf("good token: %d, function saw %v", code, seen)
	}
	if code, _, _ := f.call(t, "/me", bearer(f.iss.Token(t, "k2", good))); code != 200 {
		t.Fatalf("good RS256 token: %d", code)
	}

	claims := func(change func(c map[string]any)) map[string]any {
		c := f.iss.Claims(f.aud, "alice")
		change(c)
		return c
	}
	stranger := jwttest.New(f.iss.Name) // same issuer name, keys the JWKS does not hold
	stranger.AddKey(t, "k1", "EdDSA")
	stranger.AddKey(t, "k7", "EdDSA")
	es := jwttest.New(f.iss.Name)
	es.AddKey(t, "k1", "ES256")
	for _, c := range []struct {
		name  string
		token string
		msg   string
	}{
		{"expired", f.iss.Token(t, "k1", claims(func(c map[string]any) { c["exp"] = time.Now().Add(-time.Hour).Unix() })), "invalid_token: invalid token: the token expired at"},
		{"not yet valid", f.iss.Token(t, "k1", claims(func(c map[string]any) { c["nbf"] = time.Now().Add(time.Hour).Unix() })), "is not valid before"},
		{"no exp", f.iss.Token(t, "k1", claims(func(c map[string]any) { delete(c, "exp") })), "no exp claim"},
		{"wrong audience", f.iss.Token(t, "k1", claims(func(c map[string]any) { c["aud"] = "other-api" })), `audience ["other-api"] does not include this route's ("shop-api")`},
		{"wrong issuer", f.iss.Token(t, "k1", claims(func(c map[string]any) { c["iss"] = "https://evil.test/" })), `issuer "https://evil.test/" is not this route's`},
		{"alg none", jwttest.Unsigned(t, "k1", f.iss.Claims(f.aud, "alice")), `algorithm "none" is not accepted by this route`},
		{"alg HS256", hmacToken(t, f.iss.Claims(f.aud, "alice")), `algorithm "HS256" is not accepted by this route`},
		{"alg not allowed", es.Token(t, "k1", f.iss.Claims(f.aud, "alice")), `algorithm "ES256" is not accepted`},
		{"unknown kid", stranger.Token(t, "k7", f.iss.Claims(f.aud, "alice")), `key id "k7" is not in the issuer's key set`},
		{"another key under a known kid", stranger.Token(t, "k1", f.iss.Claims(f.aud, "alice")), `signature does not verify with key "k1"`},
		{"tampered payload", jwttest.Tamper(t, f.iss.Token(t, "k1", f.iss.Claims(f.aud, "alice")), f.iss.Claims(f.aud, "root")), "signature does not verify"},
		{"not a JWT", "nmb_" + strings.Repeat("A", 43), "not a JWT"},
		{"garbage header", "e30x.e30.", "header is not base64url JSON"},
	} {
		code, msg, seen := f.call(t, "/me", bearer(c.token))
		if code != 401 || !strings.Contains(msg, c.msg) || seen != nil {
			t.Errorf("%s: %d %q (function ran: %v), want 401 with %q", c.name, code, msg, seen != nil, c.msg)
		}
	}
	if code, msg, _ := f.call(t, "/me", nil); code != 401 || !strings.Contains(msg, "requires a JWT from https://issuer.test/ for audience shop-api") {
		t.Errorf("no credentials: %d %q", code, msg)
	}
	// An API key of the app's own tenant does not open a JWT route.
	if code, _, _ := f.call(t, "/me", bearer(f.issue(t, "a", "team-a", security.ScopeInvoke))); code != 401 {
		t.Errorf("API key on a JWT route: %d, want 401", code)
	}
}

// TestPublicRouteStaysPublicAndAuthHeadersCannotBeForged: a route without
// auth runs for anyone, and on every route the X-Nimbus-Auth headers a
// client sends are removed before the function sees the request.
func TestPublicRouteStaysPublicAndAuthHeadersCannotBeForged(t *testing.T) {
	t.Parallel()
	f := newAuthFixture(t)
	forged := map[string]string{gateway.HeaderAuth: "jwt", gateway.HeaderAuthSubject: "root", gateway.HeaderAuthTenant: "team-a",
		"X-Nimbus-Auth-Claim-Roles": `["admin"]`, "x-nimbus-auth-claim-email": "root@example.com", "Authorization": "Bearer whatever"}
	code, _, seen := f.call(t, "/public", forged)
	if code != 200 {
		t.Fatalf("public route: %d", code)
	}
	for name := range seen {
		if strings.HasPrefix(name, gateway.HeaderAuth) {
			t.Errorf("public route: forged header %s reached the function", name)
		}
	}
	if seen.Get("Authorization") != "Bearer whatever" {
		t.Errorf("public route: Authorization is the function's own business, and was changed: %q", seen.Get("Authorization"))
	}
	// On a JWT route, only what was verified arrives.
	headers := map[string]string{}
	for k, v := range forged {
		headers[k] = v
	}
	headers["Authorization"] = "Bearer " + f.iss.Token(t, "k1", f.iss.Claims(f.aud, "alice")) // no email, no roles
	code, _, seen = f.call(t, "/me", headers)
	if code != 200 || seen.Get(gateway.HeaderAuthSubject) != "alice" || seen.Get("X-Nimbus-Auth-Claim-Roles") != "" ||
		seen.Get("X-Nimbus-Auth-Claim-Email") != "" || seen.Get(gateway.HeaderAuthTenant) != "" {
		t.Fatalf("JWT route with forged headers: %d, function saw %v", code, seen)
	}
}

// TestRouteAuthRefusalsCounted: every refusal is reported to the denial
// sink with its route and error code, and counted in the request metrics
// (nimbus_requests_total by status, nimbus_request_errors_total by code);
// admitted requests and public routes are neither.
func TestRouteAuthRefusalsCounted(t *testing.T) {
	t.Parallel()
	f := newAuthFixture(t)
	other := f.issue(t, "b-invoke", "team-b", security.ScopeInvoke)
	own := f.issue(t, "a-invoke", "team-a", security.ScopeInvoke)
	for _, c := range []struct {
		path    string
		headers map[string]string
		status  int
	}{
		{"/public", nil, 200},
		{"/private", bearer(own), 200},
		{"/private", nil, 401},
		{"/private", bearer(security.TokenPrefix + strings.Repeat("A", 43)), 401},
		{"/private", bearer(other), 403},
		{"/me", bearer("e30x.e30."), 401},
	} {
		if code, _, _ := f.call(t, c.path, c.headers); code != c.status {
			t.Fatalf("%s: %d, want %d", c.path, code, c.status)
		}
	}
	f.mu.Lock()
	got := f.denials
	f.mu.Unlock()
	want := []gateway.AuthDenial{
		{App: "shop", Function: "f", Route: "GET /private", Status: 401, Code: "unauthorized"},
		{App: "shop", Function: "f", Route: "GET /private", Status: 401, Code: "unauthorized"},
		{App: "shop", Function: "f", Route: "GET /private", Status: 403, Code: "forbidden"},
		{App: "shop", Function: "f", Route: "GET /me", Status: 401, Code: "invalid_token"},
	}
	if len(got) != len(want) {
		t.Fatalf("denials reported: %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("denial %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"nimbus_requests_total", map[string]string{"app": "shop", "function": "f", "code": "401"}, 3},
		{"nimbus_requests_total", map[string]string{"app": "shop", "function": "f", "code": "403"}, 1},
		{"nimbus_request_errors_total", map[string]string{"app": "shop", "function": "f", "reason": "unauthorized"}, 2},
		{"nimbus_request_errors_total", map[string]string{"app": "shop", "function": "f", "reason": "forbidden"}, 1},
		{"nimbus_request_errors_total", map[string]string{"app": "shop", "function": "f", "reason": "invalid_token"}, 1},
	} {
		if got := counter(t, f.metrics, c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}

// TestRouteAuthRefusedAtValidate: a gateway without a key store refuses
// key routes, and a JWKS the verifier cannot use refuses the deploy.
func TestRouteAuthRefusedAtValidate(t *testing.T) {
	t.Parallel()
	g := gateway.New(nil, slog.New(slog.DiscardHandler))
	rev, err := model.Plan("shop", []model.Function{withModule(model.Function{Name: "f", MaxRequestBytes: 1,
		Routes: []model.Route{{Path: "/p", Auth: &model.RouteAuth{Type: model.AuthKey}}}})})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Validate(context.Background(), rev); !errors.Is(err, model.ErrInvalid) || !strings.Contains(err.Error(), "no key store") {
		t.Fatalf("key route without keys: %v", err)
	}
	badKey := `{"keys":[{"kty":"EC","crv":"P-256","kid":"x","x":"AAAA","y":"AAAA"}]}`
	rev, err = model.Plan("shop", []model.Function{withModule(model.Function{Name: "f", MaxRequestBytes: 1,
		Routes: []model.Route{{Path: "/p", Auth: &model.RouteAuth{Type: model.AuthJWT, Issuer: "i", Audience: "a", JWKS: badKey}}}})})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Validate(context.Background(), rev); !errors.Is(err, model.ErrInvalid) || !strings.Contains(err.Error(), `route "/p"`) {
		t.Fatalf("unusable inline JWKS: %v", err)
	}
}
