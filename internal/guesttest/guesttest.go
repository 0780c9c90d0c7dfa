// Package guesttest builds real WebAssembly guests with the local Go
// toolchain for tests and benchmarks, and names the compilation cache they
// share.
//
// A guest is built at most once per (sources, toolchain, mode): builds are
// kept on disk under the user's cache directory, keyed by the hash of the
// Go toolchain's version, the link mode, go.mod and go.sum, and every
// non-test .go file of every package of this module the guest depends on.
// A test run that changed no guest source builds nothing; a change to any
// of those sources (the SDK included) builds again. Within one process each
// guest is also memoized in memory.
//
// Compiling a guest to machine code is the other slow step (a Go guest
// takes seconds, several times that under the race detector).
// WazeroCacheDir is one wazero compilation cache for every test binary
// and the prewarm command (`make prewarm`, which `make test` runs first,
// without the race detector), so each guest is compiled once per machine,
// not once per test. wazero files its entries under its version, which
// test binaries do not carry ("dev"): the Makefile builds prewarm with the
// same name (WAZERO_TEST_VERSION), or its entries would go unused.
package guesttest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Mode is how a guest is linked.
type Mode int

const (
	// Command is a WASI command (has _start): WAGI guests.
	Command Mode = iota
	// Reactor is a WASI reactor (-buildmode=c-shared): Nimbus SDK guests.
	Reactor
)

// String names the mode as the build cache does.
func (m Mode) String() string {
	if m == Reactor {
		return "reactor"
	}
	return "command"
}

// Guest is a guest of this repository's tests.
type Guest struct {
	// Dir is the package's directory relative to the module root.
	Dir  string
	Mode Mode
}

// Known is every guest the test suites build, for the prewarm command.
// A test may build a guest that is not listed: it is then built and
// compiled by the first test that needs it, which is only slower.
var Known = []Guest{
	{"internal/runtime/wasm/testdata/sdkguest", Reactor},
	{"internal/runtime/wasm/testdata/wagiguest", Command},
	{"internal/runtime/wasm/testdata/pubguest", Reactor},
	{"internal/runtime/wasm/testdata/kvguest", Reactor},
	{"internal/events/testdata/eventguest", Reactor},
	{"internal/server/testdata/kvwatch", Reactor},
	{"internal/server/testdata/counter", Reactor},
	{"internal/server/testdata/egress", Reactor},
	{"internal/server/testdata/whoami", Reactor},
	{"examples/hello/hello", Reactor},
	{"examples/hello/lean", Reactor},
	{"examples/wagi/wagi", Command},
	{"examples/counter/counter", Reactor},
	{"examples/orders/orders", Reactor},
	{"internal/workflow/testdata/wfguest", Reactor},
	{"internal/workflow/testdata/sagaguest", Reactor},
	{"internal/workflow/testdata/fxguest", Reactor},
	{"cmd/nimbus/testdata/ledgerguest", Reactor},
	{"internal/workflow/testdata/callguest", Reactor},
	{"examples/checkout/checkout", Reactor},
	{"examples/approval/approval", Reactor},
}

type key struct {
	dir  string
	mode Mode
}

type result struct {
	once sync.Once
	wasm []byte
	err  error
}

// builds is the per-process memo of guest builds. It is test-support state,
// not part of any server.
var builds sync.Map // key -> *result

// Build compiles the Go package in dir (a directory inside this module,
// absolute or relative to the working directory) for GOOS=wasip1
// GOARCH=wasm and returns the module bytes.
func Build(dir string, mode Mode) ([]byte, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	v, _ := builds.LoadOrStore(key{abs, mode}, &result{})
	r := v.(*result)
	r.once.Do(func() { r.wasm, r.err = cachedBuild(abs, mode) })
	return r.wasm, r.err
}

// MustBuild is Build for tests: it fails tb on error.
func MustBuild(tb testing.TB, dir string, mode Mode) []byte {
	tb.Helper()
	wasm, err := Build(dir, mode)
	if err != nil {
		tb.Fatal(err)
	}
	return wasm
}

// cacheRoot is where the builds and the compilation cache are kept:
// $NIMBUS_TEST_CACHE, or nimbus-test under the user's cache directory.
func cacheRoot() string {
	if d := os.Getenv("NIMBUS_TEST_CACHE"); d != "" {
		return d
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "nimbus-test")
}

