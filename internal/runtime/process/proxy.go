package process

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime"
)

// proxy forwards requests to an HTTP process over HTTP/1.1 connections it
// keeps alive, one request at a time on each, in the caller's goroutine:
// the request is written with one write and the answer read with
// http.ReadResponse. net/http's Transport does the same with two
// goroutines per connection (a read loop and a write loop) and a channel
// hand-off each way per request; on the warm path those hand-offs cost as
// much as the proxying itself.
type proxy struct {
	p *proc

	mu     sync.Mutex
	idle   []*pconn
	closed bool
}

// maxIdleConns bounds the connections a proxy keeps to one process.
const maxIdleConns = 64

type pconn struct {
	c    net.Conn
	lim  headLimit // under br
	br   *bufio.Reader
	bw   *bufio.Writer
	idle time.Time // when it was put back
}

// idleCheck is how long a connection may sit idle before it is checked
// at its next use: servers close kept-alive connections that stay idle
// (Node after 5 s, Gunicorn after 2 s), and a request written on one
// that just closed gets no answer, which fails a POST (never sent twice).
// Connections reused sooner, as under load, are not checked.
const idleCheck = 250 * time.Millisecond

// closed reports whether the process closed its side of pc (or sent
// something unasked), with a read that does not wait; a connection that
// cannot be asked is taken as open.
func (pc *pconn) closed() bool {
	if pc.br.Buffered() > 0 {
		return true
	}
	sc, ok := pc.c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	open := true
	var b [1]byte
	_ = rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		open = n < 0 && errors.Is(err, syscall.EAGAIN)
		return true // never wait
	})
	return !open
}

func newPconn(c net.Conn) *pconn {
	pc := &pconn{c: c, lim: headLimit{c: c, n: -1}, bw: bufio.NewWriterSize(c, 4096)}
	pc.br = bufio.NewReaderSize(&pc.lim, 4096)
	return pc
}

// maxResponseHead bounds the head of a process's answer (status line and
// headers, with those of any 1xx answers before it), as net/http's server
// bounds a request's (DefaultMaxHeaderBytes): http.ReadResponse has no
// bound of its own, and a process that wrote a head without end would grow
// the node's memory until the request's timeout.
const maxResponseHead = 1 << 20

// errHeadTooLarge is an answer whose head is over maxResponseHead.
var errHeadTooLarge = errors.New("response head over " + model.FormatBytes(maxResponseHead) +
	" (status line and headers; a fixed limit): the process broke the HTTP contract, its connection was dropped")

// headLimit reads from c, and while n >= 0 (an answer's head is being
// read) at most n more bytes, then fails with errHeadTooLarge.
type headLimit struct {
	c net.Conn
	n int64
}

