package deploy_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/deploy"
	"github.com/nimbus-dev/nimbus/internal/runtime/process"
)

// pyApp is a process function in Python, stdlib only.
const pyApp = `import http.server, os

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("%s %s %s" % (os.environ.get("GREETING"), self.path, os.environ.get("NODE_ONLY", "unset"))).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("", int(os.environ["PORT"])), H).serve_forever()
`

// TestRunProcess deploys a Python process function (its directory packed
// as the artifact) and calls it through the gateway: sandboxed when the
// host can, else with the manifest's explicit opt-out. The node's own
// environment does not reach it; a second deploy of the unchanged
// directory changes nothing.
func TestRunProcess(t *testing.T) {
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skip("no /usr/bin/python3")
	}
	t.Setenv("NODE_ONLY", "leaked")
	isolation := "sandbox"
	if !process.Probe().Sandbox() {
		isolation = "none"
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "app.py"), []byte(pyApp), 0o644); err != nil {
		t.Fatal(err)
	}
	yaml := `app: py
functions:
  hello:
    runtime: process
    command: [python3, app.py]
    isolation: ` + isolation + `
    concurrency: 4
    env:
      GREETING: hi
    routes:
      - GET /py/{rest...}
`
	if err := os.WriteFile(filepath.Join(dir, "nimbus.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := start(t)
	var s steps
	res, err := deploy.Run(context.Background(), deploy.Local{S: srv}, dir, s.record)
	if err != nil {
		t.Fatalf("deploy: %v\n%s", err, strings.Join(s, "\n"))
	}
	if got := get(t, srv, "/py/a?b=1"); got != "hi /py/a?b=1 unset" {
		t.Fatalf("GET /py/a: %q", got)
	}
	again, err := deploy.Run(context.Background(), deploy.Local{S: srv}, dir, nil)
	if err != nil || again.Changed || again.Revision.ID != res.Revision.ID {
		t.Fatalf("redeploy of the same directory: %+v, %v", again, err)
	}
}
