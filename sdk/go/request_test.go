package nimbus

import (
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

func roundTripRequest(t *testing.T, f func(*Response, *Request), req *wire.Request) *wire.Response {
	t.Helper()
	resp, err := wire.DecodeResponse(serveRequest(f, wire.EncodeRequest(nil, req), nil))
	if err != nil {
		t.Fatalf("decode response: %v", err)
	}
	return resp
}

// TestServeRequest: what a HandleRequest handler reads and writes
// crosses the ABI as a net/http handler's would.
func TestServeRequest(t *testing.T) {
	var seen []string
	f := func(w *Response, r *Request) {
		for k, v := range r.Headers() {
			seen = append(seen, k+"="+v)
		}
		w.SetHeader("x-name", r.PathValue("name"))
		w.AddHeader("X-Multi", "1")
		w.AddHeader("x-multi", "2")
		w.SetHeader("X-Replaced", "old")
		w.SetHeader("X-Replaced", "new")
		w.WriteHeader(http.StatusCreated)
		w.WriteHeader(http.StatusTeapot) // the first counts
		fmt.Fprintf(w, "%s %s %s %s %s %s %s %q %q %q %q", r.Method, r.Path, r.RawQuery, r.Host, r.RemoteAddr, r.Pattern,
			r.InvocationID, r.Body, r.Header("x-WHO"), r.HeaderValues("X-Who"), r.PathValue("missing"))
	}
	resp := roundTripRequest(t, f, &wire.Request{
		Method: "POST", Path: "/hello/bob", RawQuery: "q=1", Host: "h.example", RemoteAddr: "127.0.0.1:1",
		Route: "POST /hello/{name}", InvocationID: "inv-7", TraceParent: "00-aa-bb-01",
		Header: map[string][]string{"X-Who": {"ann", "bob"}}, Params: map[string]string{"name": "bob"}, Body: []byte("payload"),
	})
	want := `POST /hello/bob q=1 h.example 127.0.0.1:1 POST /hello/{name} inv-7 "payload" "ann" ["ann" "bob"] ""`
	if resp.Status != 201 || string(resp.Body) != want || resp.Error != "" {
		t.Fatalf("got %d %q %q, want 201 %q", resp.Status, resp.Body, resp.Error, want)
	}
	wantHeader := map[string][]string{"X-Name": {"bob"}, "X-Multi": {"1", "2"}, "X-Replaced": {"new"},
		"Content-Type": {"text/plain; charset=utf-8"}}
	if !reflect.DeepEqual(resp.Header, wantHeader) {
		t.Errorf("header %v, want %v", resp.Header, wantHeader)
	}
	if w := []string{"X-Who=ann", "X-Who=bob", "Traceparent=00-aa-bb-01"}; !reflect.DeepEqual(seen, w) {
		t.Errorf("Headers yielded %q, want %q", seen, w)
	}
}

func TestServeRequestDefaults(t *testing.T) {
	tests := []struct {
		name       string
		f          func(*Response, *Request)
		wantStatus int
		wantHeader map[string][]string
		wantError  string
	}{
		{"no write", func(*Response, *Request) {}, 200, nil, ""},
		{"content type kept", func(w *Response, _ *Request) {
			w.SetHeader("Content-Type", "application/json")
			w.WriteString("{}")
		}, 200, map[string][]string{"Content-Type": {"application/json"}}, ""},
		{"content type detected", func(w *Response, _ *Request) { w.WriteString("<html>") }, 200,
			map[string][]string{"Content-Type": {"text/html; charset=utf-8"}}, ""},
		{"informational status ignored", func(w *Response, _ *Request) { w.WriteHeader(103); w.WriteHeader(404) }, 404, nil, ""},
		{"panic", func(*Response, *Request) { panic("boom") }, 500, nil, "panic: boom"},
		{"bad status", func(w *Response, _ *Request) { w.WriteHeader(42) }, 500, nil, "panic: invalid WriteHeader code 42"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := roundTripRequest(t, tt.f, &wire.Request{Method: "GET", Path: "/"})
			if resp.Status != tt.wantStatus || resp.Error != tt.wantError || !reflect.DeepEqual(resp.Header, tt.wantHeader) {
				t.Fatalf("got %d %q %v, want %d %q %v", resp.Status, resp.Error, resp.Header, tt.wantStatus, tt.wantError, tt.wantHeader)
			}
		})
	}
	resp, err := wire.DecodeResponse(serveRequest(func(*Response, *Request) { t.Error("handler called") }, []byte("garbage"), nil))
	if err != nil || resp.Status != 500 || !strings.Contains(resp.Error, "bad request from host") {
		t.Fatalf("garbage request: %+v %v", resp, err)
	}
}

// TestServeRequestReuse: the Request and Response are reused, but what
// one request set never reaches the next, and the strings and body a
// handler kept stay as they were.
func TestServeRequestReuse(t *testing.T) {
	var paths, who []string
	var bodies [][]byte
	f := func(w *Response, r *Request) {
		paths, who, bodies = append(paths, r.Path), append(who, r.Header("X-Who")), append(bodies, r.Body)
		if r.Path == "/first" {
			w.SetHeader("X-Once", "yes")
			w.WriteHeader(http.StatusTeapot)
		}
		w.WriteString("answer to " + r.Path)
	}
	in := wire.EncodeRequest(nil, &wire.Request{Method: "POST", Path: "/first", Header: map[string][]string{"X-Who": {"ann"}}, Body: []byte("b1")})
	first, err := wire.DecodeResponse(serveRequest(f, in, nil))
	if err != nil {
		t.Fatal(err)
	}
	clear(in) // the host's request buffer is written over
	second := roundTripRequest(t, f, &wire.Request{Method: "GET", Path: "/second"})
	if first.Status != http.StatusTeapot || first.Header["X-Once"] == nil || string(first.Body) != "answer to /first" {
		t.Fatalf("first response %d %v %q", first.Status, first.Header, first.Body)
	}
	if second.Status != 200 || second.Header["X-Once"] != nil || string(second.Body) != "answer to /second" {
		t.Errorf("second response %d %v %q: carries the first's state", second.Status, second.Header, second.Body)
	}
	if !reflect.DeepEqual(paths, []string{"/first", "/second"}) || !reflect.DeepEqual(who, []string{"ann", ""}) ||
		string(bodies[0]) != "b1" || bodies[1] != nil {
		t.Errorf("kept %q %q %q", paths, who, bodies)
	}
}

