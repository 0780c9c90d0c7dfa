package nimbus

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// benchRequest is a request as the gateway sends it for wrk's GET.
var benchRequest = &wire.Request{
	Method: "GET", Path: "/hello/bench", Host: "127.0.0.1:8080", RemoteAddr: "127.0.0.1:4242",
	Route: "GET /hello/{name}", InvocationID: "0123456789abcdef0123456789", TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
	Header: map[string][]string{"User-Agent": {"wrk"}, "Accept": {"*/*"}},
	Params: map[string]string{"name": "bench"},
}

// BenchmarkServe is the SDK's side of one request to a hello handler, as
// the gateway sends it: its allocations are what a guest's garbage
// collector pays for, and a Go guest's allocator is slow. Run it in wasm
// (see RATIONALE.md, "Go SDK warm path") to see what a guest pays.
func BenchmarkServe(b *testing.B) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Route", r.Pattern)
		fmt.Fprintf(w, "hello, %s", r.PathValue("name"))
	})
	benchServe(b, h)
}

// BenchmarkServeConst is BenchmarkServe for a handler that writes a
// constant (bench/testdata/constguest): the SDK's cost alone.
func BenchmarkServeConst(b *testing.B) {
	hello := []byte("hello, bench\n")
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Type"] = []string{"text/plain; charset=utf-8"}
		w.Write(hello)
	})
	benchServe(b, h)
}

func benchServe(b *testing.B, h http.Handler) {
	in := wire.EncodeRequest(nil, benchRequest)
	var out []byte
	b.ReportAllocs()
	for b.Loop() {
		out = serve(h, in, out[:0])
	}
}

// BenchmarkNewRequest is building the *http.Request of a decoded request.
func BenchmarkNewRequest(b *testing.B) {
	in := wire.EncodeRequest(nil, benchRequest)
	var wr wire.Request
	ps, err := wire.DecodeRequestInto(in, &wr, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		newRequest(&wr, ps)
	}
}

// BenchmarkServeRequest is BenchmarkServe for a HandleRequest handler
// answering the same hello: no maps, one allocation per request.
func BenchmarkServeRequest(b *testing.B) {
	f := func(w *Response, r *Request) {
		w.SetHeader("X-Route", r.Pattern)
		w.WriteString("hello, ")
		w.WriteString(r.PathValue("name"))
	}
	in := wire.EncodeRequest(nil, benchRequest)
	var out []byte
	b.ReportAllocs()
	for b.Loop() {
		out = serveRequest(f, in, out[:0])
	}
}
