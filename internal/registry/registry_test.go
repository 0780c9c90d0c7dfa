package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/store"
)

type env struct {
	t     *testing.T
	dir   string
	store *store.Store
	reg   *Registry
	clock atomic.Int64 // fake clock: seconds since base, advanced on every read
}

var base = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir()}
	e.open()
	t.Cleanup(func() { e.store.Close() })
	return e
}

func (e *env) open() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := store.Open(ctx, store.Options{DataDir: e.dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		e.t.Fatal(err)
	}
	e.store = s
	e.reg = New(s.Registry(), s)
	e.reg.now = func() time.Time { return base.Add(time.Duration(e.clock.Add(1)) * time.Second) }
}

func (e *env) restart() {
	e.t.Helper()
	if err := e.store.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.open()
}

// module uploads a distinct artifact and returns its sha.
func (e *env) module(name string) string {
	e.t.Helper()
	sha, err := e.store.PutArtifact(context.Background(), []byte("\x00asm module "+name))
	if err != nil {
		e.t.Fatal(err)
	}
	return sha
}

func (e *env) fn(name string, routes ...string) model.Function {
	f := model.Function{
		Name: name, Runtime: "wasm", Module: e.module(name),
		MemoryBytes: 64 << 20, TimeoutMS: 2000, Concurrency: 1, MaxInstances: 10,
		MaxRequestBytes: 1 << 20, MaxResponseBytes: 1 << 20,
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

func (e *env) deploy(app string, fns ...model.Function) *model.Revision {
	e.t.Helper()
	rev, changed, err := e.reg.Deploy(context.Background(), app, fns)
	if err != nil {
		e.t.Fatalf("Deploy(%s): %v", app, err)
	}
	if !changed {
		e.t.Fatalf("Deploy(%s): changed = false, want true", app)
	}
	return rev
}

func (e *env) head(app string) *App {
	e.t.Helper()
	a, err := e.reg.App(context.Background(), app)
	if err != nil {
		e.t.Fatal(err)
	}
	return a
}

func reasons(a *App) []string {
	var out []string
	for _, h := range a.History {
		out = append(out, h.Reason+":"+h.Revision[:7])
	}
	return out
}

func TestDeploy(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	api, web := e.fn("api", "GET /users/{id}"), e.fn("web", "/")
	web.Capabilities = []string{"log", "kv", "log"}
	rev := e.deploy("hello", web, api)

	if len(rev.ID) != 64 || rev.App != "hello" || rev.CreatedAt.IsZero() {
		t.Fatalf("revision = %+v", rev)
	}
	if rev.Functions[0].Name != "api" || rev.Functions[1].Name != "web" {
		t.Errorf("functions not sorted by name: %s, %s", rev.Functions[0].Name, rev.Functions[1].Name)
	}
	for _, f := range rev.Functions {
		if len(f.Revision) != 64 {
			t.Errorf("function %s revision = %q", f.Name, f.Revision)
		}
	}
	if got := rev.Functions[1].Capabilities; strings.Join(got, ",") != "kv,log" {
		t.Errorf("capabilities = %v, want sorted and deduplicated [kv log]", got)
	}
	if web.Revision != "" || len(web.Capabilities) != 3 {
		t.Error("Deploy modified the caller's functions")
	}

	a := e.head("hello")
	if a.Active != rev.ID || len(a.History) != 1 || a.History[0].Reason != "deploy" || a.History[0].Revision != rev.ID {
		t.Fatalf("app = %+v", a)
	}
	active, err := e.reg.Active(ctx, "hello")
	if err != nil || active.ID != rev.ID {
		t.Fatalf("Active = %v, %v", active, err)
	}
	got, err := e.reg.Revision(ctx, "hello", rev.ID[:7])
	if err != nil || got.ID != rev.ID {
		t.Fatalf("Revision(prefix) = %v, %v", got, err)
	}

	// Same content in another order: a no-op.
	web2 := web
	web2.Capabilities = []string{"kv", "log"}
	again, changed, err := e.reg.Deploy(ctx, "hello", []model.Function{api, web2})
	if err != nil || changed || again.ID != rev.ID {
		t.Fatalf("no-op Deploy = %v, changed %v, %v; want same id, false", again, changed, err)
	}
	if n := len(e.head("hello").History); n != 1 {
		t.Errorf("no-op deploy added history: %d items", n)
	}

	// A change: new revision, the untouched function keeps its revision.
	api.Env = map[string]string{"GREETING": "hi"}
	rev2 := e.deploy("hello", api, web)
	if rev2.ID == rev.ID {
		t.Fatal("changed env gave the same revision id")
	}
	if rev2.Functions[1].Revision != rev.Functions[1].Revision {
		t.Error("unchanged function web got a new function revision")
	}
	if rev2.Functions[0].Revision == rev.Functions[0].Revision {
		t.Error("changed function api kept its function revision")
	}
	revs, err := e.reg.Revisions(ctx, "hello")
	if err != nil || len(revs) != 2 || revs[0].ID != rev2.ID || revs[1].ID != rev.ID {
		t.Fatalf("Revisions = %v, %v; want [rev2 rev] newest first", revs, err)
	}

	// Redeploying the older content activates the older revision again.
	api.Env = nil
	rev3 := e.deploy("hello", api, web)
	if rev3.ID != rev.ID || !rev3.CreatedAt.Equal(rev.CreatedAt) {
		t.Fatalf("redeploy of old content = %s (created %v), want %s (created %v)", rev3.ID, rev3.CreatedAt, rev.ID, rev.CreatedAt)
	}
	if got, want := reasons(e.head("hello")), []string{"deploy:" + rev.ID[:7], "deploy:" + rev2.ID[:7], "deploy:" + rev.ID[:7]}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("history = %v, want %v", got, want)
	}
}

func TestRollback(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	f := e.fn("api", "/v1/")
	revA := e.deploy("hello", f)

	_, err := e.reg.Rollback(ctx, "hello", "")
	if !errors.Is(err, ErrNoPreviousRevision) || !strings.Contains(err.Error(), "app hello has only one revision; nothing to roll back to") {
		t.Fatalf("Rollback with one revision: %v", err)
	}

	f.TimeoutMS = 5000
	revB := e.deploy("hello", f)
	f.TimeoutMS = 9000
	revC := e.deploy("hello", f)

	got, err := e.reg.Rollback(ctx, "hello", "")
	if err != nil || got.ID != revB.ID || e.head("hello").Active != revB.ID {
		t.Fatalf("Rollback() = %v, %v; want B", got, err)
	}
	// "" is the revision active before the current one: C again.
	got, err = e.reg.Rollback(ctx, "hello", "")
	if err != nil || got.ID != revC.ID {
		t.Fatalf("second Rollback() = %v, %v; want C", got, err)
	}
	// To a named revision by prefix, upper case accepted.
	got, err = e.reg.Rollback(ctx, "hello", strings.ToUpper(revA.ID[:8]))
	if err != nil || got.ID != revA.ID || e.head("hello").Active != revA.ID {
		t.Fatalf("Rollback(prefix of A) = %v, %v", got, err)
	}
	// To the active revision: a no-op.
	if _, err := e.reg.Rollback(ctx, "hello", revA.ID); err != nil {
		t.Fatal(err)
	}
	want := []string{"deploy:" + revA.ID[:7], "deploy:" + revB.ID[:7], "deploy:" + revC.ID[:7],
		"rollback:" + revB.ID[:7], "rollback:" + revC.ID[:7], "rollback:" + revA.ID[:7]}
	if got := reasons(e.head("hello")); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("history = %v\nwant %v", got, want)
	}

	tests := []struct {
		name, app, to string
		want          error
	}{
		{"unknown app", "nope", "", ErrAppNotFound},
		{"unknown app with target", "nope", revA.ID, ErrAppNotFound},
		{"unknown revision", "hello", strings.Repeat("0", 64), ErrRevisionNotFound},
		{"unknown prefix", "hello", "0000000", ErrRevisionNotFound},
		{"short prefix", "hello", revA.ID[:6], model.ErrInvalid},
		{"not hex", "hello", "zzzzzzzz", model.ErrInvalid},
		{"bad app name", "a.b", "", model.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := e.reg.Rollback(ctx, tt.app, tt.to); !errors.Is(err, tt.want) {
				t.Fatalf("Rollback(%s, %s) err = %v, want %v", tt.app, tt.to, err, tt.want)
			}
		})
	}
}

