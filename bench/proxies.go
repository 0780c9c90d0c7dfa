package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proxyBaselines measures, with wrk at 32 connections, HTTP proxies with
// no platform around them (no sandbox, routing, limits, logs or traces)
// in front of the same binary the gateway reaches, each against that
// binary called directly, interleaved in the same runs:
//
//   - net/http/httputil's ReverseProxy (its Transport hands each request
//     to a write loop and a read loop goroutine);
//   - the least a Go proxy does (minimalProxy): net/http's server, and the
//     request forwarded on a kept-alive connection in the handler's own
//     goroutine, as the process runtime does;
//   - a lean Go proxy (leanProxy): a goroutine per connection as
//     net/http's server has, but no net/http: each message read as bytes
//     (head lines and a Content-Length body) and written on with one
//     write, which tells what net/http's server and parsing cost apart
//     from Go's scheduler;
//   - nginx and HAProxy, one worker each, with kept-alive upstream
//     connections, when installed (apt-get install -y nginx-light haproxy;
//     the bench installs neither).
//
// They tell what the gateway's ratio is made of on this host: what any Go
// proxy costs, and what an event-loop proxy in C costs.
func proxyBaselines(ctx context.Context, b *bench, rawURL string) ([]row, error) {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		return nil, nil
	}
	target, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	type proxy struct {
		label string
		url   string
	}
	var proxies []proxy

	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target.Host})
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 64}
	rps, err := startRawServer(rp)
	if err != nil {
		return nil, err
	}
	defer rps.close()
	proxies = append(proxies, proxy{"Go reverse proxy (httputil)", rps.url})

	mp := &minimalProxy{addr: target.Host}
	defer mp.close()
	mps, err := startRawServer(mp)
	if err != nil {
		return nil, err
	}
	defer mps.close()
	proxies = append(proxies, proxy{"minimal Go proxy (net/http server, pooled connections, no platform)", mps.url})

	lp, err := startLeanProxy(target.Host)
	if err != nil {
		return nil, err
	}
	defer lp.close()
	proxies = append(proxies, proxy{"lean Go proxy (goroutine per connection, no net/http)", lp.url})

	for _, d := range []struct {
		label string
		start func(context.Context, string, string) (string, func(), error)
	}{
		{"nginx 1 worker, kept-alive upstream", startNginx},
		{"HAProxy 1 thread, reused server connections", startHAProxy},
	} {
		u, stop, err := d.start(ctx, b.tmp, target.Host)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", d.label, err)
		}
		if stop == nil {
			progress("   " + d.label + ": not installed, not measured")
			continue
		}
		defer stop()
		proxies = append(proxies, proxy{d.label, u})
	}

	urls := []string{rawURL}
	for _, p := range proxies {
		urls = append(urls, p.url+target.Path)
	}
	if err := waitOK(ctx, urls[1:]...); err != nil { // each proxy answers before it is measured
		return nil, err
	}
	res, err := wrkSweep(ctx, b, wrk, urls, 32)
	if err != nil {
		return nil, err
	}
	var rows []row
	for i, p := range proxies {
		rows = append(rows, newRow("process", p.label+": wrk req/s, 32 conns (for contrast)", "req/s", res[i+1], "same binary direct", res[0]))
	}
	return rows, nil
}

// wrkSweep runs wrk against each of urls in turn, b.opts.runs times, the
// order rotated each run, and returns each url's req/s of every run.
func wrkSweep(ctx context.Context, b *bench, wrk string, urls []string, conns int) ([][]float64, error) {
	secs := max(1, int(b.opts.duration.Round(time.Second)/time.Second))
	out := make([][]float64, len(urls))
	for i := range b.opts.runs {
		for j := range urls {
			k := (i + j) % len(urls)
			r, _, _, err := wrkOnce(ctx, wrk, secs, urls[k], conns)
			if err != nil {
				return nil, err
			}
			out[k] = append(out[k], r)
		}
	}
	return out, nil
}

// minimalProxy forwards each request on a kept-alive connection to addr,
// written and read in the handler's goroutine: the process runtime's
// proxy without its limits, logs and interruption.
type minimalProxy struct {
	addr string
	mu   sync.Mutex
	idle []*minimalConn
}

type minimalConn struct {
	c  net.Conn
	br *bufio.Reader
	bw *bufio.Writer
}

func (p *minimalProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	var mc *minimalConn
	if n := len(p.idle); n > 0 {
		mc, p.idle = p.idle[n-1], p.idle[:n-1]
	}
	p.mu.Unlock()
	if mc == nil {
		c, err := net.Dial("tcp", p.addr)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		mc = &minimalConn{c: c, br: bufio.NewReader(c), bw: bufio.NewWriter(c)}
	}
	out := r.Clone(r.Context())
	out.RequestURI, out.URL.Scheme, out.URL.Host = "", "http", p.addr
	err := out.Write(mc.bw)
	if err == nil {
		err = mc.bw.Flush()
	}
	var resp *http.Response
	if err == nil {
		resp, err = http.ReadResponse(mc.br, out)
	}
	if err != nil {
		mc.c.Close()
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	_, err = io.Copy(w, resp.Body)
	resp.Body.Close()
	if err != nil || resp.Close {
		mc.c.Close()
		return
	}
	p.mu.Lock()
	p.idle = append(p.idle, mc)
	p.mu.Unlock()
}

func (p *minimalProxy) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, mc := range p.idle {
		mc.c.Close()
	}
	p.idle = nil
}

