package manifest

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/model"
)

const minimal = "app: hello\nfunctions:\n  hello:\n    module: hello/hello.wasm\n    build:\n      command: make\n      dir: hello\n"

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}

	// nimbus.yml is the fallback name.
	write("nimbus.yml", minimal)
	m, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if m.File != filepath.Join(dir, "nimbus.yml") || m.Dir != dir {
		t.Errorf("File, Dir = %s, %s", m.File, m.Dir)
	}
	f := m.Function("hello")
	if f == nil || f.Module != filepath.Join(dir, "hello", "hello.wasm") || f.Build.Dir != filepath.Join(dir, "hello") {
		t.Fatalf("paths not resolved against the manifest's directory: %+v", f)
	}

	// nimbus.yaml wins over nimbus.yml; a file path works too.
	p := write("nimbus.yaml", "app: other\nfunctions:\n  x:\n    module: x.wasm\n")
	for _, path := range []string{dir, p} {
		m, err := Load(path)
		if err != nil || m.App != "other" {
			t.Errorf("Load(%s) = %v, %v; want app other", path, m, err)
		}
	}

	// Errors name the file by absolute path when it is not below the
	// working directory.
	bad := write("bad.yaml", "app: Bad\nfunctions:\n  x:\n    module: x.wasm\n")
	_, err = Load(bad)
	if want := bad + `:1:6: app: "Bad" is not a valid app name`; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("Load(bad) = %v; want prefix %s", err, want)
	}

	if _, err := Load(t.TempDir()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(empty dir) = %v; want fs.ErrNotExist", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(missing file) = %v; want fs.ErrNotExist", err)
	}
}

func TestLoadRelativeName(t *testing.T) {
	// A manifest below the working directory is named relatively.
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "app"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "app", "nimbus.yaml"), []byte("functions:\n  a:\n    module: a.wasm\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	_, err := Load("app")
	want := filepath.Join("app", "nimbus.yaml") + ":1:1: app: required field is missing"
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("got %v; want prefix %s", err, want)
	}
}

func TestFieldErrorFormat(t *testing.T) {
	for _, c := range []struct {
		e    FieldError
		want string
	}{
		{FieldError{Position{"nimbus.yaml", 7, 13}, "functions.hello.memory", `"lots" is not a size`}, `nimbus.yaml:7:13: functions.hello.memory: "lots" is not a size`},
		{FieldError{Position{"nimbus.yaml", 4, 0}, "", "invalid YAML: x"}, "nimbus.yaml:4: invalid YAML: x"},
	} {
		if got := c.e.Error(); got != c.want {
			t.Errorf("got %q, want %q", got, c.want)
		}
	}
}

func TestRegistry(t *testing.T) {
	m, err := Parse("nimbus.yaml", []byte(`app: hello
functions:
  hello:
    module: hello.wasm
    memory: 64MiB
    timeout: 1500ms
    max_instances: 3
    max_request_body: 1KiB
    env: {A: b}
    capabilities: [log]
    routes: [GET /x, /y]
`))
	if err != nil {
		t.Fatal(err)
	}
	got := m.Functions[0].Registry("abc123")
	want := model.Function{
		Name: "hello", Runtime: "wasm", Module: "abc123", MemoryBytes: 64 << 20, TimeoutMS: 1500,
		Concurrency: 1, MaxInstances: 3, MaxRequestBytes: 1024, MaxResponseBytes: 6 << 20,
		Env: map[string]string{"A": "b"}, Capabilities: []string{"log"},
		Routes: []model.Route{{Method: "GET", Path: "/x"}, {Path: "/y"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Registry:\n got %+v\nwant %+v", got, want)
	}
	// The record is a copy: changing it does not change the manifest.
	got.Env["A"] = "changed"
	got.Routes[0].Path = "/changed"
	if m.Functions[0].Env["A"] != "b" || m.Functions[0].Routes[0].Path != "/x" {
		t.Error("Registry shares maps or slices with the manifest")
	}
}

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want uint64
		err  bool
	}{
		{"1B", 1, false}, {"64KiB", 64 << 10, false}, {"64MiB", 64 << 20, false}, {"4GiB", 4 << 30, false},
		{"100MB", 100e6, false}, {"1 KB", 1000, false}, {"64", 0, true}, {"64mb", 0, true},
		{"1.5GiB", 0, true}, {"-1MiB", 0, true}, {"99999999999999999999GiB", 0, true}, {"18446744073709551615GiB", 0, true},
	} {
		got, err := ParseSize(c.in)
		if (err != nil) != c.err || got != c.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, error %v", c.in, got, err, c.want, c.err)
		}
	}
}

func TestDefaultsAndRounding(t *testing.T) {
	m, err := Parse("nimbus.yaml", []byte("app: a\nfunctions:\n  a:\n    module: a.wasm\n    memory: 1048577B\n"))
	if err != nil {
		t.Fatal(err)
	}
	f := m.Functions[0]
	if f.MemoryBytes != 17*WasmPageBytes {
		t.Errorf("memory 1048577B rounded to %d, want %d", f.MemoryBytes, 17*WasmPageBytes)
	}
	if f.Timeout != 30*time.Second || f.MaxInstances != 16 || f.Concurrency != 1 || f.MaxRequestBytes != 6<<20 || f.Build != nil {
		t.Errorf("defaults not applied: %+v", f)
	}
}

func TestSuggest(t *testing.T) {
	for in, want := range map[string]string{
		"memroy": "memory", "Memory": "memory", "max-instances": "max_instances", "modul": "module",
		"env": "env", "colour": "", "route": "routes", "rout": "", "x": "",
	} {
		if got := suggest(in, functionFields); got != want {
			t.Errorf("suggest(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestJWKSFileIsReadAtLoad: jwks_file is read relative to the manifest,
// so the deploy carries the keys and the node needs no access to the file.
func TestJWKSFileIsReadAtLoad(t *testing.T) {
	dir := t.TempDir()
	set := `{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`
	if err := os.MkdirAll(filepath.Join(dir, "keys"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "keys", "jwks.json"), []byte(set), 0o644); err != nil {
		t.Fatal(err)
	}
	yml := "app: shop\nfunctions:\n  f:\n    module: f.wasm\n    routes:\n      - path: /me\n        auth: {type: jwt, issuer: i, audience: a, jwks_file: keys/jwks.json}\n"
	if err := os.WriteFile(filepath.Join(dir, "nimbus.yaml"), []byte(yml), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Functions[0].Routes[0].Auth; got == nil || got.JWKS != set || got.JWKSURL != "" {
		t.Fatalf("auth = %+v, want the file's key set inline", got)
	}
}
