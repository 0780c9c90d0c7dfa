package nimbus

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// BenchmarkServe is the SDK's side of one request to a hello handler, as
// the gateway sends it: its allocations are what a guest's garbage
// collector pays for, and a Go guest's allocator is slow.
func BenchmarkServe(b *testing.B) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Route", r.Pattern)
		fmt.Fprintf(w, "hello, %s", r.PathValue("name"))
	})
	in := wire.EncodeRequest(nil, &wire.Request{
		Method: "GET", Path: "/hello/bench", Host: "127.0.0.1:8080", RemoteAddr: "127.0.0.1:4242",
		Route: "GET /hello/{name}", InvocationID: "0123456789abcdef0123456789", TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
		Header: map[string][]string{"User-Agent": {"wrk"}, "Accept": {"*/*"}},
		Params: map[string]string{"name": "bench"},
	})
	var out []byte
	b.ReportAllocs()
	for b.Loop() {
		out = serve(h, in, out[:0])
	}
}
