package scaffold_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/manifest"
	"github.com/nimbus-dev/nimbus/internal/scaffold"
)

// TestCreateGo: the go template writes a manifest that loads, a go.mod
// that requires the SDK at the binary's version through a replace to the
// copy, and the copy is every non-test file of sdk/go (so a new SDK file is
// never left out).
func TestCreateGo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "shop")
	res, err := scaffold.Create(dir, scaffold.Options{SDKVersion: "1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	if res.App != "shop" || res.Template != "go" || res.SDKVersion != "v1.2.3" {
		t.Fatalf("result %+v", res)
	}
	m, err := manifest.Load(dir)
	if err != nil {
		t.Fatalf("the new manifest does not load: %v", err)
	}
	if m.App != "shop" || len(m.Functions) != 1 || m.Functions[0].Name != scaffold.Function {
		t.Fatalf("manifest: app %s, %d functions", m.App, len(m.Functions))
	}
	gomod, _ := os.ReadFile(filepath.Join(dir, "go.mod"))
	for _, want := range []string{"module shop\n", "go 1.24\n", "require github.com/nimbus-dev/nimbus/sdk/go v1.2.3\n", "replace github.com/nimbus-dev/nimbus/sdk/go => ./nimbus-sdk\n"} {
		if !strings.Contains(string(gomod), want) {
			t.Errorf("go.mod lacks %q:\n%s", want, gomod)
		}
	}

	var want []string
	for _, pattern := range []string{"*.go", "wire/*.go"} {
		files, _ := filepath.Glob(filepath.Join("..", "..", "sdk", "go", pattern))
		for _, f := range files {
			if !strings.HasSuffix(f, "_test.go") {
				rel, _ := filepath.Rel(filepath.Join("..", "..", "sdk", "go"), f)
				want = append(want, "nimbus-sdk/"+filepath.ToSlash(rel))
			}
		}
	}
	want = append(want, "nimbus-sdk/go.mod", ".gitignore", "README.md", "go.mod", "main.go", "nimbus.yaml")
	slices.Sort(want)
	if !slices.Equal(res.Files, want) {
		t.Errorf("files:\n%v\nwant:\n%v", res.Files, want)
	}
	for _, f := range want {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// TestCreateOptions: the app name, module path and SDK version options.
func TestCreateOptions(t *testing.T) {
	dir := t.TempDir() // exists and is empty: allowed
	res, err := scaffold.Create(dir, scaffold.Options{Template: "wagi", App: "cgi", Module: "example.com/x/cgi", SDKVersion: "0.1.0-dev"})
	if err != nil {
		t.Fatal(err)
	}
	if res.App != "cgi" || res.SDKVersion != "" || slices.Contains(res.Files, "nimbus-sdk/go.mod") {
		t.Fatalf("wagi result %+v", res)
	}
	if gomod, _ := os.ReadFile(filepath.Join(dir, "go.mod")); string(gomod) != "module example.com/x/cgi\n\ngo 1.24\n" {
		t.Errorf("wagi go.mod:\n%s", gomod)
	}
	res, err = scaffold.Create(filepath.Join(t.TempDir(), "dev"), scaffold.Options{SDKVersion: "devel-abc123"})
	if err != nil || res.SDKVersion != "v0.0.0" {
		t.Fatalf("a development version: %+v, %v; want v0.0.0", res, err)
	}
}

// TestCreateRefuses: what Create refuses, with an error that says what to
// do, leaving nothing behind.
func TestCreateRefuses(t *testing.T) {
	full := t.TempDir()
	os.WriteFile(filepath.Join(full, "main.go"), []byte("package main\n"), 0o644)
	for _, c := range []struct {
		name string
		dir  string
		opts scaffold.Options
		is   error
		want string
	}{
		{"not empty", full, scaffold.Options{App: "x"}, scaffold.ErrNotEmpty, "new or empty directory"},
		{"template", "x", scaffold.Options{Template: "rust"}, scaffold.ErrInvalid, "use one of go, lean, wagi"},
		{"dir name", "My_Fn", scaffold.Options{}, scaffold.ErrInvalid, "pass one with --app"},
		{"app name", "x", scaffold.Options{App: "-x"}, scaffold.ErrInvalid, `app name "-x"`},
		{"module", "x", scaffold.Options{Module: "a b"}, scaffold.ErrInvalid, "module path"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := c.dir
			if !filepath.IsAbs(dir) {
				dir = filepath.Join(t.TempDir(), dir)
			}
			_, err := scaffold.Create(dir, c.opts)
			if !errors.Is(err, c.is) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Create: %v, want %v saying %q", err, c.is, c.want)
			}
			if dir == full {
				if entries, _ := os.ReadDir(full); len(entries) != 1 {
					t.Errorf("Create wrote into a directory it refused: %d entries", len(entries))
				}
			} else if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("Create left %s behind: %v", dir, err)
			}
		})
	}
}
