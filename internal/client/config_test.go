package client_test

import (
	"os"
	"path/filepath"
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
	if c, err := client.LoadConfig(); err != nil || c != (client.Config{}) {
		t.Fatalf("missing file: %+v, %v", c, err)
	}
	want := client.Config{Server: "http://127.0.0.1:9999", Token: "nmb_x"}
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
	if c, err := client.LoadConfig(); err != nil || c != want {
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
