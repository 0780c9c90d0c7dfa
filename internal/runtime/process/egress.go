package process

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nimbus-dev/nimbus/internal/capability"
)

// EgressProxyAddr is where a sandboxed process whose function is granted
// http: egress reaches its egress proxy: the loopback of its own network
// namespace, which has no other way out. The process gets it as
// HTTP_PROXY and HTTPS_PROXY (and their lower-case forms), with NO_PROXY
// covering the loopback (the platform API, the Lambda Runtime API).
const EgressProxyAddr = "127.0.0.1:9003"

// egressProxy is the egress of one sandboxed process: an HTTP forward
// proxy in its network namespace that lets through only what its
// function's http grants allow, every connection through the network
// guard of nimbus.Fetch (the SSRF guard: no internal address unless the
// operator allows its range, never the node's own listeners).
//
//   - CONNECT host:port (HTTPS, or any TLS): allowed when a grant lets
//     every method reach https://host:port (a tunnel hides the method, so
//     a grant that names methods does not open one); the address is
//     resolved and checked by the guard and the bytes are relayed.
//   - An absolute http:// request: made by the fetch service itself, as
//     nimbus.Fetch makes it (grants checked on the request and on every
//     redirect, which it follows; the body limits; the per-invocation
//     request count; the audit of denials).
type egressProxy struct {
	inst *instance
	ln   net.Listener
	srv  *http.Server
	max  int // tunnels open at once; past it CONNECT answers 503

	mu      sync.Mutex
	tunnels map[net.Conn]struct{}
	open    int // tunnels reserved
	closed  bool
}

// newEgress makes p's egress proxy when its function has an http grant;
// its listener opens in p's network namespace at the claim.
func newEgress(p *proc) *egressProxy {
	if p.sb == nil || !p.inst.m.egress {
		return nil
	}
	e := &egressProxy{inst: p.inst, tunnels: map[net.Conn]struct{}{}, max: maxTunnels}
	e.srv = &http.Server{Handler: e, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: maxServiceHead}
	p.sb.inNetns = append(p.sb.inNetns, func() error {
		ln, err := net.Listen("tcp", EgressProxyAddr)
		if err != nil {
			return fmt.Errorf("egress proxy: %w", err)
		}
		e.ln = ln
		return nil
	})
	return e
}

// maxTunnels bounds the CONNECT tunnels one process holds open at once:
// each holds a connection of the node's.
const maxTunnels = 64

// egressEnv is what a process with an egress proxy finds in its
// environment.
func egressEnv() []string {
	u := "http://" + EgressProxyAddr
	return []string{"HTTP_PROXY=" + u, "HTTPS_PROXY=" + u, "http_proxy=" + u, "https_proxy=" + u,
		"NO_PROXY=localhost,127.0.0.1,::1", "no_proxy=localhost,127.0.0.1,::1"}
}

func (e *egressProxy) serve() {
	if e != nil && e.ln != nil {
		go func() { _ = e.srv.Serve(e.ln) }()
	}
}

func (e *egressProxy) close() {
	if e == nil {
		return
	}
	_ = e.srv.Close()
	if e.ln != nil {
		_ = e.ln.Close()
	}
	e.mu.Lock()
	e.closed = true
	for c := range e.tunnels {
		c.Close()
	}
	e.mu.Unlock()
}

func (e *egressProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	call := e.inst.egressCaller()
	if r.Method == http.MethodConnect {
		e.tunnel(w, r, call)
		return
	}
	if !r.URL.IsAbs() {
		http.Error(w, "this is the egress proxy of a Nimbus process: use it as HTTP_PROXY/HTTPS_PROXY (absolute http:// URLs, or CONNECT for https)", http.StatusBadRequest)
		return
	}
	e.forward(w, r, call)
}