func (l *headLimit) Read(p []byte) (int, error) {
	if l.n < 0 {
		return l.c.Read(p)
	}
	if l.n == 0 {
		return 0, errHeadTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.c.Read(p)
	l.n -= int64(n)
	return n, err
}

// hopHeaders are connection-level headers a proxy does not forward
// (RFC 9110, section 7.6.1).
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// skipRequest are the request headers not copied: hop-by-hop ones, and
// those the proxy writes itself.
var skipRequest = func() map[string]bool {
	m := map[string]bool{"Host": true, "Content-Length": true, "Expect": true,
		HeaderInvocation: true, "Traceparent": true, HeaderRoute: true, "X-Forwarded-For": true}
	for _, h := range hopHeaders {
		m[h] = true
	}
	return m
}()

// Headers Nimbus adds to every proxied request.
const (
	HeaderInvocation = "X-Nimbus-Invocation-Id"
	HeaderRoute      = "X-Nimbus-Route"
)

// errNoAnswer is a kept-alive connection that the process closed before
// answering anything: the request may be sent again on a new one.
var errNoAnswer = errors.New("the connection closed before any answer")

func (x *proxy) forward(ctx context.Context, req *runtime.Request, maxResponse int64) (*runtime.Response, error) {
	method := req.Method
	if method == "" {
		method = http.MethodPost
	}
	for attempt := 0; ; attempt++ {
		pc, reused, err := x.get(ctx)
		if err != nil {
			return nil, err
		}
		resp, keep, err := x.roundTrip(ctx, pc, method, req, maxResponse)
		if keep {
			x.put(pc)
		} else {
			pc.c.Close()
		}
		// A kept-alive connection the process closed meanwhile: send again
		// what can be sent again (as net/http does: idempotent methods).
		if errors.Is(err, errNoAnswer) && reused && attempt == 0 && idempotent(method) && ctx.Err() == nil {
			continue
		}
		return resp, err
	}
}

func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// get returns an idle connection, or dials a new one.
func (x *proxy) get(ctx context.Context) (*pconn, bool, error) {
	for {
		x.mu.Lock()
		n := len(x.idle)
		if n == 0 {
			x.mu.Unlock()
			break
		}
		pc := x.idle[n-1]
		x.idle = x.idle[:n-1]
		x.mu.Unlock()
		if time.Since(pc.idle) > idleCheck && pc.closed() {
			pc.c.Close()
			continue
		}
		return pc, true, nil
	}
	c, err := x.p.dial(ctx, "tcp", x.p.addr)
	if err != nil {
		return nil, false, err
	}
	return newPconn(c), false, nil
}

func (x *proxy) put(pc *pconn) {
	pc.idle = time.Now()
	x.mu.Lock()
	if !x.closed && len(x.idle) < maxIdleConns {
		x.idle = append(x.idle, pc)
		pc = nil
	}
	x.mu.Unlock()
	if pc != nil {
		pc.c.Close()
	}
}

func (x *proxy) close() {
	x.mu.Lock()
	idle := x.idle
	x.idle, x.closed = nil, true
	x.mu.Unlock()
	for _, pc := range idle {
		pc.c.Close()
	}
}

// roundTrip sends req on pc and reads the answer; keep says pc may carry
// another request. The context's end interrupts it (the connection is then
// dropped).
func (x *proxy) roundTrip(ctx context.Context, pc *pconn, method string, req *runtime.Request, maxResponse int64) (_ *runtime.Response, keep bool, err error) {
	stop := context.AfterFunc(ctx, func() { _ = pc.c.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		if !stop() {
			keep = false
			if err != nil {
				err = fmt.Errorf("%w (%w)", context.Cause(ctx), err)
			}
		}
	}()
	writeHead(pc.bw, method, x.p.addr, req)
	if len(req.Body) > 0 {
		_, _ = pc.bw.Write(req.Body)
	}
	if err := pc.bw.Flush(); err != nil {
		return nil, false, err
	}
	pc.lim.n = maxResponseHead
	if _, err := pc.br.Peek(1); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
			err = fmt.Errorf("%w: %w", errNoAnswer, err)
		}
		return nil, false, err
	}
	hreq := &http.Request{Method: method} // ReadResponse: a HEAD answer has no body
	var resp *http.Response
	for {
		resp, err = http.ReadResponse(pc.br, hreq)
		if err != nil {
			return nil, false, err
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		resp.Body.Close() // 1xx: informational, the answer follows
	}
	pc.lim.n = -1 // the body is bounded by maxResponse
	defer resp.Body.Close()
	tooLarge := &runtime.LimitError{Err: runtime.ErrResponseTooLarge, Limit: model.FormatBytes(uint64(maxResponse))}
	if resp.ContentLength > maxResponse {
		return nil, false, tooLarge
	}
	size := maxResponse + 1
	if resp.ContentLength >= 0 {
		size = resp.ContentLength + 1 // + 1: the read that sees the end
	}
	body, err := readAll(resp.Body, size, maxResponse)
	if err != nil {
		return nil, false, err
	}
	if int64(len(body)) > maxResponse {
		return nil, false, tooLarge
	}
	h := resp.Header
	for _, k := range hopHeaders {
		h.Del(k)
	}
	h.Del("Content-Length")
	// The body was read to its end; a body that ends with the connection
	// (no length, not chunked) leaves it closed.
	keep = !resp.Close && (resp.ContentLength >= 0 || len(resp.TransferEncoding) > 0)
	return &runtime.Response{Status: resp.StatusCode, Header: h, Body: body}, keep, nil
}

// readAll reads r to its end, or to one byte over max, into a buffer of
// size bytes to start with.
func readAll(r io.Reader, size, max int64) ([]byte, error) {
	b := make([]byte, 0, min(size, 64<<10))
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if int64(len(b)) > max {
			return b, nil
		}
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

// writeHead writes the request line and headers: the client's headers but
// hop-by-hop ones (and any value that could split a header), then the
// platform's (invocation id, trace context, route, forwarded-for) and the
// body's length.
func writeHead(w *bufio.Writer, method, addr string, req *runtime.Request) {
	w.WriteString(method)
	w.WriteByte(' ')
	path := req.Path
	if path == "" || path[0] != '/' {
		path = "/" + path
	}
	w.WriteString(escapePath(path))
	if req.RawQuery != "" && safe(req.RawQuery) && !strings.Contains(req.RawQuery, " ") {
		w.WriteByte('?')
		w.WriteString(req.RawQuery)
	}
	w.WriteString(" HTTP/1.1\r\nHost: ")
	host := req.Host
	if host == "" || !safe(host) {
		host = addr
	}
	w.WriteString(host)
	w.WriteString("\r\n")
	for k, vs := range req.Header {
		if skipRequest[k] || !safe(k) {
			continue
		}
		for _, v := range vs {
			if safe(v) {
				header(w, k, v)
			}
		}
	}
	header(w, HeaderInvocation, req.InvocationID)
	if req.TraceParent != "" && safe(req.TraceParent) {
		header(w, "Traceparent", req.TraceParent)
	}
	if req.Route != "" && safe(req.Route) {
		header(w, HeaderRoute, req.Route)
	}
	xff := req.Header.Values("X-Forwarded-For")
	if req.RemoteAddr != "" {
		if host, _, err := net.SplitHostPort(req.RemoteAddr); err == nil {
			xff = append(xff, host)
		}
	}
	if len(xff) > 0 {
		if v := strings.Join(xff, ", "); safe(v) {
			header(w, "X-Forwarded-For", v)
		}
	}
	if len(req.Body) > 0 || (method != http.MethodGet && method != http.MethodHead) {
		header(w, "Content-Length", strconv.Itoa(len(req.Body)))
	}
	w.WriteString("\r\n")
}

func header(w *bufio.Writer, k, v string) {
	w.WriteString(k)
	w.WriteString(": ")
	w.WriteString(v)
	w.WriteString("\r\n")
}

// escapePath is path as it goes on a request line: as is when nothing in
// it needs escaping (the common case, without allocating).
func escapePath(path string) string {
	for i := 0; i < len(path); i++ {
		if c := path[i]; c <= ' ' || c >= 0x7f || c == '%' || c == '?' || c == '#' {
			return (&url.URL{Path: path}).EscapedPath()
		}
	}
	return path
}

// safe reports whether s can be written in a request head as is.
func safe(s string) bool {
	return !strings.ContainsAny(s, "\r\n\x00")
}
