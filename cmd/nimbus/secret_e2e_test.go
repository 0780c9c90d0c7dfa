package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/audit"
	"github.com/nimbus-dev/nimbus/internal/guesttest"
)

// TestSecretsAndMasterKeyRotation follows docs/security.md with the real
// binary: `nimbus key create` makes a key of the app's tenant with the
// secrets verb (listed by `key ls`, refused elsewhere, and after `key
// revoke`); with it `nimbus secret set` takes the value from stdin (never
// as an argument), `audit ls` with its filters finds the entry naming
// the key, a function granted secret:STRIPE_KEY reads it, `secret ls`
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
	// A key of the app's tenant with the secrets verb only, made with
	// `nimbus key` as docs/security.md shows, sets it.
	var ops struct{ Token, ID string }
	out0, err := c.run("key", "create", "ops", "--tenant", "default", "--scope", "secrets", "--expires", "30d", "--json")
	if err != nil || json.Unmarshal([]byte(out0), &ops) != nil || ops.Token == "" {
		t.Fatalf("key create: %v\n%s", err, out0)
	}
	if ls, err := c.run("key", "ls"); err != nil || !strings.Contains(ls, ops.ID+"  ops") || !strings.Contains(ls, "secrets") ||
		!strings.Contains(ls, "default") || strings.Contains(ls, strings.TrimPrefix(ops.Token, "nmb_")) {
		t.Fatalf("key ls: %v\n%s", err, ls)
	}
	asOps := []string{"NIMBUS_TOKEN=" + ops.Token}
	if _, errOut, err := c.runWith(asOps, "ls"); err == nil || !strings.Contains(errOut, `lacks the "read" scope`) {
		t.Fatalf("a secrets key listing apps: %v %s", err, errOut)
	}
	set := exec.Command(c.bin, "secret", "set", "shop", "STRIPE_KEY")
	set.Env, set.Stdin = append(append([]string(nil), c.env...), asOps...), strings.NewReader(value+"\n")
	out, err := set.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "secret STRIPE_KEY of shop set (version 1)") {
		t.Fatalf("secret set from stdin: %v\n%s", err, out)
	}
	outputs = append(outputs, string(out))
	// The audit log names the key; its filters find the entry.
	out0, err = c.run("audit", "ls", "--target", "shop", "--tenant", "default", "--since", "1h", "--action", "secret.set", "--json")
	var entries []audit.Entry
	if err != nil || json.Unmarshal([]byte(out0), &entries) != nil || len(entries) != 1 ||
		entries[0].Target != "shop/STRIPE_KEY" || entries[0].Actor != ops.ID+" ops" || entries[0].Outcome != "ok" {
		t.Fatalf("audit ls of the secret's set: %v\n%s", err, out0)
	}
	if out0, _ := c.run("audit", "ls", "--target", "other", "--json"); strings.TrimSpace(out0) != "[]" {
		t.Fatalf("audit ls --target other: %s", out0)
	}
	if out0, err := c.run("key", "revoke", "ops"); err != nil || !strings.Contains(out0, ops.ID) {
		t.Fatalf("key revoke: %v\n%s", err, out0)
	}
	if _, errOut, err := c.runWith(asOps, "secret", "ls", "shop"); err == nil || !strings.Contains(errOut, "unknown token") {
		t.Fatalf("a revoked key: %v %s", err, errOut)
	}
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