// tunnel serves CONNECT.
func (e *egressProxy) tunnel(w http.ResponseWriter, r *http.Request, call *capability.Caller) {
	m := e.inst.m
	host, port, err := net.SplitHostPort(r.Host)
	if err != nil || strings.ContainsAny(host, "*/@ ") {
		http.Error(w, "CONNECT needs host:port", http.StatusBadRequest)
		return
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	g, err := capability.Parse("http:https://" + host + ":" + port)
	if err != nil {
		http.Error(w, "CONNECT "+r.Host+": "+err.Error(), http.StatusBadRequest)
		return
	}
	for _, method := range []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"} {
		need := g
		need.Methods = method
		if !m.grants.Allows(need) {
			m.rt.logger.Warn("process egress denied", "app", m.app, "function", m.function, "invocation", call.InvocationID, "host", r.Host)
			http.Error(w, fmt.Sprintf("nimbus egress: %s is not granted to %s/%s: add the capability http:https://%s to the function (a grant naming methods does not open a tunnel)",
				r.Host, m.app, m.function, r.Host), http.StatusForbidden)
			return
		}
	}
	if !e.reserve() {
		http.Error(w, fmt.Sprintf("nimbus egress: over %d tunnels open at once", e.max), http.StatusServiceUnavailable)
		return
	}
	defer e.unreserve()
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	up, err := m.rt.services.Fetch.Guard().DialContext(ctx, "tcp", r.Host)
	if err != nil {
		var be *capability.BlockedError
		if errors.As(err, &be) {
			m.rt.logger.Warn("process egress blocked by the network guard", "app", m.app, "function", m.function,
				"invocation", call.InvocationID, "host", be.Host, "addr", be.Addr.String(), "reason", be.Reason)
			http.Error(w, "nimbus egress: "+be.Error(), http.StatusForbidden)
			return
		}
		http.Error(w, "nimbus egress: "+err.Error(), http.StatusBadGateway)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		up.Close()
		http.Error(w, "nimbus egress: cannot tunnel", http.StatusInternalServerError)
		return
	}
	down, buf, err := hj.Hijack()
	if err != nil {
		up.Close()
		return
	}
	if !e.track(down, up) {
		return
	}
	defer e.untrack(down, up)
	if _, err := down.Write([]byte("HTTP/1.1 200 Connection Established\r\n\r\n")); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() {
		if n := buf.Reader.Buffered(); n > 0 {
			b, _ := buf.Reader.Peek(n)
			_, _ = up.Write(b)
		}
		_, _ = io.Copy(up, down)
		if c, ok := up.(*net.TCPConn); ok {
			_ = c.CloseWrite()
		}
		done <- struct{}{}
	}()
	go func() {
		_, _ = io.Copy(down, up)
		if c, ok := down.(*net.TCPConn); ok {
			_ = c.CloseWrite()
		}
		done <- struct{}{}
	}()
	<-done
	<-done
}

// reserve counts one tunnel against the cap.
func (e *egressProxy) reserve() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.open >= e.max {
		return false
	}
	e.open++
	return true
}

func (e *egressProxy) unreserve() {
	e.mu.Lock()
	e.open--
	e.mu.Unlock()
}

func (e *egressProxy) track(cs ...net.Conn) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		e.tunnels[c] = struct{}{}
	}
	return true
}

func (e *egressProxy) untrack(cs ...net.Conn) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, c := range cs {
		c.Close()
		delete(e.tunnels, c)
	}
}

// forward serves an absolute http:// request through the fetch service.
func (e *egressProxy) forward(w http.ResponseWriter, r *http.Request, call *capability.Caller) {
	svc := e.inst.m.rt.services.Fetch
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 10<<20))
	if err != nil {
		http.Error(w, "nimbus egress: reading the request body: "+err.Error(), http.StatusRequestEntityTooLarge)
		return
	}
	h := r.Header.Clone()
	for _, k := range append(hopHeaders, "Proxy-Authorization") {
		h.Del(k)
	}
	if len(body) == 0 {
		body = nil
	}
	resp, err := svc.Fetch(r.Context(), call, capability.FetchRequest{Method: r.Method, URL: r.URL.String(), Header: h, Body: body})
	if err != nil {
		status := http.StatusBadGateway
		switch {
		case errors.Is(err, capability.ErrDenied), errors.Is(err, capability.ErrBlocked):
			status = http.StatusForbidden
		case errors.Is(err, capability.ErrBadArgument):
			status = http.StatusBadRequest
		case errors.Is(err, capability.ErrTooLarge):
			status = http.StatusBadGateway
		case errors.Is(err, capability.ErrTimeout):
			status = http.StatusGatewayTimeout
		}
		http.Error(w, "nimbus egress: "+err.Error(), status)
		return
	}
	for k, vs := range resp.Header {
		if k == "Content-Length" || k == "Transfer-Encoding" || k == "Connection" {
			continue
		}
		w.Header()[k] = vs
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(resp.Body)))
	w.WriteHeader(resp.Status)
	_, _ = w.Write(resp.Body)
}
