package wasm

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/runtime/wasm/wasmbin"
)

// BenchmarkWarmCall is one request on a warm Go SDK instance.
func BenchmarkWarmCall(b *testing.B) {
	r := newRuntime(b, Config{})
	inst := instance(b, load(b, r, runtime.Spec{Artifact: guests["sdk"]}))
	req := get("/hello/bench", "")
	req.Params = map[string]string{"name": "bench"}
	ctx := context.Background()
	b.ReportAllocs()
	defer reportCPU(b)()
	for b.Loop() {
		if _, err := inst.Handle(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWarmCallColdCaches is BenchmarkWarmCall with the CPU caches
// flushed between calls (8 MiB written, more than this host's L2 and its
// share of L3), as they are under a real load where the kernel's network
// path, the gateway and the load generator run between two calls of a
// guest. call-ns/op times Handle alone. A guest's speed under load depends
// on how much code and memory one request touches, which a warm-cache
// loop hides: bench/README.md ("Why a guest is slower under load") has the
// figures.
func BenchmarkWarmCallColdCaches(b *testing.B) {
	evict := make([]byte, 8<<20)
	for _, g := range []struct {
		name     string
		artifact func() []byte
	}{{"minimal", func() []byte { return minimalSDK(nil) }}, {"sdk", func() []byte { return guests["sdk"] }}} {
		for _, flush := range []bool{false, true} {
			b.Run(fmt.Sprintf("guest=%s/flushed=%v", g.name, flush), func(b *testing.B) {
				r := newRuntime(b, Config{})
				inst := instance(b, load(b, r, runtime.Spec{Artifact: g.artifact()}))
				req := get("/hello/bench", "")
				req.Params = map[string]string{"name": "bench"}
				ctx := context.Background()
				var in time.Duration
				for b.Loop() {
					if flush {
						for i := 0; i < len(evict); i += 64 {
							evict[i]++
						}
					}
					t := time.Now()
					if _, err := inst.Handle(ctx, req); err != nil {
						b.Fatal(err)
					}
					in += time.Since(t)
				}
				b.ReportMetric(float64(in.Nanoseconds())/float64(b.N), "call-ns/op")
			})
		}
	}
}

// BenchmarkColdStartMinimal is a cold start plus one request of the
// smallest possible SDK guest (hand-written, one page of memory).
func BenchmarkColdStartMinimal(b *testing.B) {
	benchColdStart(b, minimalSDK(nil), get("/", ""))
}

// BenchmarkColdStartGoSDK is a cold start (instantiate, Go runtime
// initialization) plus one request of a Go SDK guest.
func BenchmarkColdStartGoSDK(b *testing.B) {
	benchColdStart(b, guests["sdk"], get("/hello", ""))
}

func benchColdStart(b *testing.B, artifact []byte, req *runtime.Request) {
	r := newRuntime(b, Config{})
	m := load(b, r, runtime.Spec{Artifact: artifact})
	ctx := context.Background()
	b.ReportAllocs()
	defer reportCPU(b)()
	for b.Loop() {
		inst, err := m.NewInstance(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := inst.Handle(ctx, req); err != nil {
			b.Fatal(err)
		}
		inst.Close(ctx)
	}
}

// BenchmarkColdStartAfterEviction is BenchmarkColdStartGoSDK for a
// function whose compiled code was evicted while it was idle (code.go):
// the artifact fetched from an in-memory source, rewritten, its machine
// code read from the compilation cache, and _initialize run (the eviction
// dropped the snapshot). Two functions take turns with a budget of one
// idle code, so every instance reloads.
func BenchmarkColdStartAfterEviction(b *testing.B) {
	benchReload(b, guests["sdk"], get("/hello", ""))
}

// BenchmarkColdStartAfterEvictionMinimal is the same for the smallest SDK
// guest.
func BenchmarkColdStartAfterEvictionMinimal(b *testing.B) {
	benchReload(b, minimalSDK(nil), get("/", ""))
}

func benchReload(b *testing.B, artifact []byte, req *runtime.Request) {
	other := minimalSDKWith(nil, wasmbin.Concat(wasmbin.I32Const(1), wasmbin.Drop()))
	r := newRuntime(b, Config{Artifacts: newArtifactStore(artifact, other), IdleModules: 1})
	mods := []runtime.Module{load(b, r, runtime.Spec{Artifact: artifact}), load(b, r, runtime.Spec{Artifact: other})}
	ctx := context.Background()
	b.ReportAllocs()
	defer reportCPU(b)()
	evicted := r.evicted.Load()
	for b.Loop() {
		for _, m := range mods {
			inst, err := m.NewInstance(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if m == mods[0] {
				if _, err := inst.Handle(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
			inst.Close(ctx)
		}
	}
	if n := r.evicted.Load() - evicted; n < int64(b.N) {
		b.Fatalf("%d evictions in %d rounds: the benchmark did not reload", n, b.N)
	}
}

// BenchmarkWAGIRequest is one WAGI request: a fresh Go command instance
// running main to completion.
func BenchmarkWAGIRequest(b *testing.B) {
	r := newRuntime(b, Config{})
	inst := instance(b, load(b, r, runtime.Spec{Artifact: guests["wagi"]}))
	req := get("/users/1", "a=b")
	req.Params = map[string]string{"id": "1"}
	ctx := context.Background()
	b.ReportAllocs()
	defer reportCPU(b)()
	for b.Loop() {
		if _, err := inst.Handle(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRewrite is Load's rewrite (fuel checks, merged data segments)
// of a Go SDK guest.
func BenchmarkRewrite(b *testing.B) {
	b.SetBytes(int64(len(guests["sdk"])))
	for b.Loop() {
		if _, err := Rewrite(guests["sdk"]); err != nil {
			b.Fatal(err)
		}
	}
}

// reportCPU reports the process's CPU time (user and system, page faults
// included) per operation from now until the returned function is called:
// on a shared machine, wall time per operation measures the neighbours.
func reportCPU(b *testing.B) func() {
	cpu, faults := usage()
	return func() {
		cpu1, faults1 := usage()
		b.ReportMetric(float64((cpu1-cpu).Nanoseconds())/float64(b.N), "cpu-ns/op")
		b.ReportMetric(float64(faults1-faults)/float64(b.N), "faults/op")
	}
}

// usage is the process's CPU time and its count of minor page faults.
func usage() (time.Duration, int64) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), ru.Minflt
}
