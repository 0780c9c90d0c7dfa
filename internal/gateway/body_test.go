package gateway_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/apierror"
	"github.com/nimbus-dev/nimbus/internal/gateway"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/telemetry"
	"github.com/nimbus-dev/nimbus/internal/throttle"
)

// bodyServer serves app "shop" function "f" at "POST /f" (max_request_body
// 1MiB), run by inv, behind bodies, on a real loopback listener: deadlines
// are the connection's.
func bodyServer(t *testing.T, inv gateway.Invoker, bodies *gateway.Bodies) (*httptest.Server, *telemetry.Metrics) {
	t.Helper()
	g := gateway.New(inv, slog.New(slog.DiscardHandler))
	m := telemetry.NewMetrics()
	g.SetMetrics(m)
	rev := &model.Revision{App: "shop", ID: "r1", Functions: []model.Function{{
		Name: "f", MaxRequestBytes: 1 << 20, Routes: []model.Route{{Method: "POST", Path: "/f"}},
	}}}
	if err := g.Provision(context.Background(), rev); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(bodies.Handler(g))
	t.Cleanup(srv.Close)
	return srv, m
}

// startBody opens a connection to srv, sends the headers of a POST /f
// declaring length bytes and the first sent of them, and leaves the rest
// unsent.
func startBody(t *testing.T, srv *httptest.Server, length, sent int) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "POST /f HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n%s", length, strings.Repeat("a", sent))
	return conn
}

// readResponse reads the answer on conn; the deadline only keeps a broken
// server from hanging the test.
func readResponse(t *testing.T, conn net.Conn) (*http.Response, *apierror.Error) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	w := httptest.NewRecorder()
	w.Code = resp.StatusCode
	io.Copy(w.Body, resp.Body)
	resp.Body.Close()
	return resp, errorOf(t, w)
}

// post sends a body of n bytes to srv's POST /f, with its Content-Length
// or (chunked) without.
func post(t *testing.T, srv *httptest.Server, n int, chunked bool) *http.Response {
	t.Helper()
	var body io.Reader = strings.NewReader(strings.Repeat("b", n))
	if chunked {
		body = io.MultiReader(body) // hides the length: the client sends it chunked
	}
	req, err := http.NewRequest("POST", srv.URL+"/f", body)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// waitFor polls cond until it holds, failing the test after 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// slowInvoker answers 200 after d, or fails with its context's error if
// the request's context ends first.
type slowInvoker struct{ d time.Duration }

func (s slowInvoker) Invoke(ctx context.Context, _, _ string, req *runtime.Request) (*runtime.Response, error) {
	select {
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	case <-time.After(s.d):
		return &runtime.Response{Status: 200, Body: []byte("done")}, nil
	}
}

// TestSlowBodyCut: a body that stops arriving is cut once it falls behind
// the minimum rate: 408 body_too_slow, the connection closed, the function
// never run. A body that keeps up is read whole, and the deadline is gone
// once it has been: an invocation that runs past it is not cut.
func TestSlowBodyCut(t *testing.T) {
	const grace = 100 * time.Millisecond
	inv := &recorder{}
	srv, m := bodyServer(t, inv, &gateway.Bodies{Rate: throttle.BodyRate{Grace: grace, MinRate: 1 << 10}})

	conn := startBody(t, srv, 100<<10, 10) // 10 bytes of 100 KiB, then nothing
	resp, e := readResponse(t, conn)
	if resp.StatusCode != http.StatusRequestTimeout || e.Code != "body_too_slow" || !resp.Close ||
		!strings.Contains(e.Message, "request body too slow: 10B arrived in") || !strings.Contains(e.Message, "under the minimum of 1KiB/s after 100ms") {
		t.Fatalf("slow body: %d close=%v %+v", resp.StatusCode, resp.Close, e)
	}
	if _, err := conn.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("after a slow body the connection is still open (read: %v)", err)
	}
	if inv.runs() != 0 {
		t.Fatalf("a body cut short reached the invoker")
	}
	if got := counter(t, m, "nimbus_requests_total", map[string]string{"app": "shop", "function": "f", "code": "408"}); got != 1 {
		t.Errorf("nimbus_requests_total{code=408} = %v, want 1", got)
	}

	if resp := post(t, srv, 200<<10, false); resp.StatusCode != 200 {
		t.Fatalf("a body sent at once: %d", resp.StatusCode)
	}

	// The same limits, a function that outlives the body's deadline.
	slow, _ := bodyServer(t, slowInvoker{4 * grace}, &gateway.Bodies{Rate: throttle.BodyRate{Grace: grace, MinRate: 1 << 10}})
	if resp := post(t, slow, 10, false); resp.StatusCode != 200 {
		t.Fatalf("an invocation running past its body's deadline: %d", resp.StatusCode)
	}
}

