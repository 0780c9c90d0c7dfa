package process

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/runtime"
)

// proxyTo is a proxy to a net/http server on the loopback running h, and
// a count of the connections the server accepted.
func proxyTo(t *testing.T, h http.HandlerFunc) (*proxy, *atomic.Int64) {
	x, conns, _ := proxyToServer(t, h)
	return x, conns
}

// proxyToServer is proxyTo, and also returns what closes the server's
// idle connections (as a process that drops a kept-alive connection) and
// says how many it closed.
func proxyToServer(t *testing.T, h http.HandlerFunc, configure ...func(*http.Server)) (*proxy, *atomic.Int64, func() int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int64
	var mu sync.Mutex
	idle := map[net.Conn]bool{}
	srv := &http.Server{Handler: h, ConnState: func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
		mu.Lock()
		idle[c] = s == http.StateIdle
		if s == http.StateClosed || s == http.StateHijacked {
			delete(idle, c)
		}
		mu.Unlock()
	}}
	closeIdle := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for c, ok := range idle {
			if ok {
				c.Close()
				delete(idle, c)
				n++
			}
		}
		return n
	}
	for _, c := range configure {
		c(srv)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	var d net.Dialer
	x := &proxy{p: &proc{addr: ln.Addr().String(), dial: d.DialContext}}
	t.Cleanup(x.close)
	return x, &conns, closeIdle
}

// TestProxy: what reaches the process and what comes back, over one
// kept-alive connection.
func TestProxy(t *testing.T) {
	t.Parallel()
	x, conns := proxyTo(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Got", fmt.Sprintf("%s %s %s host=%s xff=%s conn=%q te=%q bad=%q inv=%s trace=%s route=%s len=%d",
			r.Method, r.URL.EscapedPath(), r.URL.RawQuery, r.Host, r.Header.Get("X-Forwarded-For"), r.Header.Get("Connection"),
			r.Header.Get("Te"), r.Header.Get("X-Bad")+r.Header.Get("Injected"), r.Header.Get(HeaderInvocation), r.Header.Get("Traceparent"),
			r.Header.Get(HeaderRoute), len(body)))
		w.Header().Set("Keep-Alive", "timeout=5")
		switch r.URL.Path {
		case "/chunked":
			w.Write([]byte("part1"))
			w.(http.Flusher).Flush()
			w.Write([]byte("part2"))
		case "/big":
			w.(http.Flusher).Flush() // chunked: no length to refuse up front
			w.Write([]byte(strings.Repeat("x", 100)))
		case "/biglength":
			w.Header().Set("Content-Length", "100")
			w.Write([]byte(strings.Repeat("x", 100)))
		default:
			w.WriteHeader(207)
			w.Write(body)
		}
	})
	ctx := context.Background()
	resp, err := x.forward(ctx, &runtime.Request{Method: "POST", Path: "/a b/ü", RawQuery: "q=1", Body: []byte("hello"),
		Host: "example.com", RemoteAddr: "192.0.2.7:5555", InvocationID: "inv-1", TraceParent: "00-abc-def-01", Route: "/a",
		Header: http.Header{"X-Forwarded-For": {"10.0.0.1"}, "Connection": {"close"}, "Te": {"trailers"}, "X-Bad": {"a\r\nInjected: 1"}}}, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	want := `POST /a%20b/%C3%BC q=1 host=example.com xff=10.0.0.1, 192.0.2.7 conn="" te="" bad="" inv=inv-1 trace=00-abc-def-01 route=/a len=5`
	if resp.Status != 207 || string(resp.Body) != "hello" || resp.Header.Get("X-Got") != want {
		t.Fatalf("got %d %q %q\nwant X-Got %q", resp.Status, resp.Body, resp.Header.Get("X-Got"), want)
	}
	if resp.Header.Get("Keep-Alive") != "" || resp.Header.Get("Content-Length") != "" {
		t.Errorf("hop-by-hop or length headers came back: %v", resp.Header)
	}
	for range 3 {
		resp, err = x.forward(ctx, &runtime.Request{Method: "GET", Path: "/chunked"}, 1<<20)
		if err != nil || string(resp.Body) != "part1part2" {
			t.Fatalf("chunked: %v %q", err, resp.Body)
		}
	}
	resp, err = x.forward(ctx, &runtime.Request{Method: "HEAD", Path: "/"}, 1<<20)
	if err != nil || resp.Status != 207 || len(resp.Body) != 0 {
		t.Fatalf("HEAD: %v %+v", err, resp)
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections for requests in sequence, want 1 kept alive", n)
	}
	for _, path := range []string{"/big", "/biglength"} {
		_, err = x.forward(ctx, &runtime.Request{Method: "GET", Path: path}, 99)
		if !errors.Is(err, runtime.ErrResponseTooLarge) {
			t.Errorf("%s over the cap: %v, want ErrResponseTooLarge", path, err)
		}
	}
	if resp, err := x.forward(ctx, &runtime.Request{Method: "GET", Path: "/biglength"}, 100); err != nil || len(resp.Body) != 100 {
		t.Errorf("at the cap: %v", err)
	}
}

