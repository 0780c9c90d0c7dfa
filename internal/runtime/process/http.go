package process

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/nimbus-dev/nimbus/internal/runtime"
)

// httpContract is HTTP on $PORT: the process listens on PORT and Nimbus
// proxies each request to it.
type httpContract struct {
	// readiness is the path polled until it answers below 500; "" waits
	// for the port to accept a connection.
	readiness string
}

func (httpContract) name() runtime.Contract { return runtime.ContractHTTP }

func (c httpContract) attach(p *proc) (session, error) {
	tr := &http.Transport{
		DialContext:           func(ctx context.Context, network, _ string) (net.Conn, error) { return p.dial(ctx, network, p.addr) },
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		DisableCompression:    true, // bodies pass through as the process wrote them
		ResponseHeaderTimeout: 0,    // the request's deadline bounds it
		ForceAttemptHTTP2:     false,
	}
	return &httpSession{c: c, p: p, tr: tr, proxy: &proxy{p: p}, client: &http.Client{Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}, nil
}

type httpSession struct {
	c      httpContract
	p      *proc
	tr     *http.Transport // the readiness path's probes
	client *http.Client
	proxy  *proxy // requests
}

func (s *httpSession) env() []string { return []string{"PORT=" + strconv.Itoa(s.p.port)} }

// ready polls until the port accepts (or the readiness path answers below
// 500), every 100µs for the first 50ms and then every 1ms: the poll that
// succeeds ends the cold start, so its interval is the most a cold start
// waits for nothing. A sandboxed process is polled with one socket made
// in its network namespace (a refused connect on the loopback costs tens
// of microseconds and the socket connects again); the connection that
// succeeds carries the first request. An unisolated process is dialed.
func (s *httpSession) ready(ctx context.Context) error {
	start := time.Now()
	delay := 100 * time.Microsecond
	for {
		err := s.probe(ctx)
		if err == nil {
			return nil
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (last attempt: %w)", context.Cause(ctx), err)
		case <-t.C:
		}
		if time.Since(start) > 50*time.Millisecond {
			delay = time.Millisecond
		}
	}
}

func (s *httpSession) probe(ctx context.Context) error {
	if s.p.sb != nil {
		if err := s.p.sb.probeConnect(s.p.port); err != nil {
			return err
		}
	}
	if s.c.readiness == "" {
		if s.p.sb != nil {
			return nil
		}
		c, err := s.p.dial(ctx, "tcp", s.p.addr)
		if err != nil {
			return err
		}
		c.Close()
		return s.ownListener()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.p.addr+s.c.readiness, nil)
	if err != nil {
		return err
	}
	if s.p.sb == nil {
		// Before the readiness path: its answer must come from the process.
		if err := s.ownListener(); err != nil {
			return err
		}
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode >= 500 {
		return fmt.Errorf("readiness path %s answered %d", s.c.readiness, resp.StatusCode)
	}
	return nil
}

// ownListener fails unless the loopback listener on an unisolated
// process's port belongs to the process (or a process it started): another
// program that took the port first would otherwise get its requests.
func (s *httpSession) ownListener() error {
	owned, err := listenerOwnedBy(s.p.port, s.p.cmd.Process.Pid)
	if err != nil || owned {
		return nil // nothing to check with (no /proc): trust the dial
	}
	return fmt.Errorf("port %d: no listener of the function's own yet (if this lasts, another program holds the port)", s.p.port)
}

// handle forwards one request over a kept-alive connection to the
// process (proxy.go).
func (s *httpSession) handle(ctx context.Context, req *runtime.Request, maxResponse int64) (*runtime.Response, error) {
	return s.proxy.forward(ctx, req, maxResponse)
}

func (s *httpSession) close() {
	s.tr.CloseIdleConnections()
	s.proxy.close()
}