func TestAmbiguousPrefix(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	rev := e.deploy("hello", e.fn("api"))
	// Plant a second revision sharing the first 10 digits.
	twin := *rev
	twin.ID = rev.ID[:10] + strings.Repeat("0", 54)
	b, _ := json.Marshal(twin)
	if _, err := e.store.Registry().Put(ctx, revKey("hello", twin.ID), b); err != nil {
		t.Fatal(err)
	}
	_, err := e.reg.Revision(ctx, "hello", rev.ID[:8])
	if !errors.Is(err, model.ErrInvalid) || !strings.Contains(err.Error(), "ambiguous") || !strings.Contains(err.Error(), twin.ID) {
		t.Fatalf("ambiguous prefix err = %v", err)
	}
	if got, err := e.reg.Revision(ctx, "hello", rev.ID[:11]); err != nil || got.ID != rev.ID {
		t.Fatalf("longer prefix = %v, %v", got, err)
	}
}

func TestRouteConflicts(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.deploy("users", e.fn("get", "GET /users/{id}"), e.fn("static", "/static/{path...}"))

	tests := []struct {
		name      string
		routes    []string
		conflicts string // the other route, "" = no conflict
	}{
		{"disjoint", []string{"/orders/{id}"}, ""},
		{"more specific path", []string{"GET /users/me"}, ""},
		{"other method", []string{"POST /users/{id}"}, ""},
		{"same pattern", []string{"GET /users/{id}"}, "GET /users/{id}"},
		{"same shape other name", []string{"GET /users/{name}"}, "GET /users/{id}"},
		{"overlap", []string{"/orders", "GET /{kind}/posts"}, "GET /users/{id}"},
		{"overlap with wildcard tail", []string{"/{kind}/{id}"}, "/static/{path...}"},
		{"wildcard tail", []string{"/static/{rest...}"}, "/static/{path...}"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			app := fmt.Sprintf("other%d", i)
			_, _, err := e.reg.Deploy(ctx, app, []model.Function{e.fn("f", tt.routes...)})
			if tt.conflicts == "" {
				if err != nil {
					t.Fatalf("Deploy: %v", err)
				}
				// Do not leave it in the way of later cases.
				if err := e.reg.Delete(ctx, app); err != nil {
					t.Fatal(err)
				}
				return
			}
			var ce *model.ConflictError
			if !errors.Is(err, model.ErrConflict) || !errors.As(err, &ce) {
				t.Fatalf("Deploy err = %v, want a *ConflictError", err)
			}
			if ce.OtherApp != "users" || ce.OtherRoute.Pattern() != tt.conflicts || ce.App != app || ce.Function != "f" {
				t.Errorf("conflict = %+v, want other app users route %q", ce, tt.conflicts)
			}
			if !strings.Contains(err.Error(), "users") || !strings.Contains(err.Error(), tt.conflicts) {
				t.Errorf("message %q should name app users and route %q", err, tt.conflicts)
			}
			if _, err := e.reg.App(ctx, app); !errors.Is(err, ErrAppNotFound) {
				t.Errorf("a rejected deploy created app %s: %v", app, err)
			}
		})
	}

	// Redeploying the same app with its own routes is not a conflict.
	e.deploy("users", e.fn("get", "GET /users/{id}", "GET /users/{id}/posts"), e.fn("static", "/static/{path...}"))

	// Two functions of one app.
	_, _, err := e.reg.Deploy(ctx, "dup", []model.Function{e.fn("a", "/x/{id}"), e.fn("b", "/x/{name}")})
	var ce *model.ConflictError
	if !errors.As(err, &ce) || ce.OtherApp != "dup" || ce.Function != "b" || ce.OtherFunction != "a" {
		t.Fatalf("same-app conflict err = %v (%+v)", err, ce)
	}
}

