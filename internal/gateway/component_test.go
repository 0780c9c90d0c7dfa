package gateway_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/gateway"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime"
)

// answer is an Invoker that answers 200 with the app and function it was
// asked for: these tests are about the routing table, not invocations.
type answer struct{}

func (answer) Invoke(_ context.Context, app, function string, _ *runtime.Request) (*runtime.Response, error) {
	return &runtime.Response{Status: 200, Body: []byte(app + "/" + function)}, nil
}

func rev(app string, patterns ...string) *model.Revision {
	f := model.Function{Name: "f"}
	for _, p := range patterns {
		method, path, ok := strings.Cut(p, " ")
		if !ok {
			method, path = "", p
		}
		f.Routes = append(f.Routes, model.Route{Method: method, Path: path})
	}
	return &model.Revision{App: app, ID: app + "-rev", Functions: []model.Function{f}}
}

// TestValidateChecksTheWholeTable: a revision's routes are checked against
// the other apps' and the gateway's built-in routes; the app's own previous
// revision does not count. Another app's route may not overlap at all,
// whichever pattern is more specific.
func TestValidateChecksTheWholeTable(t *testing.T) {
	ctx := context.Background()
	g := gateway.New(nil, slog.New(slog.DiscardHandler))
	if err := g.Provision(ctx, rev("a", "GET /a/{x}")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		rev     *model.Revision
		wantErr bool
	}{
		{rev("b", "GET /b"), false},
		{rev("a", "GET /a/{y}"), false}, // replaces a's own route
		{rev("b", "GET /a/{y}"), true},
		{rev("b", "GET /a/probe"), true},    // more specific: would take a's traffic
		{rev("b", "HEAD /a/probe"), true},   // GET covers HEAD
		{rev("b", "/{x}/{y}"), true},        // more general, any method
		{rev("b", "/"), true},               // a catch-all meets every path
		{rev("b", "GET /a/{x}/{y}"), false}, // a/x/y is not a/x
		{rev("b", "GET /a/{x}/"), true},     // but a/x/ answers a/x with a redirect
		{rev("b", "POST /a/{x}"), false},    // another method on the same paths
		{rev("a", "GET /a/{y}", "GET /"), false},
		{rev("b", "/_nimbus/events/x/y"), true},
		{rev("b", "POST /_nimbus/events/{app}/{topic}"), true},
	} {
		err := g.Validate(ctx, tc.rev)
		var ce *model.ConflictError
		if err != nil && tc.rev.App == "b" && (!errors.As(err, &ce) || ce.OtherApp == "") {
			t.Errorf("Validate %s %v: %v does not name the owner", tc.rev.App, tc.rev.Functions[0].Routes, err)
		}
		if got := err != nil; got != tc.wantErr {
			t.Errorf("Validate %s %v: %v", tc.rev.App, tc.rev.Functions[0].Routes, err)
		}
		if err != nil && !errors.Is(err, model.ErrConflict) {
			t.Errorf("error does not match model.ErrConflict: %v", err)
		}
	}
}

// TestProvisionKeepsTheTableOnConflict: a revision that would break the
// table is not served, and what was served still is.
func TestProvisionKeepsTheTableOnConflict(t *testing.T) {
	ctx := context.Background()
	g := gateway.New(answer{}, slog.New(slog.DiscardHandler))
	if err := g.Provision(ctx, rev("a", "GET /a")); err != nil {
		t.Fatal(err)
	}
	if err := g.Provision(ctx, rev("b", "/_nimbus/events/x/y")); !errors.Is(err, model.ErrConflict) {
		t.Fatalf("Provision over the ingress: %v", err)
	}
	w := httptest.NewRecorder()
	g.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/a", nil))
	if w.Code != http.StatusOK || w.Body.String() != "a/f" {
		t.Fatalf("GET /a after a refused Provision = %d %q", w.Code, w.Body)
	}
	if err := g.Retire(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := g.Validate(ctx, rev("c", "GET /a")); err != nil {
		t.Fatalf("a retired app's route still counts: %v", err)
	}
}

// TestProvisionServesOverlapsRecordedBefore: revisions recorded before
// routes had owners may overlap; Provision (a restore) serves both with
// ServeMux's precedence and logs the overlap instead of refusing one.
func TestProvisionServesOverlapsRecordedBefore(t *testing.T) {
	ctx := context.Background()
	var logs strings.Builder
	g := gateway.New(answer{}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err := g.Provision(ctx, rev("a", "GET /probe")); err != nil {
		t.Fatal(err)
	}
	if err := g.Provision(ctx, rev("b", "/{x}")); err != nil {
		t.Fatalf("Provision of an overlapping stored revision: %v", err)
	}
	for path, want := range map[string]string{"/probe": "a/f", "/other": "b/f"} {
		w := httptest.NewRecorder()
		g.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		if w.Code != http.StatusOK || w.Body.String() != want {
			t.Errorf("GET %s = %d %q, want %q", path, w.Code, w.Body, want)
		}
	}
	if !strings.Contains(logs.String(), "overlap") || !strings.Contains(logs.String(), "app a") {
		t.Errorf("the overlap was not logged: %s", logs.String())
	}
}
