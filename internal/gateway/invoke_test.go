package gateway_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/apierror"
	"github.com/nimbus-dev/nimbus/internal/gateway"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/telemetry"
	"github.com/nimbus-dev/nimbus/internal/throttle"
)

// recorder is an Invoker that remembers what it ran and answers with err,
// or 200 and the body's length.
type recorder struct {
	mu   sync.Mutex
	reqs []*runtime.Request
	err  error
}

func (r *recorder) Invoke(_ context.Context, _, _ string, req *runtime.Request) (*runtime.Response, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = append(r.reqs, req)
	if r.err != nil {
		return nil, r.err
	}
	return &runtime.Response{Status: 200, Body: []byte(strings.Repeat("x", len(req.Body)))}, nil
}

func (r *recorder) runs() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.reqs)
}

// queue is an AsyncSink that accepts everything.
type queue struct{ bodies [][]byte }

func (q *queue) EnqueueInvocation(_ context.Context, _, _ string, req *runtime.Request, _ string) (string, bool, error) {
	q.bodies = append(q.bodies, req.Body)
	return "inv-1", false, nil
}

// limited serves app "shop" function "f" at "POST /f" with a 1KiB
// max_request_body.
func limited(t *testing.T, inv gateway.Invoker) (*gateway.Gateway, *telemetry.Metrics) {
	t.Helper()
	g := gateway.New(inv, slog.New(slog.DiscardHandler))
	m := telemetry.NewMetrics()
	g.SetMetrics(m)
	rev := &model.Revision{App: "shop", ID: "r1", Functions: []model.Function{{
		Name: "f", MaxRequestBytes: 1 << 10, Routes: []model.Route{{Method: "POST", Path: "/f"}},
	}}}
	if err := g.Provision(context.Background(), rev); err != nil {
		t.Fatal(err)
	}
	return g, m
}

// counter reads a counter of m with the given labels (0 if absent).
func counter(t *testing.T, m *telemetry.Metrics, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, mt := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range mt.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue next
				}
			}
			return mt.GetCounter().GetValue()
		}
	}
	return 0
}

func errorOf(t *testing.T, w *httptest.ResponseRecorder) *apierror.Error {
	t.Helper()
	var body apierror.Body
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body.Error == nil {
		t.Fatalf("error body %q: %v", w.Body, err)
	}
	return body.Error
}

// TestBodyLimit: a body up to the function's max_request_body runs; one
// past it is a 413 naming the limit, whether its Content-Length says so or
// it only shows while read, never reaches the invoker, and counts in the
// metrics as the scheduler would count it.
func TestBodyLimit(t *testing.T) {
	inv := &recorder{}
	g, m := limited(t, inv)

	w := httptest.NewRecorder()
	g.ServeHTTP(w, httptest.NewRequest("POST", "/f", strings.NewReader(strings.Repeat("a", 1<<10))))
	if w.Code != 200 || w.Body.Len() != 1<<10 || w.Header().Get(gateway.HeaderInvocationID) == "" {
		t.Fatalf("body at the limit: %d, %d bytes, headers %v", w.Code, w.Body.Len(), w.Header())
	}

	over := strings.Repeat("a", 1<<10+1)
	for name, req := range map[string]*http.Request{
		"content-length": httptest.NewRequest("POST", "/f", strings.NewReader(over)),
		// No Content-Length: the limit shows only as the body is read.
		"chunked": httptest.NewRequest("POST", "/f", io.MultiReader(strings.NewReader(over))),
	} {
		if name == "chunked" {
			req.ContentLength = -1
		}
		w := httptest.NewRecorder()
		g.ServeHTTP(w, req)
		e := errorOf(t, w)
		want := "shop/f: request body too large: the function's max_request_body is 1KiB; raise functions.f.max_request_body in nimbus.yaml if this is expected"
		if w.Code != 413 || e.Code != "request_too_large" || e.Message != want || w.Header().Get(apierror.Header) != "request_too_large" {
			t.Errorf("%s: %d %s %q", name, w.Code, e.Code, e.Message)
		}
		if w.Header().Get(gateway.HeaderInvocationID) == "" {
			t.Errorf("%s: a refused invocation has no invocation id", name)
		}
	}
	if n := inv.runs(); n != 1 {
		t.Fatalf("the invoker ran %d times, want 1 (the bodies over the limit must not reach it)", n)
	}
	labels := map[string]string{"app": "shop", "function": "f"}
	if got := counter(t, m, "nimbus_request_errors_total", map[string]string{"app": "shop", "function": "f", "reason": "request_too_large"}); got != 2 {
		t.Errorf("nimbus_request_errors_total{reason=request_too_large} = %v, want 2", got)
	}
	labels["code"] = "413"
	if got := counter(t, m, "nimbus_requests_total", labels); got != 2 {
		t.Errorf("nimbus_requests_total{code=413} = %v, want 2", got)
	}
}

// TestAsyncIsQueuedWithTheSameBodyCheck: Prefer: respond-async queues
// the invocation once an async sink is set (202 with its id and where to
// read it), after the same body check; without one the request runs.
func TestAsyncIsQueuedWithTheSameBodyCheck(t *testing.T) {
	inv := &recorder{}
	g, _ := limited(t, inv)
	asyncReq := func(body string) *http.Request {
		req := httptest.NewRequest("POST", "/f", strings.NewReader(body))
		req.Header.Set(gateway.HeaderPrefer, "respond-async")
		return req
	}
	w := httptest.NewRecorder()
	g.ServeHTTP(w, asyncReq("hi"))
	if w.Code != 200 || inv.runs() != 1 {
		t.Fatalf("without an async sink: %d, %d runs", w.Code, inv.runs())
	}

	q := &queue{}
	g.SetAsync(q)
	w = httptest.NewRecorder()
	g.ServeHTTP(w, asyncReq("hi"))
	if w.Code != 202 || w.Header().Get("Location") != gateway.InvocationsPath+"inv-1" || len(q.bodies) != 1 || string(q.bodies[0]) != "hi" {
		t.Fatalf("async: %d %v, queued %q", w.Code, w.Header(), q.bodies)
	}
	w = httptest.NewRecorder()
	g.ServeHTTP(w, asyncReq(strings.Repeat("a", 1<<10+1)))
	if w.Code != 413 || len(q.bodies) != 1 {
		t.Fatalf("async body over the limit: %d, %d queued", w.Code, len(q.bodies))
	}
	if inv.runs() != 1 {
		t.Fatalf("async requests ran")
	}
}

// TestInvokerErrorsAnswered: the invoker's typed errors are answered as
// apierror maps them, headers included.
func TestInvokerErrorsAnswered(t *testing.T) {
	inv := &recorder{err: &throttle.LimitError{Limit: throttle.LimitRate, Key: "acme", RetryAfter: 2500 * time.Millisecond}}
	g, _ := limited(t, inv)
	w := httptest.NewRecorder()
	g.ServeHTTP(w, httptest.NewRequest("POST", "/f", nil))
	if e := errorOf(t, w); w.Code != 429 || e.Code != "flow_rate" || w.Header().Get("Retry-After") != "3" || !strings.HasPrefix(e.Message, "shop/f: ") {
		t.Fatalf("rate limited: %d %+v %v", w.Code, e, w.Header())
	}
	inv.err = throttle.ErrSuperseded
	w = httptest.NewRecorder()
	g.ServeHTTP(w, httptest.NewRequest("POST", "/f", nil))
	if w.Code != 202 || w.Header().Get("Nimbus-Flow") != "superseded" {
		t.Fatalf("superseded: %d %v", w.Code, w.Header())
	}
}
