package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/guesttest"
)

// The nimbus binary is built once per test binary, into a directory that
// TestMain removes.
var built struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// wazeroTestVersion names wazero's cache directory as test binaries do
// ("dev": they carry no module versions), so the nodes the CLI tests start
// share the compiled guests of the prewarm step (see the Makefile's
// WAZERO_TEST_VERSION) instead of compiling them again.
const wazeroTestVersion = "-ldflags=-X=github.com/tetratelabs/wazero/internal/version.version=dev"

// nimbusBinary builds ./cmd/nimbus with the local toolchain (through the Go
// build cache) and returns its path.
func nimbusBinary(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		built.dir, built.err = os.MkdirTemp("", "nimbus-e2e-")
		if built.err != nil {
			return
		}
		built.bin = filepath.Join(built.dir, "nimbus")
		if out, err := exec.Command("go", "build", wazeroTestVersion, "-o", built.bin, ".").CombinedOutput(); err != nil {
			built.err = fmt.Errorf("build nimbus: %w\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.bin
}

// cli runs the real nimbus binary the way a user does: `nimbus up` writes
// the API URL and admin token to the CLI config file (NIMBUS_CONFIG, in a
// directory of the test), and the other commands find them there.
type cli struct {
	t   *testing.T
	bin string
	env []string
}

// newCLI builds the binary (once) and gives it a config file in dir.
func newCLI(t *testing.T, dir string) *cli {
	return &cli{t: t, bin: nimbusBinary(t),
		env: append(os.Environ(), "NIMBUS_CONFIG="+filepath.Join(dir, "config.json"), "NIMBUS_URL=", "NIMBUS_TOKEN=")}
}

// up starts `nimbus up app --data data [extra...]` on 127.0.0.1 port 0 and waits (at
// most 3 minutes: the first start builds the app) until it says it is up.
// It returns the process, the fields it printed ("gateway", "API",
// "admin": the URLs and token; "out": all of stdout so far) and its
// stderr. The process is killed at the end of the test if still running.
// extra are more flags of `nimbus up`.
func (c *cli) up(app, data string, extra ...string) (*exec.Cmd, map[string]string, *syncBuffer) {
	t := c.t
	t.Helper()
	// The compiled examples are shared with every other test binary
	// (guesttest.WazeroCacheDir, filled by the prewarm step): a node
	// compiles only what no test compiled before.
	args := []string{"up", app, "--data", data, "--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0",
		"--cache-dir", guesttest.WazeroCacheDir()}
	cmd := exec.Command(c.bin, append(args, extra...)...)
	cmd.Env = c.env
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	fields := map[string]string{}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	timeout := time.After(3 * time.Minute)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("nimbus up exited early; stderr:\n%s", stderr)
			}
			f := strings.Fields(line)
			if len(f) >= 2 && (f[0] == "gateway" || f[0] == "API" || f[0] == "admin") {
				fields[f[0]] = f[len(f)-1]
				if f[0] == "API" {
					fields["API"] = f[1]
				}
				if f[0] == "admin" {
					fields["admin"] = f[2]
				}
			}
			fields["out"] += line + "\n"
			if strings.HasPrefix(line, "Press Ctrl-C") {
				go func() {
					for range lines {
					}
				}()
				return cmd, fields, stderr
			}
		case <-timeout:
			t.Fatalf("nimbus up did not come up; stderr:\n%s", stderr)
		}
	}
}

// run runs a nimbus command to completion and returns its combined output.
func (c *cli) run(args ...string) (string, error) {
	cmd := exec.Command(c.bin, args...)
	cmd.Env = c.env
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	return out.String(), err
}

// runWith runs a nimbus command with extra environment variables (they
// override the CLI's) and returns its stdout and stderr apart.
func (c *cli) runWith(env []string, args ...string) (stdout, stderr string, err error) {
	cmd := exec.Command(c.bin, args...)
	cmd.Env = append(append([]string(nil), c.env...), env...)
	var out, errb bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}
