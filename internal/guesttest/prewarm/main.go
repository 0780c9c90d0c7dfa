// Command prewarm builds every guest the test suites use (guesttest.Known)
// and compiles each into the shared wazero cache (guesttest.WazeroCacheDir)
// with the node's own wasm runtime, outside the race detector. `make test`
// runs it first: the test binaries then load compiled guests from the
// cache instead of compiling them under the race detector, several times
// slower. Running the tests without it is correct, only slower.
//
//	go run -ldflags=-X=github.com/tetratelabs/wazero/internal/version.version=dev ./internal/guesttest/prewarm
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nimbus-dev/nimbus/internal/guesttest"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/runtime/wasm"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "prewarm:", err)
		os.Exit(1)
	}
}

func run() error {
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	ctx := context.Background()
	rt, err := wasm.New(ctx, wasm.Config{CacheDir: guesttest.WazeroCacheDir()})
	if err != nil {
		return err
	}
	defer rt.Close(ctx)
	start := time.Now()
	// Two at a time: a build is mostly one core, and compiling one is too.
	sem := make(chan struct{}, 2)
	var wg sync.WaitGroup
	errs := make([]error, len(guesttest.Known))
	for i, g := range guesttest.Known {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			errs[i] = warm(ctx, rt, filepath.Join(root, g.Dir), g.Mode)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return fmt.Errorf("%s: %w", guesttest.Known[i].Dir, err)
		}
	}
	pruned := prune(filepath.Dir(guesttest.WazeroCacheDir()), 14*24*time.Hour)
	fmt.Printf("prewarm: %d old cache entries removed; %d test guests built and compiled in %s (cache %s)\n",
		pruned, len(guesttest.Known), time.Since(start).Round(time.Millisecond), guesttest.WazeroCacheDir())
	return nil
}

// warm builds the guest in dir and loads it, which compiles it into the
// runtime's cache (or finds it there).
func warm(ctx context.Context, rt *wasm.Runtime, dir string, mode guesttest.Mode) error {
	b, err := guesttest.Build(dir, mode)
	if err != nil {
		return err
	}
	m, err := rt.Load(ctx, runtime.Spec{
		App: "prewarm", Function: filepath.Base(dir), Runtime: model.RuntimeWasm, Artifact: b,
		Limits: runtime.Limits{MemoryBytes: 256 << 20, Timeout: time.Minute, MaxResponseBytes: 1 << 20},
	})
	if err != nil {
		return err
	}
	return m.Close(ctx)
}

// moduleRoot is the directory of the go.mod above the working directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.HasPrefix(string(b), "module github.com/nimbus-dev/nimbus\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("run from inside the Nimbus repository")
		}
		dir = parent
	}
}

// prune removes the cache files under root written more than age ago, so
// the caches do not grow with every change of a guest's sources. An entry
// still in use is built or compiled again by the next run that needs it.
func prune(root string, age time.Duration) int {
	n := 0
	cutoff := time.Now().Add(-age)
	filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if info, err := d.Info(); err == nil && info.ModTime().Before(cutoff) && os.Remove(path) == nil {
			n++
		}
		return nil
	})
	return n
}
