package deploy_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/client"
	"github.com/nimbus-dev/nimbus/internal/deploy"
	"github.com/nimbus-dev/nimbus/internal/manifest"
	"github.com/nimbus-dev/nimbus/internal/model"
)

// TestValidateRefusesWhatDeployRefuses: each bad revision is refused both
// by `nimbus validate` (deploy.Validate on a manifest) and by a deploy
// through the control plane API (the same revision as JSON), for the same
// reason. Validation is one set of rules (internal/model, and the
// gateway's built-in routes) whichever way a revision arrives.
func TestValidateRefusesWhatDeployRefuses(t *testing.T) {
	ctx := context.Background()
	srv := start(t)
	c := client.New(srv.APIURL(), srv.AdminToken())
	module := wagiGuest("hi")
	sha := sha256Hex(module)
	if err := c.PutArtifact(ctx, sha, module); err != nil {
		t.Fatal(err)
	}
	longPath := "/" + strings.Repeat("a", 1100)
	bigValue := strings.Repeat("x", 65<<10)

	for _, tc := range []struct {
		name string
		app  string // default "shop"
		fn   string // default "hello"
		yaml string // the function's fields besides module
		set  func(*model.Function)
		says string // in both refusals
	}{
		{name: "route too long", yaml: "routes: [GET " + longPath + "]",
			set:  func(f *model.Function) { f.Routes = []model.Route{{Method: "GET", Path: longPath}} },
			says: "longer than 1024 bytes"},
		{name: "environment too large", yaml: "env: {BIG: " + bigValue + "}",
			set:  func(f *model.Function) { f.Env = map[string]string{"BIG": bigValue} },
			says: "over the limit of 65536"},
		{name: "overlaps the events ingress", yaml: `routes: ["POST /{tenant}/events/orders/{id}"]`,
			set: func(f *model.Function) {
				f.Routes = []model.Route{{Method: "POST", Path: "/{tenant}/events/orders/{id}"}}
			},
			says: "paths under /_nimbus/ are the gateway's own"},
		{name: "reserved api prefix", yaml: "routes: [GET /api/v1/things]",
			set:  func(f *model.Function) { f.Routes = []model.Route{{Method: "GET", Path: "/api/v1/things"}} },
			says: "Nimbus serves /api/ itself"},
		{name: "reserved nimbus prefix", yaml: "routes: [/_nimbus]",
			set:  func(f *model.Function) { f.Routes = []model.Route{{Path: "/_nimbus"}} },
			says: "Nimbus serves /_nimbus/ itself"},
		{name: "max_instances out of range", yaml: "max_instances: 1000000000",
			set:  func(f *model.Function) { f.MaxInstances = 1e9 },
			says: "out of range: use 1 to 1000"},
		{name: "timeout out of range", yaml: "timeout: 20m",
			set:  func(f *model.Function) { f.TimeoutMS = 20 * 60 * 1000 },
			says: "1ms to 15m"},
		{name: "request body out of range", yaml: "max_request_body: 65MiB",
			set:  func(f *model.Function) { f.MaxRequestBytes = 65 << 20 },
			says: "64MiB"},
		{name: "function name", fn: "Hello_World",
			says: "not a valid function name: use 1 to 63 lowercase letters"},
		{name: "app name", app: "My_Shop",
			says: "not a valid app name: use 1 to 63 lowercase letters"},
		{name: "runtime", yaml: "runtime: jvm",
			set:  func(f *model.Function) { f.Runtime = "jvm" },
			says: `unknown runtime "jvm"`},
		{name: "environment variable name", yaml: "env: {1ST: x}",
			set:  func(f *model.Function) { f.Env = map[string]string{"1ST": "x"} },
			says: `"1ST" is not a valid variable name`},
		{name: "method case", yaml: "routes: [get /x]",
			set:  func(f *model.Function) { f.Routes = []model.Route{{Method: "get", Path: "/x"}} },
			says: `method "get" must be uppercase: GET`},
		{name: "unknown method", yaml: "routes: [FETCH /x]",
			set:  func(f *model.Function) { f.Routes = []model.Route{{Method: "FETCH", Path: "/x"}} },
			says: `unknown HTTP method "FETCH"`},
		{name: "wasm concurrency", yaml: "concurrency: 4",
			set:  func(f *model.Function) { f.Concurrency = 4 },
			says: "must be 1 for runtime wasm"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app, fn := tc.app, tc.fn
			if app == "" {
				app = "shop"
			}
			if fn == "" {
				fn = "hello"
			}

			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "hello.wasm"), module, 0o644); err != nil {
				t.Fatal(err)
			}
			y := fmt.Sprintf("app: %s\nfunctions:\n  %s:\n    module: hello.wasm\n    %s\n", app, fn, tc.yaml)
			if err := os.WriteFile(filepath.Join(dir, "nimbus.yaml"), []byte(y), 0o644); err != nil {
				t.Fatal(err)
			}
			_, verr := deploy.Validate(dir)
			var merr manifest.Errors
			if !errors.As(verr, &merr) || !strings.Contains(verr.Error(), tc.says) {
				t.Errorf("nimbus validate: %v\nwant manifest errors saying %q", verr, tc.says)
			}

			f := model.Function{Name: fn, Runtime: model.RuntimeWasm, Module: sha}
			if tc.set != nil {
				tc.set(&f)
			}
			_, derr := c.Deploy(ctx, app, model.Spec{Functions: []model.Function{f}})
			var ce *client.Error
			if !errors.As(derr, &ce) || ce.Status/100 != 4 || !strings.Contains(derr.Error(), tc.says) {
				t.Errorf("API deploy: %v\nwant a 4xx saying %q", derr, tc.says)
			}
		})
	}
	if apps, err := c.Apps(ctx); err != nil || len(apps) != 0 {
		t.Fatalf("refused deploys left apps behind: %v, %v", apps, err)
	}
}

// TestAPIShowsEffectiveLimits: a limit left out (or 0) of a deploy through
// the API is stored and shown as the default that applies, the value a
// manifest without it would get.
func TestAPIShowsEffectiveLimits(t *testing.T) {
	ctx := context.Background()
	srv := start(t)
	c := client.New(srv.APIURL(), srv.AdminToken())
	module := wagiGuest("hi")
	sha := sha256Hex(module)
	if err := c.PutArtifact(ctx, sha, module); err != nil {
		t.Fatal(err)
	}
	res, err := c.Deploy(ctx, "shop", model.Spec{Functions: []model.Function{{Name: "hello", Runtime: model.RuntimeWasm, Module: sha, TimeoutMS: 0}}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := manifest.Parse("nimbus.yaml", []byte("app: shop\nfunctions:\n  hello:\n    module: hello.wasm\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := m.Functions[0].Registry(sha)
	revs, err := c.Revisions(ctx, "shop")
	if err != nil || len(revs) != 1 {
		t.Fatalf("revisions: %v, %v", revs, err)
	}
	for _, got := range []model.Function{res.Revision.Functions[0], revs[0].Functions[0]} {
		got.Revision = ""
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("shown %+v\nwant  %+v (the manifest's defaults)", got, want)
		}
	}
	if res.Revision.Functions[0].TimeoutMS != model.DefaultTimeout.Milliseconds() {
		t.Errorf("timeout_ms shown as %d", res.Revision.Functions[0].TimeoutMS)
	}
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
