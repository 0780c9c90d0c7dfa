package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/guesttest"
)

// TestSecretsAndMasterKeyRotation follows docs/security.md with the real
// binary: `nimbus secret set` takes the value from stdin (never as an
// argument), a function granted secret:STRIPE_KEY reads it, `secret ls`
// shows names and versions only; then the master key is rotated as the
// doc says (`nimbus up --master-key-file NEW --master-key-previous OLD`,
// which logs "data keys rewrapped"), after which a node with only the new
// key reads the secret, and one with only the old key cannot. No output
// of any command or node holds the value.
func TestSecretsAndMasterKeyRotation(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary and a guest, starts nodes")
	}
	tmp := t.TempDir()
	c := newCLI(t, tmp)
	guest := guesttest.MustBuild(t, "../../internal/server/testdata/egress", guesttest.Reactor)
	app := writeApp(t, guest, "shop", "    capabilities: [\"secret:STRIPE_KEY\"]\n    routes: [\"GET /secret\"]\n")
	data := filepath.Join(tmp, "data")
	oldKey, newKey := filepath.Join(tmp, "keys", "old.key"), filepath.Join(tmp, "new.key")
	const value = "sk_live_ROTATIONCANARY_0123456789"
	var outputs []string

	read := func(gateway string) (int, string) {
		t.Helper()
		resp, err := http.Get(gateway + "/secret?name=STRIPE_KEY")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		outputs = append(outputs, string(b))
		return resp.StatusCode, string(b)
	}

	srv, f, stderr := c.up(app, data, "--master-key-file", oldKey)
	if out, err := c.run("secret", "set", "shop", "STRIPE_KEY", value); err == nil || !strings.Contains(out, "accepts 2 arg(s)") {
		t.Fatalf("secret set with the value as an argument: %v\n%s", err, out)
	}
	set := exec.Command(c.bin, "secret", "set", "shop", "STRIPE_KEY")
	set.Env, set.Stdin = c.env, strings.NewReader(value+"\n")
	out, err := set.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "secret STRIPE_KEY of shop set (version 1)") {
		t.Fatalf("secret set from stdin: %v\n%s", err, out)
	}
	outputs = append(outputs, string(out))
	if st, err := os.Stat(oldKey); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("master key file made at the first set: %v %v", st, err)
	}
	if code, body := read(f["gateway"]); code != 200 || body != "ok" {
		t.Fatalf("the function reads the secret: %d %q", code, body)
	}
	stop(t, srv)
	outputs = append(outputs, stderr.String())

	// Rotate: a new key, the old one given as previous.
	k := make([]byte, 32)
	rand.Read(k)
	if err := os.WriteFile(newKey, []byte(base64.StdEncoding.EncodeToString(k)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv, _, stderr = c.up(app, data, "--master-key-file", newKey, "--master-key-previous", oldKey)
	if !strings.Contains(stderr.String(), "data keys rewrapped") || !strings.Contains(stderr.String(), "rewrapped=1") {
		t.Fatalf("up with --master-key-previous does not say it rewrapped one data key:\n%s", stderr)
	}
	stop(t, srv)
	outputs = append(outputs, stderr.String())

	// Only the new key now: the secret reads, lists and is removed.
	srv, f, stderr = c.up(app, data, "--master-key-file", newKey)
	if code, body := read(f["gateway"]); code != 200 || body != "ok" {
		t.Fatalf("after rotation, with the new key only: %d %q", code, body)
	}
	out2, err := c.run("secret", "ls", "shop")
	if err != nil || !strings.Contains(out2, "STRIPE_KEY") || !strings.Contains(out2, "VERSION") {
		t.Fatalf("secret ls: %v\n%s", err, out2)
	}
	outputs = append(outputs, out2)
	stop(t, srv)
	outputs = append(outputs, stderr.String())

	// The old key alone no longer opens it: the rewrap replaced it.
	srv, f, stderr = c.up(app, data, "--master-key-file", oldKey)
	if code, body := read(f["gateway"]); code == 200 {
		t.Fatalf("with the retired key, the secret still reads: %d %q", code, body)
	}
	if out, err := c.run("secret", "rm", "shop", "STRIPE_KEY"); err != nil {
		t.Fatalf("secret rm: %v\n%s", err, out)
	}
	out2, _ = c.run("secret", "ls", "shop")
	if strings.Contains(out2, "STRIPE_KEY") {
		t.Fatalf("secret ls after rm:\n%s", out2)
	}
	stop(t, srv)
	outputs = append(outputs, stderr.String())
	for _, o := range outputs {
		if bytes.Contains([]byte(o), []byte(value)) {
			t.Fatalf("the secret's value is in an output:\n%s", o)
		}
	}
}
