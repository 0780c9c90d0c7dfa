package gateway_test

import (
	"context"
	"errors"
	"fmt"
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

// TestTableAcrossManyDeploys: routes added in place as apps are deployed,
// redeployed with more routes or other functions, redeployed without a
// route, and retired, are served exactly as a table built from scratch
// would serve them.
func TestTableAcrossManyDeploys(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	g := gateway.New(answer{}, slog.New(slog.DiscardHandler))
	get := func(method, path string) (int, string) {
		w := httptest.NewRecorder()
		g.ServeHTTP(w, httptest.NewRequest(method, path, nil))
		return w.Code, w.Body.String()
	}
	const n = 500
	for i := range n {
		app := fmt.Sprintf("a%03d", i)
		if err := g.Validate(ctx, rev(app, "GET /"+app+"/{x}")); err != nil {
			t.Fatal(err)
		}
		if err := g.Provision(ctx, rev(app, "GET /"+app+"/{x}")); err != nil {
			t.Fatal(err)
		}
	}
	for _, i := range []int{0, 250, n - 1} {
		app := fmt.Sprintf("a%03d", i)
		if code, body := get("GET", "/"+app+"/y"); code != 200 || body != app+"/f" {
			t.Fatalf("GET /%s/y = %d %q", app, code, body)
		}
	}
	// Another app may not take a path of one of them.
	if err := g.Validate(ctx, rev("new", "GET /a250/probe")); !errors.Is(err, model.ErrConflict) {
		t.Fatalf("Validate of an overlap with app a250: %v", err)
	}

	// A redeploy that keeps its pattern and adds one, with another function.
	r := rev("a007", "GET /a007/{x}", "POST /a007/{x}")
	r.Functions[0].Name = "g"
	if err := g.Provision(ctx, r); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"GET", "POST"} {
		if code, body := get(m, "/a007/y"); code != 200 || body != "a007/g" {
			t.Fatalf("%s /a007/y after a redeploy = %d %q, want a007/g", m, code, body)
		}
	}
	// A redeploy without a pattern: it stops being served.
	if err := g.Provision(ctx, rev("a007", "POST /a007/{x}")); err != nil {
		t.Fatal(err)
	}
	if code, _ := get("GET", "/a007/y"); code != http.StatusMethodNotAllowed {
		t.Fatalf("GET /a007/y after its route was dropped = %d, want 405", code)
	}
	if code, body := get("POST", "/a007/y"); code != 200 || body != "a007/f" {
		t.Fatalf("POST /a007/y = %d %q", code, body)
	}
	// Deploys in place after a rebuild still work, and a retired app's
	// paths are free.
	if err := g.Provision(ctx, rev("late", "GET /late")); err != nil {
		t.Fatal(err)
	}
	if err := g.Retire(ctx, "a250"); err != nil {
		t.Fatal(err)
	}
	if code, _ := get("GET", "/a250/y"); code != http.StatusNotFound {
		t.Fatalf("GET /a250/y after retire = %d, want 404", code)
	}
	if err := g.Validate(ctx, rev("new", "GET /a250/probe")); err != nil {
		t.Fatalf("a retired app's route still counts: %v", err)
	}
	for path, want := range map[string]string{"/late": "late/f", "/a499/z": "a499/f", "/a000/z": "a000/f"} {
		if code, body := get("GET", path); code != 200 || body != want {
			t.Fatalf("GET %s = %d %q, want %q", path, code, body, want)
		}
	}
}

// TestProvisionRefusesAConflictWithinTheRevision: two functions of one
// revision on one pattern break the table; what was served still is.
func TestProvisionRefusesAConflictWithinTheRevision(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	g := gateway.New(answer{}, slog.New(slog.DiscardHandler))
	if err := g.Provision(ctx, rev("a", "GET /a")); err != nil {
		t.Fatal(err)
	}
	bad := rev("b", "GET /b")
	bad.Functions = append(bad.Functions, model.Function{Name: "g", Routes: []model.Route{{Method: "GET", Path: "/b"}}})
	if err := g.Provision(ctx, bad); !errors.Is(err, model.ErrConflict) {
		t.Fatalf("Provision of one pattern twice: %v", err)
	}
	w := httptest.NewRecorder()
	g.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/b", nil))
	if w.Code != http.StatusNotFound {
		t.Fatalf("GET /b after a refused Provision = %d", w.Code)
	}
	if err := g.Provision(ctx, rev("b", "GET /b")); err != nil {
		t.Fatalf("a good revision after a refused one: %v", err)
	}
}
