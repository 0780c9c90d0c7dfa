package api_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/api"
	"github.com/nimbus-dev/nimbus/internal/security"
	"github.com/nimbus-dev/nimbus/internal/store"
	"github.com/nimbus-dev/nimbus/internal/telemetry"
)

// tokenServer serves the API (no platform: only the token endpoints and
// the auth guard are exercised) over real tokens on a real store, and
// returns it with the admin token.
func tokenServer(t *testing.T) (*httptest.Server, *security.Tokens, string) {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(context.Background(), store.Options{DataDir: t.TempDir(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	tokens := security.NewTokens(st.Security())
	admin, _, err := tokens.EnsureAdmin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.Handler(nil, tokens, telemetry.NewMetrics(), "test", quiet))
	t.Cleanup(srv.Close)
	return srv, tokens, admin
}

type answer struct {
	status int
	header http.Header
	body   string
}

func call(t *testing.T, base, auth, method, path, body string) answer {
	t.Helper()
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, string(b)}
}

// TestBearerScheme: the scheme is case-insensitive (RFC 9110); anything but
// a bearer token with a value is a 401.
func TestBearerScheme(t *testing.T) {
	srv, _, admin := tokenServer(t)
	for _, auth := range []string{"Bearer " + admin, "bearer " + admin, "BEARER " + admin, "Bearer   " + admin, " bearer " + admin + " "} {
		if a := call(t, srv.URL, auth, "GET", "/api/v1/tokens", ""); a.status != 200 {
			t.Errorf("Authorization %q: %d %s", auth, a.status, a.body)
		}
	}
	for _, auth := range []string{"", "Bearer", "Bearer ", "Basic " + admin, admin, "Bearer nmb_nope"} {
		if a := call(t, srv.URL, auth, "GET", "/api/v1/tokens", ""); a.status != 401 {
			t.Errorf("Authorization %q: %d, want 401", auth, a.status)
		}
	}
}

// TestTokenEndpoints: an admin creates a scoped token; it works within its
// scope and is refused outside it, naming the missing scope (in a header
// too, for HEAD); the listing never shows a secret; revoked, it is refused
// on the next call.
func TestTokenEndpoints(t *testing.T) {
	srv, _, admin := tokenServer(t)
	bearer := "Bearer " + admin
	a := call(t, srv.URL, bearer, "POST", "/api/v1/tokens", `{"name": "ci", "scopes": ["read"], "expires_in": "30d"}`)
	if a.status != 201 {
		t.Fatalf("create: %d %s", a.status, a.body)
	}
	var created api.CreatedToken
	if err := json.Unmarshal([]byte(a.body), &created); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(created.Token, security.TokenPrefix) || created.Name != "ci" || created.CreatedBy != "admin" ||
		created.ExpiresAt == nil || created.ExpiresAt.Sub(created.CreatedAt) != 30*24*time.Hour {
		t.Fatalf("created %+v", created)
	}
	ci := "Bearer " + created.Token

	// Within its scope, and outside it.
	if a := call(t, srv.URL, ci, "GET", "/api/v1/tokens/", ""); a.status == 401 {
		t.Fatalf("the new token is unknown: %s", a.body)
	}
	a = call(t, srv.URL, ci, "GET", "/api/v1/tokens", "")
	if a.status != 403 || a.header.Get(api.HeaderRequiredScope) != "admin" || !strings.Contains(a.body, `lacks the \"admin\" scope`) {
		t.Fatalf("read token listing tokens: %d %v %s", a.status, a.header, a.body)
	}
	a = call(t, srv.URL, ci, "HEAD", "/api/v1/artifacts/"+strings.Repeat("a", 64), "")
	if a.status != 403 || a.header.Get(api.HeaderRequiredScope) != "deploy" {
		t.Fatalf("read token on HEAD artifact: %d %v", a.status, a.header)
	}

	a = call(t, srv.URL, bearer, "GET", "/api/v1/tokens", "")
	var list []api.TokenInfo
	if err := json.Unmarshal([]byte(a.body), &list); err != nil || len(list) != 2 {
		t.Fatalf("list: %d %s", a.status, a.body)
	}
	if strings.Contains(a.body, strings.TrimPrefix(created.Token, security.TokenPrefix)) || strings.Contains(a.body, strings.TrimPrefix(admin, security.TokenPrefix)) {
		t.Fatalf("list shows a secret: %s", a.body)
	}
	if list[0].Name != "admin" || list[1].ID != created.ID {
		t.Fatalf("list: %+v", list)
	}

	a = call(t, srv.URL, bearer, "DELETE", "/api/v1/tokens/"+created.ID, "")
	if a.status != 200 || !strings.Contains(a.body, created.ID) {
		t.Fatalf("revoke: %d %s", a.status, a.body)
	}
	if a := call(t, srv.URL, ci, "GET", "/api/v1/tokens", ""); a.status != 401 {
		t.Fatalf("revoked token: %d %s", a.status, a.body)
	}
	if a := call(t, srv.URL, bearer, "DELETE", "/api/v1/tokens/"+created.ID, ""); a.status != 404 || a.header.Get("X-Nimbus-Error") != "token_not_found" {
		t.Fatalf("second revoke: %d %s", a.status, a.body)
	}
}

func TestTokenRequestsRefused(t *testing.T) {
	srv, _, admin := tokenServer(t)
	for _, body := range []string{
		`{"name": "ci"}`,
		`{"name": "ci", "scopes": ["root"]}`,
		`{"name": "c i", "scopes": ["read"]}`,
		`{"name": "ci", "scopes": ["read"], "expires_in": "soon"}`,
		`{"name": "ci", "scopes": ["read"], "expires_in": "-1h"}`,
		`{"name": "ci", "scopes": ["read"], "extra": 1}`,
	} {
		a := call(t, srv.URL, "Bearer "+admin, "POST", "/api/v1/tokens", body)
		if a.status != 400 {
			t.Errorf("%s: %d %s, want 400", body, a.status, a.body)
		}
	}
}

// TestLocalHandler: the local socket's handler needs no token and records
// tokens as created by "local".
func TestLocalHandler(t *testing.T) {
	_, tokens, _ := tokenServer(t)
	srv := httptest.NewServer(api.LocalHandler(tokens, api.LocalInfo{APIURL: "http://127.0.0.1:1", Version: "test"}, nil))
	t.Cleanup(srv.Close)
	a := call(t, srv.URL, "", "POST", "/api/v1/tokens", `{"name": "rescue", "scopes": ["admin"]}`)
	var created api.CreatedToken
	if a.status != 201 || json.Unmarshal([]byte(a.body), &created) != nil || created.CreatedBy != "local" {
		t.Fatalf("create over the local socket: %d %s", a.status, a.body)
	}
	if id, err := tokens.Verify(context.Background(), created.Token); err != nil || !id.Allows(security.ScopeAdmin) {
		t.Fatalf("minted token: %+v, %v", id, err)
	}
	if a := call(t, srv.URL, "", "GET", "/local/v1/info", ""); a.status != 200 || !strings.Contains(a.body, "127.0.0.1:1") {
		t.Fatalf("info: %d %s", a.status, a.body)
	}
	if a := call(t, srv.URL, "", "GET", "/api/v1/apps", ""); a.status != 404 {
		t.Fatalf("the local socket serves more than tokens: %d %s", a.status, a.body)
	}
}
