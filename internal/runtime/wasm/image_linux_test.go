//go:build linux

package wasm

import (
	"bytes"
	"context"
	"os"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/runtime"
)

// mappings counts the process's memory mappings.
func mappings(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(b, []byte("\n"))
}

// TestMappedMemoriesReleased: a Go guest's linear memory is a mapping of
// its own (with its image mapped over it), and every way an instance ends
// unmaps it: closing an SDK instance, a WAGI request that succeeds, fails,
// runs out of memory or out of time.
func TestMappedMemoriesReleased(t *testing.T) {
	// Not parallel: it counts the whole process's mappings.
	r := newRuntime(t, Config{})
	sdk := load(t, r, runtime.Spec{Artifact: guests["sdk"], Limits: runtime.Limits{MemoryBytes: 64 << 20, Timeout: time.Second}})
	wagi := load(t, r, runtime.Spec{Artifact: guests["wagi"], Limits: runtime.Limits{MemoryBytes: 64 << 20, Timeout: time.Second}})
	ctx := context.Background()
	// Warm up: the snapshot, the image files, wazero's own first-use
	// mappings.
	first, err := sdk.NewInstance(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first.Close(ctx)
	wi, _ := wagi.NewInstance(ctx)
	mustHandle(t, wi, get("/", ""))

	before := mappings(t)
	inst, err := sdk.NewInstance(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := mappings(t); n < before+1 {
		t.Errorf("a restored SDK instance added %d mappings, want its own memory mapped", n-before)
	}
	inst.Close(ctx)

	const rounds = 10
	for range rounds {
		inst, err := sdk.NewInstance(ctx)
		if err != nil {
			t.Fatal(err)
		}
		mustHandle(t, inst, get("/hello", ""))
		inst.Close(ctx)
		inst, err = sdk.NewInstance(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := inst.Handle(ctx, get("/bomb", "")); err == nil {
			t.Fatal("/bomb succeeded")
		}
		inst.Close(ctx)
		for _, q := range []string{"", "mode=panic", "mode=bomb"} {
			wi.Handle(ctx, get("/", q))
		}
	}
	if n := mappings(t); n > before+rounds/2 {
		t.Errorf("%d mappings after %d rounds of instances, %d before: memories are not unmapped", n, rounds, before)
	}
}