// TestBodyBudget: while large bodies hold an app's budget, another large
// body of the app is refused at once with 503 body_budget and
// Retry-After, with or without a Content-Length, never reaching the
// function; a small request of the same app still runs (the reserve);
// the budget is given back when the requests end.
func TestBodyBudget(t *testing.T) {
	budget := throttle.NewBudget(throttle.BudgetConfig{Node: 1 << 20, App: 512 << 10}) // large bodies: 448 KiB per app
	inv := &recorder{}
	srv, m := bodyServer(t, inv, &gateway.Bodies{Budget: budget, Rate: throttle.BodyRate{Grace: time.Minute}})

	holder := startBody(t, srv, 400<<10, 10) // charged whole, at once, and never finished
	waitFor(t, "the held body to be charged", func() bool { _, app := budget.Used("shop"); return app == 400<<10 })

	for _, chunked := range []bool{false, true} {
		req, err := http.NewRequest("POST", srv.URL+"/f", strings.NewReader(strings.Repeat("b", 100<<10)))
		if err != nil {
			t.Fatal(err)
		}
		if chunked {
			req.Body, req.ContentLength = io.NopCloser(req.Body), -1
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		w := httptest.NewRecorder()
		w.Code = resp.StatusCode
		io.Copy(w.Body, resp.Body)
		resp.Body.Close()
		if e := errorOf(t, w); w.Code != 503 || e.Code != "body_budget" || resp.Header.Get("Retry-After") != "1" ||
			!strings.Contains(e.Message, `app "shop"'s budget for request bodies held in memory (512KiB) is full; retry later`) {
			t.Fatalf("over the budget (chunked %v): %d %+v %v", chunked, w.Code, e, resp.Header)
		}
	}
	// Refused before a byte is read, and answered at once: the server
	// does not wait for (drain) the body first.
	resp, e := readResponse(t, startBody(t, srv, 100<<10, 0))
	if resp.StatusCode != 503 || e.Code != "body_budget" || !resp.Close {
		t.Fatalf("over the budget, nothing sent: %d close=%v %+v", resp.StatusCode, resp.Close, e)
	}
	if inv.runs() != 0 {
		t.Fatalf("a body over the budget reached the invoker")
	}
	if got := counter(t, m, "nimbus_request_errors_total", map[string]string{"app": "shop", "function": "f", "reason": "body_budget"}); got != 3 {
		t.Errorf("nimbus_request_errors_total{reason=body_budget} = %v, want 3", got)
	}

	if resp := post(t, srv, 100, false); resp.StatusCode != 200 {
		t.Fatalf("a small request with the app's budget for large bodies full: %d", resp.StatusCode)
	}
	if _, app := budget.Used("shop"); app != 400<<10 {
		t.Fatalf("after the refusals and the small request the app holds %d bytes, want only the held body's", app)
	}

	holder.Close()
	waitFor(t, "the budget to be given back", func() bool { node, _ := budget.Used("shop"); return node == 0 })
	if resp := post(t, srv, 100<<10, true); resp.StatusCode != 200 {
		t.Fatalf("a large body once the budget is free: %d", resp.StatusCode)
	}
}
