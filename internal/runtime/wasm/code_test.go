package wasm

import (
	"context"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/runtime"
)

// TestCodeShared: functions loaded from one artifact share its compiled
// code and data image but not their environment or snapshot; closing one
// leaves the other serving, and the code goes with the last.
func TestCodeShared(t *testing.T) {
	t.Parallel()
	r := newRuntime(t, Config{})
	ctx := context.Background()
	a := load(t, r, runtime.Spec{Artifact: guests["sdk"], Env: map[string]string{"GREETING": "a"}})
	b := load(t, r, runtime.Spec{Artifact: guests["sdk"], Env: map[string]string{"GREETING": "b"}})
	if a.(*module).code != b.(*module).code {
		t.Fatal("two functions of one artifact compiled it twice")
	}
	other := load(t, r, runtime.Spec{Artifact: guests["wagi"]})
	if other.(*module).code == a.(*module).code {
		t.Fatal("two artifacts share code")
	}
	for _, tc := range []struct {
		m    runtime.Module
		want string
	}{{a, "a"}, {b, "b"}, {a, "a"}, {b, "b"}} { // the second round from the snapshots
		if got := string(mustHandle(t, instance(t, tc.m), get("/env", "key=GREETING")).Body); got != tc.want {
			t.Errorf("GREETING = %q, want %q", got, tc.want)
		}
	}
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	a.Close(ctx) // twice: no second release
	if got := string(mustHandle(t, instance(t, b), get("/env", "key=GREETING")).Body); got != "b" {
		t.Errorf("after the other function closed: GREETING = %q, want b", got)
	}
	r.mu.Lock()
	n := len(r.codes)
	r.mu.Unlock()
	if n != 2 {
		t.Errorf("%d codes loaded with two artifacts in use, want 2", n)
	}
	b.Close(ctx)
	other.Close(ctx)
	r.mu.Lock()
	n = len(r.codes)
	r.mu.Unlock()
	if n != 0 {
		t.Errorf("%d codes loaded after every function closed, want 0", n)
	}
}
