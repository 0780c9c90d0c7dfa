package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/deploy"
	"github.com/nimbus-dev/nimbus/internal/guesttest"
	"github.com/nimbus-dev/nimbus/internal/server"
)

// TestNewProjectBuildsAndDeploysOutsideTheRepo: `nimbus new` writes a
// project into a directory outside the repository that the deploy path
// (manifest, guestbuild, deploy) builds offline and serves, for each
// template; the build leaves its go.mod as written.
func TestNewProjectBuildsAndDeploysOutsideTheRepo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds three guests")
	}
	// No network and no workspace: everything the project needs is in it.
	t.Setenv("GOPROXY", "off")
	t.Setenv("GOFLAGS", "-mod=mod")
	t.Setenv("GOWORK", "off")
	t.Setenv("GOTOOLCHAIN", "local")
	tmp := t.TempDir()
	// A bound, not a timing check: two builds and two compilations of
	// modules no test compiled before, under the race detector on a
	// machine that may be busy.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	srv, err := server.Start(ctx, server.Config{
		DataDir: filepath.Join(tmp, "data"), Listen: "127.0.0.1:0", APIListen: "127.0.0.1:0",
		Version: "test", Logger: slog.New(slog.DiscardHandler), CacheDir: guesttest.WazeroCacheDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close(context.Background())

	for _, c := range []struct{ template, dir, path, want string }{
		{"go", "gofn", "/gofn/you", "hello, you\n"},
		{"lean", "leanfn", "/leanfn/you", "hello, you\n"},
		{"wagi", "cgifn", "/cgifn/you", "hello, you\n"},
	} {
		t.Run(c.template, func(t *testing.T) {
			dir := filepath.Join(tmp, c.dir)
			cmd := newRoot()
			cmd.SetArgs([]string{"new", "--template", c.template, dir})
			if err := cmd.Execute(); err != nil {
				t.Fatalf("nimbus new --template %s: %v", c.template, err)
			}
			gomod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
			if err != nil {
				t.Fatal(err)
			}
			res, err := deploy.Run(ctx, deploy.Local{S: srv}, dir, nil)
			if err != nil {
				t.Fatalf("deploy the new %s project: %v", c.template, err)
			}
			if res.App != c.dir || !res.Changed {
				t.Fatalf("deploy result %+v", res)
			}
			if after, _ := os.ReadFile(filepath.Join(dir, "go.mod")); string(after) != string(gomod) {
				t.Errorf("the build rewrote go.mod:\n%s\nwas:\n%s", after, gomod)
			}
			resp, err := http.Get(srv.GatewayURL() + c.path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.HasPrefix(string(body), c.want) {
				t.Fatalf("GET %s: %d %q, want 200 starting %q", c.path, resp.StatusCode, body, c.want)
			}
		})
	}
}
