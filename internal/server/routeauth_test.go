package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/audit"
	"github.com/nimbus-dev/nimbus/internal/guesttest"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/security"
	"github.com/nimbus-dev/nimbus/internal/security/jwtauth/jwttest"
	"github.com/nimbus-dev/nimbus/internal/server"
)

// TestRouteAuthOnANode: a node serves an app of tenant team-a with a
// public route, a key route and two JWT routes whose keys are fetched
// through the egress guard: one at an allowed loopback address, one at a
// loopback address no operator allowed (503, and the issuer never hears
// of it). A real guest shows what reached it.
func TestRouteAuthOnANode(t *testing.T) {
	t.Parallel()
	guest := guesttest.MustBuild(t, "testdata/whoami", guesttest.Reactor)
	iss := jwttest.New("https://issuer.test/")
	iss.AddKey(t, "k1", "ES256")
	allowedURL := iss.Serve(t) // 127.0.0.1: allowed below
	blocked := jwttest.New(iss.Name)
	blocked.AddKey(t, "k1", "ES256")
	blockedURL := blocked.ServeOn(t, "127.0.0.2") // loopback, not allowed
	dir := t.TempDir()
	srv, err := server.Start(context.Background(), server.Config{
		DataDir: filepath.Join(dir, "data"), CacheDir: cacheDir, Listen: "127.0.0.1:0", APIListen: "127.0.0.1:0",
		Logger:           slog.New(slog.NewTextHandler(io.Discard, nil)),
		EgressAllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close(context.Background()) })

	f := fn("whoami", guest, "GET /public")
	f.Routes = append(f.Routes,
		model.Route{Method: "GET", Path: "/private", Auth: &model.RouteAuth{Type: model.AuthKey}},
		model.Route{Method: "GET", Path: "/me", Auth: &model.RouteAuth{Type: model.AuthJWT, Issuer: iss.Name, Audience: "shop",
			JWKSURL: allowedURL, Algorithms: []string{"ES256"}, Claims: []string{"email"}}},
		model.Route{Method: "GET", Path: "/blocked", Auth: &model.RouteAuth{Type: model.AuthJWT, Issuer: iss.Name, Audience: "shop",
			JWKSURL: blockedURL, Algorithms: []string{"ES256"}}},
	)
	ctx := model.WithTenant(context.Background(), "team-a")
	if _, err := srv.PutArtifact(ctx, guest); err != nil {
		t.Fatal(err)
	}
	if _, _, err := srv.Deploy(ctx, "shop", model.Spec{Functions: []model.Function{f}}); err != nil {
		t.Fatal(err)
	}
	issue := func(name, tenant string) string {
		tok, _, err := srv.Tokens().Issue(context.Background(), security.TokenSpec{Name: name, Tenant: tenant, Scopes: []security.Scope{security.ScopeInvoke}})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	call := func(path, auth string, extra ...string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, srv.GatewayURL()+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		for i := 0; i+1 < len(extra); i += 2 {
			req.Header.Set(extra[i], extra[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	if code, body := call("/public", "", "X-Nimbus-Auth-Subject", "root"); code != 200 || body != "authorization: false\n" {
		t.Fatalf("public route: %d %q", code, body)
	}
	own := issue("a", "team-a")
	if code, body := call("/private", own); code != 200 || !strings.Contains(body, "X-Nimbus-Auth: key\n") ||
		!strings.Contains(body, "X-Nimbus-Auth-Tenant: team-a\n") || !strings.Contains(body, "authorization: false") {
		t.Fatalf("own tenant's key: %d %q", code, body)
	}
	if code, body := call("/private", issue("b", "team-b")); code != 403 || !strings.Contains(body, "belongs to tenant team-b") {
		t.Fatalf("other tenant's key: %d %q", code, body)
	}
	if code, body := call("/private", ""); code != 401 || !strings.Contains(body, "requires an API key") {
		t.Fatalf("no key: %d %q", code, body)
	}
	claims := iss.Claims("shop", "alice")
	claims["email"] = "alice@example.com"
	code, body := call("/me", iss.Token(t, "k1", claims), "X-Nimbus-Auth-Claim-Roles", "admin")
	if code != 200 || body != "X-Nimbus-Auth-Claim-Email: alice@example.com\nX-Nimbus-Auth-Subject: alice\nX-Nimbus-Auth: jwt\nauthorization: false\n" {
		t.Fatalf("good token: %d %q", code, body)
	}
	// The egress guard keeps a manifest's jwks_url from reaching what the
	// operator did not allow: the token cannot be checked (503), and the
	// server at that address receives nothing.
	if code, body := call("/blocked", blocked.Token(t, "k1", blocked.Claims("shop", "alice"))); code != 503 || !strings.Contains(body, "auth_unavailable") {
		t.Fatalf("JWKS behind the guard: %d %q", code, body)
	}
	if n := blocked.Requests.Load(); n != 0 {
		t.Fatalf("the blocked JWKS server got %d requests", n)
	}
	if code, body := call("/me", own); code != 401 || !strings.Contains(body, "invalid_token") {
		t.Fatalf("API key on a JWT route: %d %q", code, body)
	}

	// A flood of bad keys is counted in the metrics, and is one audit
	// entry per route and answer, not one per request.
	const flood = 200
	for range flood {
		if code, _ := call("/private", security.TokenPrefix+strings.Repeat("A", 43)); code != 401 {
			t.Fatalf("unknown key: %d", code)
		}
	}
	srv.FlushRouteDenials()
	entries, err := srv.Audit().List(context.Background(), audit.Filter{Action: "route.denied"})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Actor != "gateway" || e.Tenant != "team-a" || e.Target != "shop/whoami" || e.Outcome != audit.OutcomeDenied {
			t.Errorf("route.denied entry %+v", e)
		}
	}
	for _, want := range []string{
		fmt.Sprintf("%d requests refused (401 unauthorized) on GET /private from ", flood+1),
		"1 request refused (403 forbidden) on GET /private from ",
		"1 request refused (503 auth_unavailable) on GET /blocked from ",
		"1 request refused (401 invalid_token) on GET /me from ",
	} {
		if !slices.ContainsFunc(entries, func(e audit.Entry) bool { return strings.HasPrefix(e.Detail, want) }) {
			t.Errorf("no route.denied entry %q... in %+v", want, entries)
		}
	}
	if len(entries) != 4 {
		t.Errorf("%d route.denied entries, want 4 (one per route and answer): %+v", len(entries), entries)
	}
	if rep, err := srv.Audit().Verify(context.Background()); err != nil || !rep.OK() {
		t.Fatalf("audit verify: %+v %v", rep, err)
	}
	resp, err := http.Get(srv.APIURL() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		fmt.Sprintf(`nimbus_request_errors_total{app="shop",function="whoami",reason="unauthorized"} %d`, flood+1),
		`nimbus_request_errors_total{app="shop",function="whoami",reason="forbidden"} 1`,
		`nimbus_request_errors_total{app="shop",function="whoami",reason="invalid_token"} 1`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
