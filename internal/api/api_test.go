package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/api"
	"github.com/nimbus-dev/nimbus/internal/apierror"
	"github.com/nimbus-dev/nimbus/internal/gateway"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/registry"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/security"
	"github.com/nimbus-dev/nimbus/internal/telemetry"
	"github.com/nimbus-dev/nimbus/internal/throttle"
)

// platform is the part of api.Platform the invoke endpoint uses: function
// "shop/f" with a 1KiB max_request_body, run by invoke. The rest is left
// nil: these tests are about the HTTP edge, not the node (package server
// tests the API on a real one).
type platform struct {
	api.Platform
	invoke func(req *runtime.Request) (*runtime.Response, error)
	queued []*runtime.Request
}

func (p *platform) Function(app, name string) (model.Function, bool) {
	if app != "shop" || name != "f" {
		return model.Function{}, false
	}
	return model.Function{Name: "f", MaxRequestBytes: 1 << 10}, true
}

func (p *platform) Invoke(_ context.Context, _, _ string, req *runtime.Request) (*runtime.Response, error) {
	return p.invoke(req)
}

func (p *platform) EnqueueInvocation(_ context.Context, _, _ string, req *runtime.Request, _ string) (string, bool, error) {
	p.queued = append(p.queued, req)
	return "inv-7", false, nil
}

func (p *platform) Rollback(context.Context, string, string) (*model.Revision, error) {
	return nil, &registry.RollbackError{Err: fmt.Errorf("rollback: app shop has only one revision; nothing to roll back to: %w", registry.ErrNoPreviousRevision)}
}

// admin lets every token do everything.
type admin struct{}

func (admin) Verify(context.Context, string) (*security.Identity, error) {
	return &security.Identity{Name: "admin", Scopes: []security.Scope{security.ScopeAdmin}}, nil
}

func serve(t *testing.T, h http.Handler, method, path, body string, header ...string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer t")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

func errorOf(t *testing.T, w *httptest.ResponseRecorder) *apierror.Error {
	t.Helper()
	var body apierror.Body
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body.Error == nil {
		t.Fatalf("error body %q: %v", w.Body, err)
	}
	return body.Error
}

// TestInvoke: POST .../invoke runs the function with the body and its
// Content-Type, and answers like a gateway route: the same body limit,
// async accept and error answers (gateway.Invocations).
func TestInvoke(t *testing.T) {
	p := &platform{invoke: func(req *runtime.Request) (*runtime.Response, error) {
		if req.Method != "POST" || req.Path != "/" || req.Header.Get("Content-Type") != "text/plain" || req.Header.Get("Authorization") != "" {
			return nil, fmt.Errorf("unexpected request %+v", req)
		}
		return &runtime.Response{Status: 201, Body: append([]byte("got "), req.Body...)}, nil
	}}
	m := telemetry.NewMetrics()
	h := api.Handler(p, admin{}, m, "test", slog.New(slog.DiscardHandler))
	const path = "/api/v1/apps/shop/functions/f/invoke"

	w := serve(t, h, "POST", path, "hi", "Content-Type", "text/plain")
	if w.Code != 201 || w.Body.String() != "got hi" || w.Header().Get(gateway.HeaderInvocationID) == "" || w.Header().Get(gateway.HeaderTraceParent) == "" {
		t.Fatalf("invoke: %d %q %v", w.Code, w.Body, w.Header())
	}

	w = serve(t, h, "POST", path, strings.Repeat("x", 1<<10+1))
	if e := errorOf(t, w); w.Code != 413 || e.Code != "request_too_large" || !strings.Contains(e.Message, "max_request_body is 1KiB") {
		t.Fatalf("body over the limit: %d %+v", w.Code, e)
	}
	if got := testCounter(t, m, "413"); got != 1 {
		t.Errorf("the 413 counted %v times in nimbus_requests_total, want 1", got)
	}

	w = serve(t, h, "POST", path, "later", gateway.HeaderPrefer, "respond-async")
	if w.Code != 202 || w.Header().Get("Location") != gateway.InvocationsPath+"inv-7" || len(p.queued) != 1 || string(p.queued[0].Body) != "later" {
		t.Fatalf("async invoke: %d %v, queued %d", w.Code, w.Header(), len(p.queued))
	}

	p.invoke = func(*runtime.Request) (*runtime.Response, error) {
		return nil, &throttle.LimitError{Limit: throttle.LimitConcurrency, RetryAfter: time.Second}
	}
	w = serve(t, h, "POST", path, "")
	if e := errorOf(t, w); w.Code != 503 || e.Code != "flow_concurrency" || w.Header().Get("Retry-After") != "1" {
		t.Fatalf("flow limited: %d %+v %v", w.Code, e, w.Header())
	}

	w = serve(t, h, "POST", "/api/v1/apps/shop/functions/nope/invoke", "")
	if e := errorOf(t, w); w.Code != 404 || e.Code != "function_not_found" {
		t.Fatalf("unknown function: %d %+v", w.Code, e)
	}
}

// TestDomainErrorsAnswered: a handler returns the platform's typed error
// as it is; the API answers it through apierror.From.
func TestDomainErrorsAnswered(t *testing.T) {
	h := api.Handler(&platform{}, admin{}, telemetry.NewMetrics(), "test", slog.New(slog.DiscardHandler))
	w := serve(t, h, "POST", "/api/v1/apps/shop/rollback", "")
	if e := errorOf(t, w); w.Code != 409 || e.Code != "rollback_failed" || !strings.Contains(e.Message, "nothing to roll back to") || w.Header().Get(apierror.Header) != "rollback_failed" {
		t.Fatalf("rollback refused: %d %+v", w.Code, e)
	}
}

func testCounter(t *testing.T, m *telemetry.Metrics, code string) float64 {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "nimbus_requests_total" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			for _, l := range mt.GetLabel() {
				if l.GetName() == "code" && l.GetValue() == code {
					return mt.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestJSONBodyOverLimit: a deploy body over the API's JSON limit is a 413
// that names the limit, whether its Content-Length says so (nothing is
// read) or it only shows while read (a chunked body streamed a byte past
// the limit), not a 400 "unexpected EOF" from a truncated decode.
func TestJSONBodyOverLimit(t *testing.T) {
	h := api.Handler(&platform{}, admin{}, telemetry.NewMetrics(), "test", slog.New(slog.DiscardHandler))
	const path = "/api/v1/apps/shop/deploy"
	for _, c := range []struct {
		name   string
		length int64 // Content-Length; -1 unknown
	}{{"declared", 100 << 20}, {"streamed", -1}} {
		t.Run(c.name, func(t *testing.T) {
			// A JSON object whose padding runs a byte past the limit,
			// generated as it is read.
			body := io.MultiReader(strings.NewReader(`{"functions": [`), io.LimitReader(spaces{}, api.MaxJSONBytes), strings.NewReader(`]}`))
			req := httptest.NewRequest("POST", path, body)
			req.ContentLength = c.length
			req.Header.Set("Authorization", "Bearer t")
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if e := errorOf(t, w); w.Code != 413 || e.Code != "request_too_large" || !strings.Contains(e.Message, "larger than 8MiB") {
				t.Fatalf("deploy body over the limit: %d %+v", w.Code, e)
			}
		})
	}
}

// spaces reads as endless JSON whitespace.
type spaces struct{}

func (spaces) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = ' '
	}
	return len(p), nil
}