func TestDeployValidation(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	good := e.fn("ok", "/ok")
	mod := func(change func(*model.Function)) []model.Function {
		f := good
		change(&f)
		return []model.Function{f}
	}
	missing := strings.Repeat("ab", 32)
	tests := []struct {
		name string
		app  string
		fns  []model.Function
		want error
		msg  string
	}{
		{"empty app name", "", []model.Function{good}, model.ErrInvalid, "app name is empty"},
		{"dot in app name", "a.b", []model.Function{good}, model.ErrInvalid, `"a.b"`},
		{"wildcard app name", "a*", []model.Function{good}, model.ErrInvalid, "letters, digits"},
		{"long app name", strings.Repeat("a", 64), []model.Function{good}, model.ErrInvalid, "longer than 63"},
		{"no functions", "app", nil, model.ErrInvalid, "no functions"},
		{"empty function name", "app", mod(func(f *model.Function) { f.Name = "" }), model.ErrInvalid, "function name is empty"},
		{"bad function name", "app", mod(func(f *model.Function) { f.Name = "a b" }), model.ErrInvalid, `"a b"`},
		{"duplicate function", "app", []model.Function{good, good}, model.ErrInvalid, "declared twice"},
		{"unknown runtime", "app", mod(func(f *model.Function) { f.Runtime = "" }), model.ErrInvalid, "runtime"},
		{"module not a sha", "app", mod(func(f *model.Function) { f.Module = "abc" }), model.ErrInvalid, "not a sha256"},
		{"negative timeout", "app", mod(func(f *model.Function) { f.TimeoutMS = -1 }), model.ErrInvalid, "timeout_ms -1 is out of range"},
		{"a billion instances", "app", mod(func(f *model.Function) { f.MaxInstances = 1e9 }), model.ErrInvalid, "max_instances 1000000000 is out of range: use 1 to 1000"},
		{"upper-case app", "Shop", []model.Function{good}, model.ErrInvalid, "app name"},
		{"env name with =", "app", mod(func(f *model.Function) { f.Env = map[string]string{"A=B": "c"} }), model.ErrInvalid, "environment"},
		{"empty capability", "app", mod(func(f *model.Function) { f.Capabilities = []string{""} }), model.ErrInvalid, "capability"},
		{"route without slash", "app", mod(func(f *model.Function) { f.Routes = []model.Route{{Path: "users"}} }), model.ErrInvalid, "must start with '/'"},
		{"route with host", "app", mod(func(f *model.Function) { f.Routes = []model.Route{{Path: "example.com/"}} }), model.ErrInvalid, "must start with '/'"},
		{"route under the ingress", "app", mod(func(f *model.Function) { f.Routes = []model.Route{{Method: "POST", Path: "/_nimbus/events/a/b"}} }), model.ErrInvalid, "reserved"},
		{"route under the API", "app", mod(func(f *model.Function) { f.Routes = []model.Route{{Path: "/api/v1/apps"}} }), model.ErrInvalid, "reserved"},
		{"route with a space", "app", mod(func(f *model.Function) { f.Routes = []model.Route{{Path: "/a b"}} }), model.ErrInvalid, "spaces"},
		{"bad wildcard", "app", mod(func(f *model.Function) { f.Routes = []model.Route{{Path: "/{a"}} }), model.ErrInvalid, "/{a"},
		{"lower-case method", "app", mod(func(f *model.Function) { f.Routes = []model.Route{{Method: "get", Path: "/"}} }), model.ErrInvalid, "method"},
		{"missing module", "app", mod(func(f *model.Function) { f.Module = missing }), ErrModuleNotFound, "function ok: module " + missing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := e.reg.Deploy(ctx, tt.app, tt.fns)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("Deploy err = %v, want %v containing %q", err, tt.want, tt.msg)
			}
		})
	}
	if apps, err := e.reg.Apps(ctx); err != nil || len(apps) != 0 {
		t.Fatalf("invalid deploys left apps behind: %v, %v", apps, err)
	}
}

