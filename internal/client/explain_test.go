package client_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/api"
	"github.com/nimbus-dev/nimbus/internal/apierror"
	"github.com/nimbus-dev/nimbus/internal/client"
	"github.com/nimbus-dev/nimbus/internal/security"
	"github.com/nimbus-dev/nimbus/internal/store"
	"github.com/nimbus-dev/nimbus/internal/telemetry"
)

// realTokens serves the real API handler (token endpoints and auth guard;
// no platform) over real tokens, and returns its URL, the tokens and the
// admin token.
func realTokens(t *testing.T) (string, *security.Tokens, string) {
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
	srv := serve(t, api.Handler(nil, tokens, telemetry.NewMetrics(), "test", quiet).ServeHTTP)
	return srv.URL, tokens, admin
}

// TestTokensAndScopes: tokens created, listed and revoked through the
// client; a read-only token's HEAD is refused with the missing scope named
// (the answer has no body) and where the token came from.
func TestTokensAndScopes(t *testing.T) {
	ctx := context.Background()
	url, _, admin := realTokens(t)
	c := client.New(url, admin)
	created, err := c.CreateToken(ctx, api.CreateTokenRequest{Name: "ci", Scopes: []string{"read"}})
	if err != nil {
		t.Fatal(err)
	}
	list, err := c.Tokens(ctx)
	if err != nil || len(list) != 2 || list[1].ID != created.ID {
		t.Fatalf("Tokens = %+v, %v", list, err)
	}

	reader := client.New(url, created.Token)
	reader.TokenSource = "$NIMBUS_TOKEN"
	_, err = reader.HasArtifact(ctx, strings.Repeat("a", 64))
	e := asError(t, err)
	for _, want := range []string{`"deploy" scope`, "HEAD /api/v1/artifacts/", "$NIMBUS_TOKEN", "nimbus token create"} {
		if e.Status != 403 || !strings.Contains(e.Message, want) {
			t.Errorf("read token HEAD: %d %q lacks %q", e.Status, e.Message, want)
		}
	}
	if _, err := reader.Tokens(ctx); asError(t, err).Status != 403 || !strings.Contains(err.Error(), `"admin" scope`) {
		t.Fatalf("read token listing: %v", err)
	}

	if got, err := c.RevokeToken(ctx, "ci"); err != nil || got.ID != created.ID {
		t.Fatalf("RevokeToken = %+v, %v", got, err)
	}
	_, err = reader.Tokens(ctx)
	if e := asError(t, err); e.Status != 401 || !strings.Contains(e.Message, "came from $NIMBUS_TOKEN") || !strings.Contains(e.Message, "--data DIR") {
		t.Fatalf("revoked token: %+v", e)
	}
	_, err = reader.HasArtifact(ctx, strings.Repeat("a", 64))
	if e := asError(t, err); e.Status != 401 || !strings.Contains(e.Message, "came from $NIMBUS_TOKEN") {
		t.Fatalf("revoked token on HEAD: %+v", e)
	}
	_, err = client.New(url, "").Apps(ctx)
	if e := asError(t, err); e.Status != 401 || !strings.Contains(e.Message, "no API token was sent") {
		t.Fatalf("no token: %+v", e)
	}
}

// TestNotTheAPI: --server pointing at the gateway, or at something that is
// not Nimbus, says so instead of echoing a 404.
func TestNotTheAPI(t *testing.T) {
	gw := serve(t, func(w http.ResponseWriter, r *http.Request) {
		apierror.Write(w, apierror.New(http.StatusNotFound, "route_not_found", "no route matches; routes are declared in nimbus.yaml"))
	})
	_, err := client.New(gw.URL, "nmb_x").Apps(context.Background())
	if e := asError(t, err); !strings.Contains(e.Message, "is a Nimbus gateway") || !strings.Contains(e.Message, client.DefaultServer) {
		t.Fatalf("gateway as API: %+v", e)
	}
	other := serve(t, http.NotFound)
	_, err = client.New(other.URL, "nmb_x").Apps(context.Background())
	if e := asError(t, err); !strings.Contains(e.Message, "does not look like a Nimbus API") {
		t.Fatalf("a foreign server as API: %+v", e)
	}
}

// TestLocalClient: the local socket client reaches a LocalHandler over a
// Unix socket and mints an admin token without presenting one.
func TestLocalClient(t *testing.T) {
	_, tokens, _ := realTokens(t)
	sock := filepath.Join(t.TempDir(), "n.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(api.LocalHandler(tokens, api.LocalInfo{APIURL: "http://127.0.0.1:1"}, nil))
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	c := client.NewLocal(sock)
	info, err := c.LocalInfo(context.Background())
	if err != nil || info.APIURL != "http://127.0.0.1:1" {
		t.Fatalf("LocalInfo = %+v, %v", info, err)
	}
	created, err := c.CreateToken(context.Background(), api.CreateTokenRequest{Name: "rescue", Scopes: []string{"admin"}})
	if err != nil || created.CreatedBy != "local" {
		t.Fatalf("CreateToken = %+v, %v", created, err)
	}
	if _, err := tokens.Verify(context.Background(), created.Token); err != nil {
		t.Fatal(err)
	}
}