// TestServeRequestTraceparent: the invocation's traceparent is the
// Traceparent header unless the request brought its own, as for a
// net/http handler.
func TestServeRequestTraceparent(t *testing.T) {
	f := func(w *Response, r *Request) {
		var all []string
		for k, v := range r.Headers() {
			all = append(all, k+"="+v)
		}
		fmt.Fprintf(w, "%q %s %s %q", r.HeaderValues("Traceparent"), r.Header("traceparent"), r.TraceParent, all)
	}
	for _, c := range []struct {
		header map[string][]string
		want   string
	}{
		{nil, `["00-inv-01"] 00-inv-01 00-inv-01 ["Traceparent=00-inv-01"]`},
		{map[string][]string{"Accept": {"*/*"}}, `["00-inv-01"] 00-inv-01 00-inv-01 ["Accept=*/*" "Traceparent=00-inv-01"]`},
		{map[string][]string{"Traceparent": {""}}, `["00-inv-01"] 00-inv-01 00-inv-01 ["Traceparent=00-inv-01"]`},
		{map[string][]string{"Traceparent": {"00-own-01"}}, `["00-own-01"] 00-own-01 00-inv-01 ["Traceparent=00-own-01"]`},
	} {
		resp := roundTripRequest(t, f, &wire.Request{Method: "GET", Path: "/", TraceParent: "00-inv-01", Header: c.header})
		if string(resp.Body) != c.want {
			t.Errorf("header %v: %s, want %s", c.header, resp.Body, c.want)
		}
	}
}

// TestServeRequestWorkflowActivation: an activation goes to the
// registered workflow, never to the request handler.
func TestServeRequestWorkflowActivation(t *testing.T) {
	resp := roundTripRequest(t, func(*Response, *Request) { t.Error("handler called for an activation") },
		&wire.Request{Method: "POST", Path: "/", Header: map[string][]string{wire.HeaderRun: {"run-1"}}})
	if resp.Status != 500 || !strings.Contains(resp.Error, "no workflow registered") {
		t.Fatalf("got %d %q", resp.Status, resp.Error)
	}
}

// TestHandleReplaces: the last of Handle and HandleRequest is the handler.
func TestHandleReplaces(t *testing.T) {
	defer handler.Store(nil)
	defer requestHandler.Store(nil)
	HandleRequest(func(*Response, *Request) {})
	if requestHandler.Load() == nil || registered() != nil {
		t.Fatal("HandleRequest did not replace the http.Handler")
	}
	Handle(http.NotFoundHandler())
	if requestHandler.Load() != nil || registered() == nil {
		t.Fatal("Handle did not replace the HandleRequest handler")
	}
}

// TestServeRequestAllocations holds the lean API to what docs/functions.md
// says: one allocation per request, with or without a body.
func TestServeRequestAllocations(t *testing.T) {
	f := func(w *Response, r *Request) {
		w.SetHeader("Content-Type", "text/plain")
		w.WriteString("hello, ")
		w.WriteString(r.PathValue("name"))
		w.Write(r.Body)
	}
	for _, c := range []struct {
		body []byte
		want float64
	}{{nil, 1}, {[]byte("a body"), 1}} {
		in := wire.EncodeRequest(nil, &wire.Request{Method: "POST", Path: "/hello/ann", Route: "POST /hello/{name}", TraceParent: "00-aa-bb-01",
			Header: map[string][]string{"Accept": {"*/*"}, "User-Agent": {"test"}}, Params: map[string]string{"name": "ann"}, Body: c.body})
		out := serveRequest(f, in, nil) // the reused buffers grow once
		if got := testing.AllocsPerRun(100, func() { out = serveRequest(f, in, out[:0]) }); got != c.want {
			t.Errorf("body %q: %v allocations per request, want %v", c.body, got, c.want)
		}
	}
}

// TestLargeResponseNotKept: the buffers reused from one request to the
// next are dropped after a response past maxKept, so that one large
// answer does not hold the function's memory for the instance's life.
func TestLargeResponseNotKept(t *testing.T) {
	big := make([]byte, 2*maxKept)
	lean := func(w *Response, r *Request) {
		if r.Path == "/big" {
			w.Write(big)
		}
	}
	roundTripRequest(t, lean, &wire.Request{Method: "GET", Path: "/big"})
	roundTripRequest(t, lean, &wire.Request{Method: "GET", Path: "/small"})
	if c := cap(leanResponse.body); c > maxKept {
		t.Errorf("HandleRequest kept a %d-byte body buffer", c)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/big" {
			w.Write(big)
		}
	})
	roundTrip(t, h, &wire.Request{Method: "GET", Path: "/big"})
	roundTrip(t, h, &wire.Request{Method: "GET", Path: "/small"})
	if c := body.Cap(); c > maxKept {
		t.Errorf("the net/http path kept a %d-byte body buffer", c)
	}
	if b := keepSmall(make([]byte, 10, 2*maxKept)); b != nil {
		t.Errorf("keepSmall kept %d bytes of capacity", cap(b))
	}
}