func TestConcurrentDeploys(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	f := e.fn("api", "/v1/{x}")
	const workers, each = 6, 5
	var (
		mu  sync.Mutex
		ids = map[string]bool{}
		wg  sync.WaitGroup
	)
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				g := f
				g.Env = map[string]string{"W": fmt.Sprint(w), "I": fmt.Sprint(i)}
				rev, changed, err := e.reg.Deploy(ctx, "hammer", []model.Function{g})
				if err != nil || !changed {
					errs <- fmt.Errorf("worker %d deploy %d: changed %v, %w", w, i, changed, err)
					continue
				}
				mu.Lock()
				ids[rev.ID] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	a := e.head("hammer")
	if len(a.History) != workers*each {
		t.Fatalf("history has %d items, want %d", len(a.History), workers*each)
	}
	seen := map[string]bool{}
	for _, h := range a.History {
		if !ids[h.Revision] || seen[h.Revision] {
			t.Errorf("history item %s unexpected or repeated", h.Revision)
		}
		seen[h.Revision] = true
	}
	if last := a.History[len(a.History)-1].Revision; a.Active != last {
		t.Errorf("active %s is not the last activation %s", a.Active, last)
	}
	revs, err := e.reg.Revisions(ctx, "hammer")
	if err != nil || len(revs) != workers*each {
		t.Fatalf("Revisions: %d, %v", len(revs), err)
	}
}

