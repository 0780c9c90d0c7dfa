package wasm

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/runtime"
)

// TestSnapshotInstances: the first instance of a Go SDK revision takes the
// post-init snapshot; further instances start from it, without the state
// earlier requests left in the first one, and with the environment, the
// capabilities, the memory cap and the timeout of the revision.
func TestSnapshotInstances(t *testing.T) {
	r := newRuntime(t, Config{})
	m := load(t, r, runtime.Spec{Artifact: guests["sdk"], Env: map[string]string{"GREETING": "hi"}, Capabilities: []string{"log"},
		Limits: runtime.Limits{MemoryBytes: 64 << 20, Timeout: time.Second}})
	first := instance(t, m)
	if m.(*module).snap.Load() == nil {
		t.Fatal("no snapshot after the first instance")
	}
	for range 3 {
		mustHandle(t, first, get("/count", ""))
	}
	restored := instance(t, m)
	if got := string(mustHandle(t, restored, get("/count", "")).Body); got != "1" {
		t.Errorf("a restored instance's first /count = %s, want 1 (the snapshot is taken before any request)", got)
	}
	if got := string(mustHandle(t, restored, get("/env", "key=GREETING")).Body); got != "hi" {
		t.Errorf("/env = %q, want hi", got)
	}
	if resp := mustHandle(t, restored, get("/log", "")); string(resp.Body) != "logged" {
		t.Errorf("/log with the log capability = %d %q", resp.Status, resp.Body)
	}
	if got := string(mustHandle(t, first, get("/count", "")).Body); got != "4" {
		t.Errorf("the first instance's /count = %s, want 4 (restoring another instance touched it)", got)
	}

	for _, tt := range []struct {
		path string
		want error
	}{
		{"/bomb", runtime.ErrMemoryLimit},
		{"/loop", runtime.ErrTimeout},
	} {
		inst := instance(t, m)
		_, err := inst.Handle(context.Background(), get(tt.path, ""))
		if !errors.Is(err, tt.want) {
			t.Errorf("%s on a restored instance: %v, want %v", tt.path, err, tt.want)
		}
	}

	denied := load(t, r, runtime.Spec{Artifact: guests["sdk"]})
	instance(t, denied)
	if resp := mustHandle(t, instance(t, denied), get("/log", "")); resp.Status != 403 {
		t.Errorf("/log without the log capability on a restored instance = %d %q, want 403", resp.Status, resp.Body)
	}
}

// TestWAGIFreshMemory: every WAGI request runs on memory fresh from the
// module's data (the image the instances map copy-on-write): what one
// request wrote, another never sees, in turn or at once.
func TestWAGIFreshMemory(t *testing.T) {
	t.Parallel()
	r := newRuntime(t, Config{})
	inst := instance(t, load(t, r, runtime.Spec{Artifact: guests["wagi"]}))
	check := func() error {
		resp, err := inst.Handle(context.Background(), get("/", "mode=count"))
		if err != nil {
			return err
		}
		if string(resp.Body) != "42" {
			return fmt.Errorf("count = %q, want 42 (a fresh instance increments the initial 41 once)", resp.Body)
		}
		return nil
	}
	for range 3 {
		if err := check(); err != nil {
			t.Fatal(err)
		}
	}
	errs := make(chan error, 4)
	for range 4 {
		go func() { errs <- check() }()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
