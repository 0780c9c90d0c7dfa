package gateway_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/gateway"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime"
)

// hello answers every invocation with the same response, as a warm guest
// would.
type hello struct{ resp *runtime.Response }

func (h hello) Invoke(context.Context, string, string, *runtime.Request) (*runtime.Response, error) {
	return h.resp, nil
}

// discard is a ResponseWriter that keeps nothing but its header map.
type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) WriteHeader(int)             {}

// BenchmarkRoute is the gateway's share of a warm request: routing, the
// request, ids and trace context, the shared invocation handler, the
// response. Its allocations are what the hot path costs per request.
func BenchmarkRoute(b *testing.B) {
	g := gateway.New(hello{&runtime.Response{Status: 200, Body: []byte("hello, bench")}}, slog.New(slog.DiscardHandler))
	rev := &model.Revision{App: "hello", ID: "r", Functions: []model.Function{{
		Name: "hello", MaxRequestBytes: model.DefaultMaxBodyBytes, Routes: []model.Route{{Method: "GET", Path: "/hello/{name}"}},
	}}}
	if err := g.Provision(context.Background(), rev); err != nil {
		b.Fatal(err)
	}
	req := httptest.NewRequest("GET", "/hello/bench", nil)
	w := &discard{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		g.ServeHTTP(w, req)
	}
}