func TestWatch(t *testing.T) {
	e := newEnv(t)
	e.deploy("before", e.fn("f", "/before"))

	ctx, cancel := context.WithCancel(context.Background())
	events := make(chan string, 64)
	done := make(chan error, 1)
	go func() { done <- e.reg.Watch(ctx, func(app string) { events <- app }) }()

	expect := func(want string) {
		t.Helper()
		select {
		case got := <-events:
			if got != want {
				t.Fatalf("watch fired for %q, want %q", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("watch did not fire for %q", want)
		}
	}
	expect("before") // existing apps are reported when the watch starts
	e.deploy("after", e.fn("g", "/after"))
	expect("after")
	if _, err := e.reg.Rollback(ctx, "after", ""); !errors.Is(err, ErrNoPreviousRevision) {
		t.Fatal(err)
	}
	if err := e.reg.Delete(context.Background(), "before"); err != nil {
		t.Fatal(err)
	}
	expect("before")
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Watch returned %v after cancel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not return after cancel")
	}
}

func TestDeleteAndApps(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.deploy("zeta", e.fn("f"))
	e.deploy("alpha", e.fn("f"))
	old := e.deploy("mid", e.fn("f"))
	apps, err := e.reg.Apps(ctx)
	if err != nil || len(apps) != 3 || apps[0].Name != "alpha" || apps[1].Name != "mid" || apps[2].Name != "zeta" {
		t.Fatalf("Apps = %v, %v", apps, err)
	}
	if err := e.reg.Delete(ctx, "mid"); err != nil {
		t.Fatal(err)
	}
	for name, call := range map[string]func() error{
		"App":       func() error { _, err := e.reg.App(ctx, "mid"); return err },
		"Active":    func() error { _, err := e.reg.Active(ctx, "mid"); return err },
		"Revisions": func() error { _, err := e.reg.Revisions(ctx, "mid"); return err },
		"Revision":  func() error { _, err := e.reg.Revision(ctx, "mid", old.ID); return err },
		"Delete":    func() error { return e.reg.Delete(ctx, "mid") },
	} {
		if err := call(); !errors.Is(err, ErrAppNotFound) {
			t.Errorf("%s after Delete: %v, want ErrAppNotFound", name, err)
		}
	}
	if apps, _ := e.reg.Apps(ctx); len(apps) != 2 {
		t.Errorf("Apps after Delete: %d", len(apps))
	}
	// The name can be used again; history starts afresh.
	rev := e.deploy("mid", e.fn("f"))
	if a := e.head("mid"); len(a.History) != 1 || a.Active != rev.ID {
		t.Errorf("redeployed app = %+v", a)
	}
}

func TestSurvivesRestart(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	f := e.fn("api", "/v1")
	r1 := e.deploy("hello", f)
	f.TimeoutMS = 1
	r2 := e.deploy("hello", f)
	e.restart()
	a := e.head("hello")
	if a.Active != r2.ID || len(a.History) != 2 {
		t.Fatalf("after restart app = %+v", a)
	}
	got, err := e.reg.Rollback(ctx, "hello", "")
	if err != nil || got.ID != r1.ID {
		t.Fatalf("Rollback after restart = %v, %v", got, err)
	}
	e.restart()
	if a := e.head("hello"); a.Active != r1.ID || len(a.History) != 3 {
		t.Fatalf("after second restart app = %+v", a)
	}
}

func TestPlanMatchesDeploy(t *testing.T) {
	e := newEnv(t)
	fns := []model.Function{e.fn("b", "/b"), e.fn("a", "/a")}
	planned, err := model.Plan("hello", fns)
	if err != nil {
		t.Fatal(err)
	}
	rev := e.deploy("hello", fns...)
	if planned.ID != rev.ID || planned.Functions[0].Revision != rev.Functions[0].Revision || !planned.CreatedAt.IsZero() {
		t.Fatalf("Plan = %s/%s, Deploy = %s/%s", planned.ID, planned.Functions[0].Revision, rev.ID, rev.Functions[0].Revision)
	}
	// Plan checks neither artifacts nor other apps.
	f := fns[0]
	f.Module = strings.Repeat("cd", 32)
	if _, err := model.Plan("other", []model.Function{f}); err != nil {
		t.Fatalf("Plan with an unknown module: %v", err)
	}
	if _, err := model.Plan("a.b", fns); !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("Plan with a bad name: %v", err)
	}
}