// WazeroCacheDir is the wazero compilation cache shared by every test
// binary (and kept across runs). wazero keys its entries by the module's
// hash, its own version and the CPU's features, and writes them
// atomically, so concurrent test binaries may share it.
func WazeroCacheDir() string { return filepath.Join(cacheRoot(), "wazero-cache") }

// cachedBuild returns the build of dir from the on-disk cache, building it
// there first if it is not.
func cachedBuild(dir string, mode Mode) ([]byte, error) {
	sum, err := sourceHash(dir, mode)
	if err != nil {
		return nil, err
	}
	cache := filepath.Join(cacheRoot(), "wasm-guests")
	path := filepath.Join(cache, filepath.Base(dir)+"-"+mode.String()+"-"+sum[:20]+".wasm")
	if b, err := os.ReadFile(path); err == nil {
		now := time.Now()
		os.Chtimes(path, now, now) // in use: the prewarm command's pruning keeps it
		return b, nil
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(cache, filepath.Base(path)+".*.tmp")
	if err != nil {
		return nil, err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	if err := build(dir, mode, tmp.Name()); err != nil {
		return nil, err
	}
	// Rename is atomic: a concurrent test binary reads either no file or a
	// whole one.
	if err := os.Rename(tmp.Name(), path); err != nil {
		return nil, err
	}
	return os.ReadFile(path)
}

func build(dir string, mode Mode, target string) error {
	args := []string{"build", "-o", target}
	if mode == Reactor {
		args = append(args, "-buildmode=c-shared")
	}
	args = append(args, ".")
	cmd := exec.Command(goBin(), args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("build guest %s: %w\n%s", dir, err, stderr.String())
	}
	return nil
}

// sourceHash hashes what a build of dir depends on in this repository:
// the toolchain's version, the mode, the module's go.mod and go.sum, and
// the non-test .go files of every package of the module that the guest
// imports (go list -deps, for wasip1), each with its path relative to the
// module root, so two clones share their builds.
func sourceHash(dir string, mode Mode) (string, error) {
	cmd := exec.Command(goBin(), "list", "-deps", "-f", "{{if .Module}}{{.Module.Main}}|{{.Module.Dir}}|{{.Dir}}{{end}}", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go list %s: %w\n%s", dir, err, stderr.String())
	}
	version, err := exec.Command(goBin(), "env", "GOVERSION").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOVERSION: %w", err)
	}
	// The standard library is covered by the toolchain's version, and
	// dependencies from the module cache are pinned by go.sum: only the
	// main module's own packages can change under us.
	var root string
	var dirs []string
	for _, line := range strings.Split(string(out), "\n") {
		main, rest, _ := strings.Cut(line, "|")
		modDir, pkgDir, _ := strings.Cut(rest, "|")
		if main != "true" {
			continue
		}
		root = modDir
		dirs = append(dirs, pkgDir)
	}
	if root == "" {
		return "", fmt.Errorf("guest %s: not a package of a module in a work tree", dir)
	}
	slices.Sort(dirs)
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n", strings.TrimSpace(string(version)), mode)
	for _, f := range []string{"go.mod", "go.sum"} {
		if err := hashFile(h, root, filepath.Join(root, f)); err != nil && !os.IsNotExist(err) {
			return "", err
		}
	}
	for _, d := range dirs {
		if err := hashDir(h, root, d); err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// hashDir hashes the package's own files but its tests (embedded files
// included; not its subdirectories: those are packages of their own,
// hashed if imported).
func hashDir(h hash.Hash, root, dir string) error {
	entries, err := os.ReadDir(dir) // sorted by name
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		if err := hashFile(h, root, filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func hashFile(h hash.Hash, root, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	rel, _ := filepath.Rel(root, path)
	fmt.Fprintf(h, "%s %d\n", filepath.ToSlash(rel), len(b))
	_, err = h.Write(b)
	return err
}

// goBin is the go command of the toolchain running the tests: `go test` and
// `go run` put their own $GOROOT/bin first on PATH, so "go" resolves to it
// (runtime.GOROOT, the build-time root, is deprecated since Go 1.24).
func goBin() string { return "go" }
