package client_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/client"
)

// useConfig points NIMBUS_CONFIG at a file in a temp dir and clears the
// variables Resolve reads.
func useConfig(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "nimbus", "config.json")
	t.Setenv("NIMBUS_CONFIG", p)
	t.Setenv("NIMBUS_URL", "")
	t.Setenv("NIMBUS_TOKEN", "")
	return p
}

func TestConfigRoundTrip(t *testing.T) {
	p := useConfig(t)
	if c, err := client.LoadConfig(); err != nil || !reflect.DeepEqual(c, client.Config{}) {
		t.Fatalf("missing file: %+v, %v", c, err)
	}
	var want client.Config
	want.Use(client.Entry{DataDir: "/a", Server: "http://127.0.0.1:9999", Token: "nmb_x"})
	got, err := client.SaveConfig(want)
	if err != nil || got != p {
		t.Fatalf("SaveConfig = %q, %v", got, err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Fatalf("config mode %o, want 600: it holds a token", perm)
	}
	if c, err := client.LoadConfig(); err != nil || !reflect.DeepEqual(c, want) {
		t.Fatalf("LoadConfig = %+v, %v", c, err)
	}
}

func TestConfigCorrupt(t *testing.T) {
	p := useConfig(t)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := client.LoadConfig()
	if err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("err = %v, want one naming %s", err, p)
	}
}

func TestResolve(t *testing.T) {
	useConfig(t)
	check := func(flag, wantServer, wantToken string) {
		t.Helper()
		s, tok, err := client.Resolve(flag)
		if err != nil || s != wantServer || tok != wantToken {
			t.Fatalf("Resolve(%q) = %q, %q, %v; want %q, %q", flag, s, tok, err, wantServer, wantToken)
		}
	}
	check("", client.DefaultServer, "")

	if _, err := client.SaveConfig(client.Config{Server: "http://127.0.0.1:1", Token: "nmb_file"}); err != nil {
		t.Fatal(err)
	}
	check("", "http://127.0.0.1:1", "nmb_file")

	t.Setenv("NIMBUS_URL", "http://127.0.0.1:2")
	t.Setenv("NIMBUS_TOKEN", "nmb_env")
	check("", "http://127.0.0.1:2", "nmb_env")
	check("http://127.0.0.1:3", "http://127.0.0.1:3", "nmb_env")
}

// TestResolveEntries: the config keeps one entry per data directory. The
// current one is used by default; a named server uses its own entry's
// token; each token's source is told.
func TestResolveEntries(t *testing.T) {
	p := useConfig(t)
	var c client.Config
	c.Use(client.Entry{DataDir: "/one", Server: "http://127.0.0.1:8081", Token: "nmb_one"})
	c.Use(client.Entry{DataDir: "/two", Server: "http://127.0.0.1:9081", Token: "nmb_two"})
	if c.Token != "nmb_two" || c.Current != "/two" || len(c.Servers) != 2 {
		t.Fatalf("after two ups: %+v", c)
	}
	// Restarting /one makes it current again, with its own token.
	c.Use(client.Entry{DataDir: "/one", Server: "http://127.0.0.1:8081", Token: c.Entry("/one").Token})
	if c.Token != "nmb_one" || len(c.Servers) != 2 || c.Entry("/two").Token != "nmb_two" {
		t.Fatalf("after restarting /one: %+v", c)
	}
	if _, err := client.SaveConfig(c); err != nil {
		t.Fatal(err)
	}
	check := func(flag, server, token, source string) {
		t.Helper()
		got, err := client.ResolveTarget(flag)
		if err != nil || got.Server != server || got.Token != token || !strings.Contains(got.TokenSource, source) {
			t.Fatalf("ResolveTarget(%q) = %+v, %v; want %s %s from %q", flag, got, err, server, token, source)
		}
	}
	check("", "http://127.0.0.1:8081", "nmb_one", p+", entry of data dir /one")
	check("127.0.0.1:9081", "http://127.0.0.1:9081", "nmb_two", "entry of data dir /two")
	check("http://127.0.0.1:9081/", "http://127.0.0.1:9081", "nmb_two", "/two")
	// No entry for that server: the current token, as before entries.
	check("http://10.0.0.1:8081", "http://10.0.0.1:8081", "nmb_one", "current entry")
	t.Setenv("NIMBUS_TOKEN", "nmb_env")
	check("127.0.0.1:9081", "http://127.0.0.1:9081", "nmb_env", "$NIMBUS_TOKEN")
}

// TestResolveLegacy: a config file from before entries (server and token
// only) still works.
func TestResolveLegacy(t *testing.T) {
	p := useConfig(t)
	os.MkdirAll(filepath.Dir(p), 0o700)
	if err := os.WriteFile(p, []byte(`{"server": "http://127.0.0.1:7", "token": "nmb_old"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := client.ResolveTarget("")
	if err != nil || got.Server != "http://127.0.0.1:7" || got.Token != "nmb_old" || !strings.Contains(got.TokenSource, p) {
		t.Fatalf("ResolveTarget = %+v, %v", got, err)
	}
}

func TestNormalizeServer(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:8081":          "http://127.0.0.1:8081",
		"http://127.0.0.1:8081/":  "http://127.0.0.1:8081",
		"https://nimbus.example":  "https://nimbus.example",
		" localhost:8081 ":        "http://localhost:8081",
		"http://[::1]:8081":       "http://[::1]:8081",
		"http://10.0.0.5:8081/x/": "http://10.0.0.5:8081/x",
	} {
		if got, err := client.NormalizeServer(in); err != nil || got != want {
			t.Errorf("NormalizeServer(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "ftp://host", "http://", "http://h:1?x=1", "http://h:1#f"} {
		if got, err := client.NormalizeServer(in); err == nil || !strings.Contains(err.Error(), "http://HOST:PORT") {
			t.Errorf("NormalizeServer(%q) = %q, %v; want an error with an example", in, got, err)
		}
	}
	t.Setenv("NIMBUS_CONFIG", filepath.Join(t.TempDir(), "c.json"))
	t.Setenv("NIMBUS_URL", "ftp://x")
	if _, err := client.ResolveTarget(""); err == nil || !strings.Contains(err.Error(), "NIMBUS_URL") {
		t.Fatalf("a bad NIMBUS_URL: %v", err)
	}
}
