// Package guesttest builds real WebAssembly guests with the local Go
// toolchain for tests and benchmarks. Builds go through the Go build cache,
// and each (source, mode) pair is built once per process.
package guesttest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// Mode is how a guest is linked.
type Mode int

const (
	// Command is a WASI command (has _start): WAGI guests.
	Command Mode = iota
	// Reactor is a WASI reactor (-buildmode=c-shared): Nimbus SDK guests.
	Reactor
)

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

// Build compiles the Go package in dir (a directory inside this module) for
// GOOS=wasip1 GOARCH=wasm and returns the module bytes.
func Build(dir string, mode Mode) ([]byte, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	v, _ := builds.LoadOrStore(key{abs, mode}, &result{})
	r := v.(*result)
	r.once.Do(func() { r.wasm, r.err = build(abs, mode) })
	return r.wasm, r.err
}

func build(dir string, mode Mode) ([]byte, error) {
	out, err := os.MkdirTemp("", "nimbus-guest-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(out)
	target := filepath.Join(out, "guest.wasm")
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
		return nil, fmt.Errorf("build guest %s: %w\n%s", dir, err, stderr.String())
	}
	return os.ReadFile(target)
}

// goBin is the go command of the toolchain running the tests: `go test` and
// `go run` put their own $GOROOT/bin first on PATH, so "go" resolves to it
// (runtime.GOROOT, the build-time root, is deprecated since Go 1.24).
func goBin() string { return "go" }

// MustBuild is Build for tests: it fails tb on error.
func MustBuild(tb testing.TB, dir string, mode Mode) []byte {
	tb.Helper()
	wasm, err := Build(dir, mode)
	if err != nil {
		tb.Fatal(err)
	}
	return wasm
}
