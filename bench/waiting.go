package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nimbus-dev/nimbus/internal/client"
	"github.com/nimbus-dev/nimbus/internal/deploy"
	"github.com/nimbus-dev/nimbus/internal/model"
)

// The waiting scenario: HTTP clients arrive faster than a function serves.
const (
	// waitingApp is a process function of one instance that answers in
	// 200ms: it serves 5 requests a second, one at a time.
	waitingManifest = `app: waiting
functions:
  slow:
    runtime: process
    command: [python3, app.py]
    max_instances: 1
    timeout: 30s
    routes:
      - GET /slow
`
	waitingProgram = `import os, time
from http.server import HTTPServer, BaseHTTPRequestHandler
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        time.sleep(0.2)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
`
	// waitingFast is how soon a refusal must come to count as "at once".
	waitingFast = time.Second
)

// runWaiting: opts.waitClients clients (a new connection each, all
// within about a second, a 1 KB header each) each send one GET to the
// waiting function and wait for its answer, against a `nimbus up`
// process with its default --max-waiting and, as the contrast, the same
// with --max-waiting -1 (every request waits up to its function's
// timeout, as before the bound). Each side is a fresh process; its RSS is
// read before and sampled every 100ms for the peak. It runs once.
func runWaiting(ctx context.Context, b *bench) ([]row, error) {
	if _, err := exec.LookPath("python3"); err != nil {
		progress("   python3 not installed; skipping the waiting scenario")
		return nil, nil
	}
	n := b.opts.waitClients
	if err := raiseFileLimit(uint64(2*n + 1024)); err != nil {
		return nil, err
	}
	bin, err := buildNimbus(ctx, b)
	if err != nil {
		return nil, err
	}
	app := filepath.Join(b.tmp, "waiting-app")
	if err := os.MkdirAll(app, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(app, "nimbus.yaml"), []byte(waitingManifest), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(app, "app.py"), []byte(waitingProgram), 0o644); err != nil {
		return nil, err
	}
	// One run of each side, whatever -runs: each takes the function's
	// timeout (30s) and more.
	bounded, err := waitingRun(ctx, b, bin, app)
	if err != nil {
		return nil, fmt.Errorf("default --max-waiting: %w", err)
	}
	unbounded, err := waitingRun(ctx, b, bin, app, "--max-waiting", "-1")
	if err != nil {
		return nil, fmt.Errorf("--max-waiting -1: %w", err)
	}
	desc := fmt.Sprintf("%d clients at once, function serving 5/s", n)
	base := "--max-waiting -1 (no bound)"
	return []row{
		newRow("waiting", "RSS before", "B", bounded.before, base, unbounded.before),
		newRow("waiting", "RSS peak, "+desc, "B", bounded.peak, base, unbounded.peak),
		newRow("waiting", "answered 200", "", bounded.ok, base, unbounded.ok),
		newRow("waiting", "refused at once (503 busy within 1s)", "", bounded.fast, base, unbounded.fast),
		newRow("waiting", "503 busy after waiting the 30s timeout", "", bounded.late, base, unbounded.late),
		newRow("waiting", "other answers or errors", "", bounded.other, base, unbounded.other),
	}, nil
}

// waitingResult is one run of one side, each figure a one-value series.
type waitingResult struct{ before, peak, ok, fast, late, other []float64 }

// waitingRun starts a node with flags, deploys the app in dir, and
// floods it.
func waitingRun(ctx context.Context, b *bench, bin, dir string, flags ...string) (waitingResult, error) {
	p, done, err := nodeWithApp(ctx, b, bin, dir, flags...)
	if err != nil {
		return waitingResult{}, err
	}
	defer done()
	if err := waitOK(ctx, p.gatewayURL+"/slow"); err != nil {
		return waitingResult{}, err
	}
	pid := p.cmd.Process.Pid
	before, err := settledRSS(ctx, pid)
	if err != nil {
		return waitingResult{}, err
	}
	u, err := url.Parse(p.gatewayURL)
	if err != nil {
		return waitingResult{}, err
	}
	var peak atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if r, err := rss(pid); err == nil && r > peak.Load() {
				peak.Store(r)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	var ok, fast, late, other atomic.Int64
	var wg sync.WaitGroup
	req := "GET /slow HTTP/1.1\r\nHost: " + u.Host + "\r\nX-Pad: " + strings.Repeat("p", 1000) + "\r\n\r\n"
	for i := range b.opts.waitClients {
		wg.Go(func() {
			start := time.Now()
			status, err := waitingCall(u.Host, req)
			switch {
			case err != nil:
				other.Add(1)
			case status == http.StatusOK:
				ok.Add(1)
			case status == http.StatusServiceUnavailable && time.Since(start) < waitingFast:
				fast.Add(1)
			case status == http.StatusServiceUnavailable:
				late.Add(1)
			default:
				other.Add(1)
			}
		})
		if i%100 == 99 {
			time.Sleep(10 * time.Millisecond)
		}
	}
	wg.Wait()
	close(stop)
	<-sampled
	progress("   %v: %d answered, %d refused at once, %d 503 after waiting, %d other; RSS %s -> peak %s", flags,
		ok.Load(), fast.Load(), late.Load(), other.Load(), model.FormatBytes(uint64(before)), model.FormatBytes(uint64(peak.Load())))
	one := func(v int64) []float64 { return []float64{float64(v)} }
	return waitingResult{before: one(before), peak: one(peak.Load()), ok: one(ok.Load()), fast: one(fast.Load()),
		late: one(late.Load()), other: one(other.Load())}, nil
}

// waitingCall sends req on a new connection to host and returns the
// answer's status.
func waitingCall(host, req string) (int, error) {
	c, err := net.DialTimeout("tcp", host, 10*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(90 * time.Second))
	if _, err := c.Write([]byte(req)); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// nodeWithApp starts a `nimbus up` process with flags on a data directory
// of its own and deploys the app in dir through its API; done stops it
// and removes the directory.
func nodeWithApp(ctx context.Context, b *bench, bin, dir string, flags ...string) (p *nimbusProcess, done func(), err error) {
	data, err := os.MkdirTemp(b.tmp, "node-")
	if err != nil {
		return nil, nil, err
	}
	p, err = startNimbus(ctx, bin, data, flags...)
	if err != nil {
		os.RemoveAll(data)
		return nil, nil, err
	}
	done = func() { p.stop(); os.RemoveAll(data) }
	if _, err := deploy.Run(ctx, deploy.API{C: client.New(p.apiURL, p.token)}, dir, nil); err != nil {
		done()
		return nil, nil, fmt.Errorf("deploy: %w", err)
	}
	return p, done, nil
}
