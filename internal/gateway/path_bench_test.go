package gateway_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/gateway"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/scheduler"
	"github.com/nimbus-dev/nimbus/internal/telemetry"
	"github.com/nimbus-dev/nimbus/internal/throttle"
)

// instant is a runtime whose instances answer at once with a fixed
// response: what is left of a request when the guest costs nothing, so
// the benchmarks below measure the platform's own share.
type instant struct{ resp *runtime.Response }

func (r instant) Load(context.Context, runtime.Spec) (runtime.Module, error) { return r, nil }
func (r instant) Close(context.Context) error                                { return nil }
func (r instant) Contract() runtime.Contract                                 { return runtime.ContractSDK }
func (r instant) Reusable() bool                                             { return true }
func (r instant) MaxConcurrency() int                                        { return 1 }
func (r instant) NewInstance(context.Context) (runtime.Instance, error)      { return r, nil }
func (r instant) Handle(context.Context, *runtime.Request) (*runtime.Response, error) {
	return r.resp, nil
}

type oneArtifact struct{}

func (oneArtifact) GetArtifact(context.Context, string) ([]byte, error) { return []byte("x"), nil }

// edge invokes as the node's gateway does: bounded waits (InvokeEdge).
type edge struct{ s *scheduler.Scheduler }

func (e edge) Invoke(ctx context.Context, app, fn string, req *runtime.Request) (*runtime.Response, error) {
	return e.s.InvokeEdge(ctx, app, fn, req)
}

// pathGateway is a gateway over a real scheduler over the instant runtime,
// serving GET /hello/{name} with max instances n.
func pathGateway(b *testing.B, n int) *gateway.Gateway {
	b.Helper()
	ctx := context.Background()
	logger := slog.New(slog.DiscardHandler)
	resp := &runtime.Response{Status: 200, Header: http.Header{"Content-Type": {"text/plain; charset=utf-8"}}, Body: []byte("hello, bench\n")}
	s := scheduler.New(runtime.Set{model.RuntimeWasm: instant{resp}}, oneArtifact{}, scheduler.Options{Logger: logger, Metrics: telemetry.NewMetrics(),
		Waiting: throttle.NewWaiting(0)})
	b.Cleanup(func() { s.Close(ctx) })
	rev, err := model.Plan("hello", []model.Function{{
		Name: "hello", Runtime: model.RuntimeWasm, Module: strings.Repeat("ab", 32), MemoryBytes: 64 << 20, TimeoutMS: 30_000,
		Concurrency: 1, MaxInstances: n, MaxRequestBytes: model.DefaultMaxBodyBytes, MaxResponseBytes: 1 << 20,
		Routes: []model.Route{{Method: "GET", Path: "/hello/{name}"}},
	}})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Activate(ctx, rev); err != nil {
		b.Fatal(err)
	}
	g := gateway.New(edge{s}, logger)
	g.SetMetrics(telemetry.NewMetrics())
	if err := g.Provision(ctx, rev); err != nil {
		b.Fatal(err)
	}
	return g
}

// BenchmarkWarmPath is the platform's whole share of a warm request,
// gateway -> scheduler -> runtime with a guest that costs nothing:
// routing, ids and trace context, the pool's acquire and release, metrics,
// the response. Its time and allocations are the per-request overhead the
// warm scenarios of bench/ pay on top of the guest (bench/README.md).
func BenchmarkWarmPath(b *testing.B) {
	g := pathGateway(b, 1)
	req := httptest.NewRequest("GET", "/hello/bench", nil)
	req.Header.Set("User-Agent", "bench")
	w := &discard{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		g.ServeHTTP(w, req)
	}
}

// BenchmarkWarmPathParallel is BenchmarkWarmPath from GOMAXPROCS
// goroutines at once onto as many instances: the shared locks and
// counters of the path under contention.
func BenchmarkWarmPathParallel(b *testing.B) {
	g := pathGateway(b, 64)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := httptest.NewRequest("GET", "/hello/bench", nil)
		req.Header.Set("User-Agent", "bench")
		w := &discard{h: http.Header{}}
		for pb.Next() {
			clear(w.h)
			g.ServeHTTP(w, req)
		}
	})
}