// TestSetRouteCheck: a route check set by the node replaces the registry's
// own: it sees the planned revision, and what it refuses is not recorded.
func TestSetRouteCheck(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.deploy("users", e.fn("get", "GET /users/{id}"))
	var seen []string
	e.reg.SetRouteCheck(func(_ context.Context, rev *model.Revision) error {
		seen = append(seen, rev.App+" "+rev.Functions[0].Routes[0].Pattern())
		if rev.App == "refused" {
			return &model.ConflictError{App: rev.App, OtherApp: "elsewhere", Reason: "the node says so"}
		}
		return nil
	})
	// The registry's own check would refuse this one; the node's allows it.
	if _, _, err := e.reg.Deploy(ctx, "other", []model.Function{e.fn("f", "GET /users/{name}")}); err != nil {
		t.Fatalf("Deploy with the node's check: %v", err)
	}
	_, _, err := e.reg.Deploy(ctx, "refused", []model.Function{e.fn("f", "GET /free")})
	if !errors.Is(err, model.ErrConflict) {
		t.Fatalf("Deploy the check refuses: %v", err)
	}
	if _, err := e.reg.App(ctx, "refused"); !errors.Is(err, ErrAppNotFound) {
		t.Errorf("a refused deploy created the app: %v", err)
	}
	if want := []string{"other GET /users/{name}", "refused GET /free"}; !slices.Equal(seen, want) {
		t.Errorf("the check saw %q, want %q", seen, want)
	}
	// nil: the registry's own check again.
	e.reg.SetRouteCheck(nil)
	if _, _, err := e.reg.Deploy(ctx, "third", []model.Function{e.fn("f", "GET /users/{x}")}); !errors.Is(err, model.ErrConflict) {
		t.Fatalf("Deploy with the registry's own check: %v", err)
	}
}