// leanProxy forwards HTTP/1.1 requests with a Content-Length body (or
// none) to addr, answers framed the same way, on kept-alive connections,
// a goroutine per client connection; anything else closes the
// connection. A measuring device for this bench, not a proxy to deploy.
type leanProxy struct {
	url  string
	addr string
	ln   net.Listener

	mu    sync.Mutex
	idle  []*leanConn
	conns map[net.Conn]bool
}

type leanConn struct {
	c  net.Conn
	br *bufio.Reader
}

func startLeanProxy(addr string) (*leanProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &leanProxy{url: "http://" + ln.Addr().String(), addr: addr, ln: ln, conns: map[net.Conn]bool{}}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.conns[c] = true
			p.mu.Unlock()
			go p.serve(c)
		}
	}()
	return p, nil
}

// readMessage reads one message (head, then as many body bytes as its
// Content-Length says) into dst; chunked bodies are not handled.
func readMessage(br *bufio.Reader, dst []byte) ([]byte, error) {
	dst = dst[:0]
	length := 0
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return nil, err
		}
		dst = append(dst, line...)
		if len(line) <= 2 {
			break
		}
		if k, v, ok := strings.Cut(string(line), ":"); ok {
			switch {
			case strings.EqualFold(k, "Content-Length"):
				if length, err = strconv.Atoi(strings.TrimSpace(v)); err != nil || length < 0 {
					return nil, fmt.Errorf("bad Content-Length %q", v)
				}
			case strings.EqualFold(k, "Transfer-Encoding"):
				return nil, fmt.Errorf("Transfer-Encoding not handled")
			}
		}
	}
	n := len(dst)
	dst = append(dst, make([]byte, length)...)
	if _, err := io.ReadFull(br, dst[n:]); err != nil {
		return nil, err
	}
	return dst, nil
}

func (p *leanProxy) serve(c net.Conn) {
	defer func() {
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
		c.Close()
	}()
	br := bufio.NewReader(c)
	var req, resp []byte
	for {
		var err error
		if req, err = readMessage(br, req); err != nil {
			return
		}
		p.mu.Lock()
		var up *leanConn
		if n := len(p.idle); n > 0 {
			up, p.idle = p.idle[n-1], p.idle[:n-1]
		}
		p.mu.Unlock()
		if up == nil {
			uc, err := net.Dial("tcp", p.addr)
			if err != nil {
				return
			}
			up = &leanConn{c: uc, br: bufio.NewReader(uc)}
		}
		if _, err = up.c.Write(req); err == nil {
			resp, err = readMessage(up.br, resp)
		}
		if err != nil {
			up.c.Close()
			return
		}
		p.mu.Lock()
		p.idle = append(p.idle, up)
		p.mu.Unlock()
		if _, err := c.Write(resp); err != nil {
			return
		}
	}
}

func (p *leanProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
	for _, up := range p.idle {
		up.c.Close()
	}
	p.idle = nil
}

// startNginx starts nginx (one worker, upstream connections kept alive)
// in front of addr; a nil stop means nginx is not installed.
func startNginx(ctx context.Context, tmp, addr string) (u string, stop func(), err error) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		return "", nil, nil
	}
	port, err := freePort()
	if err != nil {
		return "", nil, err
	}
	dir := filepath.Join(tmp, "nginx")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", nil, err
	}
	conf := fmt.Sprintf(`worker_processes 1;
daemon off;
error_log %[1]s/error.log;
pid %[1]s/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[1]s;
  proxy_temp_path %[1]s;
  upstream process { server %[2]s; keepalive 64; }
  server {
    listen 127.0.0.1:%[3]d;
    location / { proxy_pass http://process; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
`, dir, addr, port)
	path := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return "", nil, err
	}
	return startDaemon(ctx, port, bin, "-c", path, "-p", dir)
}

// startHAProxy starts HAProxy (one thread, server connections reused) in
// front of addr; a nil stop means it is not installed.
func startHAProxy(ctx context.Context, tmp, addr string) (u string, stop func(), err error) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		return "", nil, nil
	}
	port, err := freePort()
	if err != nil {
		return "", nil, err
	}
	conf := fmt.Sprintf(`global
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
listen process
  bind 127.0.0.1:%d
  http-reuse always
  server process %s
`, port, addr)
	path := filepath.Join(tmp, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return "", nil, err
	}
	return startDaemon(ctx, port, bin, "-db", "-f", path)
}

// startDaemon runs bin in the foreground, serving on port, until stop.
func startDaemon(ctx context.Context, port int, bin string, args ...string) (string, func(), error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop := func() {
		// TERM: nginx's master stops its workers (a KILL would orphan them).
		cmd.Process.Signal(syscall.SIGTERM)
		t := time.AfterFunc(5*time.Second, func() { cmd.Process.Kill() })
		cmd.Wait()
		t.Stop()
	}
	return "http://127.0.0.1:" + strconv.Itoa(port), stop, nil
}
