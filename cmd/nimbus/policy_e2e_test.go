package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/audit"
	"github.com/nimbus-dev/nimbus/internal/guesttest"
)

// testPolicy is docs/security.md's example policy file.
const testPolicy = `# Rules every deploy must pass, and what each tenant may hold.
rules:
  - name: routes-need-auth
    expression: functions.all(f, f.routes.all(r, r.auth != "none"))
    message: every route must require auth (a key or a JWT)
  - name: memory-cap
    expression: functions.all(f, f.memory <= quantity("256Mi"))
    message: a function may have at most 256MiB of memory
  - name: no-egress-to-any-host
    expression: functions.all(f, f.egress.all(e, e.host != "*"))
    message: name the hosts a function calls; http:* is not allowed
quotas:
  default: {apps: 1, functions: 10, kv_bytes: 64MiB, requests_per_second: 100}
`

// writeApp writes an app of one function without routes, whose module is
// already built, into a new directory and returns it.
func writeApp(t *testing.T, module []byte, app, fields string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), app)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "f.wasm"), module, 0o644); err != nil {
		t.Fatal(err)
	}
	m := "app: " + app + "\nfunctions:\n  f:\n    module: f.wasm\n" + fields
	if err := os.WriteFile(filepath.Join(dir, "nimbus.yaml"), []byte(m), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestPolicyFromTheCLI: a policy file whose rule does not compile stops
// `nimbus up` naming the file, line, column and rule; `nimbus validate
// --policy` reports the rules a manifest breaks; a node started with
// --policy refuses such a deploy with the rules' messages, and a deploy
// over the tenant's apps quota, and audits both refusals.
func TestPolicyFromTheCLI(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary and a guest, starts a node")
	}
	tmp := t.TempDir()
	c := newCLI(t, tmp)
	policyFile := filepath.Join(tmp, "policy.yaml")
	if err := os.WriteFile(policyFile, []byte(testPolicy), 0o644); err != nil {
		t.Fatal(err)
	}

	// A typo in a rule refuses the start, before anything is opened.
	bad := filepath.Join(tmp, "bad.yaml")
	os.WriteFile(bad, []byte("- name: mem\n  expression: functions.all(f, f.memroy < 1)\n  message: m\n"), 0o644)
	out, err := c.run("up", tmp, "--data", filepath.Join(tmp, "never"), "--policy", bad)
	if err == nil || !strings.Contains(out, bad+`:2:33: rule "mem": expression does not compile: undefined field 'memroy'`) {
		t.Fatalf("up with a rule that does not compile: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(tmp, "never")); err == nil {
		t.Fatal("up created its data directory before refusing the policy")
	}

	hello := guesttest.MustBuild(t, "../../examples/hello/hello", guesttest.Reactor)
	big := writeApp(t, hello, "big", "    memory: 512MiB\n    capabilities: [log, \"http:*\"]\n")
	small := writeApp(t, hello, "small", "    memory: 64MiB\n    capabilities: [log, \"http:api.stripe.com\"]\n")
	other := writeApp(t, hello, "other", "    capabilities: [log]\n")

	// validate --policy names every rule broken, and passes a compliant app.
	out, err = c.run("validate", big, "--policy", policyFile)
	if err == nil || !strings.Contains(out, `policy rule "memory-cap" (`+policyFile+`): a function may have at most 256MiB of memory`) ||
		!strings.Contains(out, `policy rule "no-egress-to-any-host"`) || strings.Contains(out, "routes-need-auth") {
		t.Fatalf("validate --policy of a violating app: %v\n%s", err, out)
	}
	out, err = c.run("validate", small, "--policy", policyFile)
	if err != nil || !strings.Contains(out, "it passes the 3 rule(s) of "+policyFile+" for tenant default") {
		t.Fatalf("validate --policy of a compliant app: %v\n%s", err, out)
	}

	_, _, stderr := c.up(tmp, filepath.Join(tmp, "data"), "--policy", policyFile)
	if !strings.Contains(stderr.String(), "policy: 3 rule(s) from "+policyFile) {
		t.Fatalf("up --policy does not say what it loaded:\n%s", stderr)
	}
	out, err = c.run("deploy", big)
	if err == nil || !strings.Contains(out, `refused by the operator's policy: rule "memory-cap": a function may have at most 256MiB of memory; rule "no-egress-to-any-host"`) {
		t.Fatalf("deploy of a violating app: %v\n%s", err, out)
	}
	if out, err := c.run("deploy", small); err != nil {
		t.Fatalf("deploy of a compliant app: %v\n%s", err, out)
	}
	out, err = c.run("deploy", other)
	if err == nil || !strings.Contains(out, "tenant default is at its quota of 1 apps") {
		t.Fatalf("deploy over the apps quota: %v\n%s", err, out)
	}

	out, err = c.run("audit", "ls", "--action", "deploy", "--json")
	var entries []audit.Entry
	if err != nil || json.Unmarshal([]byte(out), &entries) != nil {
		t.Fatalf("audit ls: %v\n%s", err, out)
	}
	got := map[string]string{}
	for _, e := range entries {
		got[e.Target] = e.Outcome + " " + e.Detail
	}
	if got["big"] != "denied policy_denied: rules memory-cap,no-egress-to-any-host" || !strings.HasPrefix(got["small"], "ok revision ") ||
		got["other"] != "denied quota_exceeded: apps" {
		t.Fatalf("audit of the deploys: %v", got)
	}
}
