package wasm

import (
	"context"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/runtime"
)

// BenchmarkWarmCall is one request on a warm Go SDK instance.
func BenchmarkWarmCall(b *testing.B) {
	r := newRuntime(b, Config{})
	inst := instance(b, load(b, r, runtime.Spec{Artifact: guests["sdk"]}))
	req := get("/hello/bench", "")
	req.Params = map[string]string{"name": "bench"}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := inst.Handle(ctx, req); err != nil {
			b.Fatal(err)
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

// BenchmarkWAGIRequest is one WAGI request: a fresh Go command instance
// running main to completion.
func BenchmarkWAGIRequest(b *testing.B) {
	r := newRuntime(b, Config{})
	inst := instance(b, load(b, r, runtime.Spec{Artifact: guests["wagi"]}))
	req := get("/users/1", "a=b")
	req.Params = map[string]string{"id": "1"}
	ctx := context.Background()
	b.ReportAllocs()
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