// TestProxyClosedConnections: a kept-alive connection the process closed
// is retried on a new one for an idempotent request, not for a POST; a
// request whose context ends is interrupted.
func TestProxyClosedConnections(t *testing.T) {
	t.Parallel()
	x, _, closeServerIdle := proxyToServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
			return
		}
		w.Write([]byte("ok"))
	})
	ctx := context.Background()
	closeIdle := func() {
		x.mu.Lock()
		n := len(x.idle)
		x.mu.Unlock()
		if n != 1 {
			t.Fatalf("%d idle connections, want 1", n)
		}
		// The process closes its side: whatever the proxy sends next on
		// it gets no answer. (Shutting the proxy's own read side is not
		// the same: the answer may still arrive and be read.)
		deadline := time.Now().Add(10 * time.Second)
		for closeServerIdle() != 1 {
			if time.Now().After(deadline) {
				t.Fatal("the server's connection did not become idle")
			}
			time.Sleep(time.Millisecond)
		}
	}
	if _, err := x.forward(ctx, &runtime.Request{Method: "GET", Path: "/"}, 1<<20); err != nil {
		t.Fatal(err)
	}
	closeIdle()
	if resp, err := x.forward(ctx, &runtime.Request{Method: "GET", Path: "/"}, 1<<20); err != nil || string(resp.Body) != "ok" {
		t.Fatalf("GET on a closed kept-alive connection: %v, want it sent again", err)
	}
	closeIdle()
	if _, err := x.forward(ctx, &runtime.Request{Method: "POST", Path: "/", Body: []byte("once")}, 1<<20); !errors.Is(err, errNoAnswer) {
		t.Fatalf("POST on a closed kept-alive connection: %v, want errNoAnswer (not sent twice)", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := x.forward(cctx, &runtime.Request{Method: "GET", Path: "/slow"}, 1<<20); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a request past its context: %v", err)
	}
}

// TestProxyServerClosedIdle: a process that closes kept-alive connections
// after a short idle time (Node's http server does after 5 s, Gunicorn
// after 2 s) does not fail the next request, a POST included (which is
// never sent twice): an idle connection is checked before it is reused.
func TestProxyServerClosedIdle(t *testing.T) {
	t.Parallel()
	x, conns, _ := proxyToServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	}, func(s *http.Server) { s.IdleTimeout = 50 * time.Millisecond })
	ctx := context.Background()
	for i := range 3 {
		resp, err := x.forward(ctx, &runtime.Request{Method: "POST", Path: "/", Body: []byte("once")}, 1<<20)
		if err != nil || string(resp.Body) != "once" {
			t.Fatalf("POST %d: %v", i, err)
		}
		time.Sleep(4 * idleCheck) // the server closes the connection meanwhile
	}
	if n := conns.Load(); n != 3 {
		t.Fatalf("%d connections, want one per request", n)
	}
}
