package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/client"
)

// TestTokensAndDataDirs follows an operator through tokens and data
// directories with the real binary: scoped tokens refused outside their
// scope and revoked at once, app deletion, the error messages of a wrong
// --server, two data directories keeping both admin tokens in the config,
// and a lost admin token minted again from the data directory, with the
// node running and with it stopped.
func TestTokensAndDataDirs(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary and the example guest")
	}
	tmp := t.TempDir()
	c := newCLI(t, tmp)
	dataA, dataB := filepath.Join(tmp, "a"), filepath.Join(tmp, "b")
	empty := t.TempDir() // no nimbus.yaml: up deploys nothing
	example := filepath.Join("..", "..", "examples", "hello")
	srvA, fA, stderrA := c.up(example, dataA)
	adminA := fA["admin"]
	// The banner comes after the deploy: the app answers when it shows.
	if d, u := strings.Index(fA["out"], "deployed hello"), strings.Index(fA["out"], "is up"); d < 0 || u < d {
		t.Fatalf("banner before the deploy:\n%s", fA["out"])
	}
	if !strings.Contains(stderrA.String(), "starting Nimbus") {
		t.Errorf("no progress before the banner:\n%s", stderrA)
	}
	run := func(args ...string) string {
		t.Helper()
		out, errOut, err := c.runWith(nil, args...)
		if err != nil {
			t.Fatalf("nimbus %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
		}
		return out
	}
	fail := func(env []string, want string, args ...string) string {
		t.Helper()
		out, errOut, err := c.runWith(env, args...)
		if err == nil || !strings.Contains(errOut, want) {
			t.Fatalf("nimbus %s: err %v, want a failure saying %q; stdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, want, out, errOut)
		}
		return errOut
	}

	// A read-only token: it reads, and is refused deploying (naming the
	// scope and where the token came from) and managing tokens.
	var ci struct {
		Token, ID, Name string
		Scopes          []string
	}
	if err := json.Unmarshal([]byte(run("token", "create", "ci", "--scope", "read", "--expires", "30d", "--json")), &ci); err != nil || !strings.HasPrefix(ci.Token, "nmb_") || len(ci.ID) != 12 {
		t.Fatalf("token create --json: %v %+v", err, ci)
	}
	ls := run("token", "ls")
	if !strings.Contains(ls, ci.ID) || !strings.Contains(ls, "ci") || strings.Contains(ls, strings.TrimPrefix(ci.Token, "nmb_")) || strings.Contains(ls, strings.TrimPrefix(adminA, "nmb_")) {
		t.Fatalf("token ls:\n%s", ls)
	}
	asCI := []string{"NIMBUS_TOKEN=" + ci.Token}
	if out, errOut, err := c.runWith(asCI, "ls"); err != nil || !strings.Contains(out, "hello") {
		t.Fatalf("ls with the read token: %v\n%s%s", err, out, errOut)
	}
	if errOut := fail(asCI, `lacks the "deploy" scope`, "deploy", filepath.Join("..", "..", "examples", "wagi")); !strings.Contains(errOut, "$NIMBUS_TOKEN") {
		t.Errorf("the deploy refusal does not say where the token came from:\n%s", errOut)
	}
	fail(asCI, `lacks the "admin" scope`, "token", "ls")
	// With --json the error is JSON too.
	_, errOut, _ := c.runWith(asCI, "token", "ls", "--json")
	var jerr struct {
		Error struct {
			Code   string
			Status int
		}
	}
	if json.Unmarshal([]byte(errOut), &jerr) != nil || jerr.Error.Code != "forbidden" || jerr.Error.Status != 403 {
		t.Fatalf("token ls --json with a read token: %s", errOut)
	}
	// Revoked, it is refused on the next call, with where it came from.
	if out := run("token", "revoke", "ci"); !strings.Contains(out, ci.ID) {
		t.Fatalf("token revoke: %s", out)
	}
	fail(asCI, "came from $NIMBUS_TOKEN", "ls")

	// The Bearer scheme is case-insensitive.
	req, _ := http.NewRequest("GET", fA["API"]+"/api/v1/apps", nil)
	req.Header.Set("Authorization", "bearer "+adminA)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("lower-case bearer: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// --server without a scheme works; at the gateway it says so.
	if out := run("--server", strings.TrimPrefix(fA["API"], "http://"), "ls"); !strings.Contains(out, "hello") {
		t.Fatalf("--server host:port: %s", out)
	}
	fail(nil, "is a Nimbus gateway", "--server", fA["gateway"], "ls")

	// Logs: an unknown function is an error; --json is one object a line.
	if resp, err := http.Get(fA["gateway"] + "/hello/logs"); err != nil { // a GET logs a greeting
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	fail(nil, `no function "nosuch"`, "logs", "hello/nosuch")
	var logs string
	poll(t, 60*time.Second, func() error { // guest logs are flushed in the background
		if logs = strings.TrimSpace(run("logs", "hello", "--json")); logs == "" {
			return errors.New("no logs yet")
		}
		return nil
	})
	for _, l := range strings.Split(logs, "\n") {
		var e map[string]any
		if err := json.Unmarshal([]byte(l), &e); err != nil || e["invocation"] == nil {
			t.Fatalf("logs --json line %q: %v", l, err)
		}
	}

	// Delete: refused without confirmation, done with --yes.
	fail(nil, "--yes", "delete", "hello")
	if out := run("delete", "hello", "--yes"); !strings.Contains(out, "deleted app hello") {
		t.Fatalf("delete --yes: %s", out)
	}
	if out := run("ls", "--json"); strings.TrimSpace(out) != "[]" {
		t.Fatalf("ls after delete: %s", out)
	}
	if resp, err := http.Get(fA["gateway"] + "/hello/x"); err != nil || resp.StatusCode != 404 {
		t.Fatalf("a deleted app's route: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	fail(nil, "not found", "delete", "hello", "--yes")

	// A second data directory: its own admin token, and the first one's
	// stays in the config.
	srvB, fB, _ := c.up(empty, dataB)
	conf := readConfig(t, tmp)
	if len(conf.Servers) != 2 || conf.Entry(canonicalDir(dataA)).Token != adminA || conf.Token != fB["admin"] {
		t.Fatalf("config after a second data directory: %+v", conf)
	}
	stop(t, srvB)
	stop(t, srvA)
	srvA, fA, stderrA = c.up(empty, dataA)
	if strings.Contains(stderrA.String(), "warning") {
		t.Errorf("restart of the first data directory warned:\n%s", stderrA)
	}
	run("ls") // the first data directory's token works again

	// A lost admin token: the config forgets it; a new one is minted from
	// the data directory while the node runs...
	os.Remove(filepath.Join(tmp, "config.json"))
	fail(nil, "no API token was sent", "--server", fA["API"], "ls")
	fail(nil, "token create --data", "--server", fA["API"], "token", "ls") // not through the API
	out := run("token", "create", "--data", dataA)
	if !strings.Contains(out, "saved for the CLI") || !strings.Contains(out, "local-admin") {
		t.Fatalf("token create --data (running): %s", out)
	}
	run("ls")
	minted := readConfig(t, tmp).Token
	ls = run("token", "ls")
	if !strings.Contains(ls, "local-admin") || !strings.Contains(ls, "local") {
		t.Fatalf("token ls after minting: %s", ls)
	}

	// ... and while it is stopped; the next start uses it.
	stop(t, srvA)
	os.Remove(filepath.Join(tmp, "config.json"))
	out = run("token", "create", "rescue", "--data", dataA, "--json")
	var rescue struct {
		Token   string
		SavedTo string `json:"saved_to"`
	}
	if json.Unmarshal([]byte(out), &rescue) != nil || !strings.HasPrefix(rescue.Token, "nmb_") || rescue.SavedTo == "" || rescue.Token == minted {
		t.Fatalf("token create --data (stopped): %s", out)
	}
	srvA, _, stderrA = c.up(empty, dataA)
	if strings.Contains(stderrA.String(), "warning") {
		t.Errorf("start after minting offline warned:\n%s", stderrA)
	}
	if out := run("token", "ls"); !strings.Contains(out, "rescue") {
		t.Fatalf("token ls with the rescue token: %s", out)
	}
	fail(nil, "not a Nimbus data directory", "token", "create", "--data", filepath.Join(tmp, "nope"))
	stop(t, srvA)
}

func readConfig(t *testing.T, dir string) client.Config {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c client.Config
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// stop ends a nimbus up with Ctrl-C and waits for it.
func stop(t *testing.T, srv *exec.Cmd) {
	t.Helper()
	srv.Process.Signal(syscall.SIGINT)
	if err := srv.Wait(); err != nil {
		t.Fatalf("nimbus up did not stop cleanly: %v", err)
	}
}
