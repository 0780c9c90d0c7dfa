package process

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/runtime"
)

// BenchmarkColdStart is scale from zero in the sandbox: a new instance of
// a loaded function (sandbox claimed or made, process started, port
// ready) and its first response. The instance's close is not timed.
// after-idle waits (untimed) for the pool of sandboxes to be full before
// each start, as after an idle period; back-to-back does not (the pool
// refills while the next start runs); no-pool makes every sandbox at the
// start; unisolated starts the process without a sandbox (isolation: none),
// its readiness a dial and a check that the listener is its own.
func BenchmarkColdStart(b *testing.B) {
	for _, c := range []struct {
		name    string
		pool    int
		await   bool
		sandbox bool
	}{{"after-idle", 0, true, true}, {"back-to-back", 0, false, true}, {"no-pool", -1, false, true}, {"unisolated", 0, false, false}} {
		b.Run(c.name, func(b *testing.B) {
			if h := Probe(); c.sandbox && !h.Sandbox() {
				b.Skip("host cannot sandbox processes")
			}
			rt, err := New(Config{Dir: filepath.Join(b.TempDir(), "process"), Sandboxes: c.pool})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { rt.Close(context.Background()) })
			m := load(b, rt, spec(b, c.sandbox))
			ctx := context.Background()
			for b.Loop() {
				if c.await {
					b.StopTimer()
					if err := rt.SandboxesReady(ctx); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
				inst, err := m.NewInstance(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := inst.Handle(ctx, &runtime.Request{Method: "GET", Path: "/echo"}); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				inst.Close(ctx)
				b.StartTimer()
			}
		})
	}
}

// BenchmarkWarmRequest is one request to a running sandboxed process,
// from 8 goroutines (as bench's warm scenario).
func BenchmarkWarmRequest(b *testing.B) {
	if h := Probe(); !h.Sandbox() {
		b.Skip("host cannot sandbox processes")
	}
	rt := newRuntime(b)
	inst := start(b, load(b, rt, spec(b, true)))
	ctx := context.Background()
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := inst.Handle(ctx, &runtime.Request{Method: "GET", Path: "/echo"}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
