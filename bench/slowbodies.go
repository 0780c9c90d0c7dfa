package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nimbus-dev/nimbus/internal/client"
	"github.com/nimbus-dev/nimbus/internal/model"
)

// The slowbodies scenario: many clients each trickle a large body.
const (
	slowBodySize = 6 << 20 // the default max_request_body
	// slowAfter is how long after the clients stop the "after" RSS is
	// read.
	slowAfter = 10 * time.Second
	// rawBodiesEnv makes the bench binary the baseline's server (see
	// serveRawBodies) instead of the benchmark.
	rawBodiesEnv = "NIMBUS_BENCH_RAW_BODIES"
)

// runSlowBodies: opts.slowClients clients, each sending a 6 MiB body at
// opts.slowRate bytes per second for opts.slowDuration (a client whose
// request is answered, or refused, starts another after Retry-After or
// 100ms), against a `nimbus up` process and against a raw net/http server
// process that reads bodies as the gateway did before body budgets
// (io.ReadAll under MaxBytesReader, ReadHeaderTimeout 10s only). Each
// server is its own process so its RSS is its own: before, peak during,
// and 10s after. A probe sends a small body every 20ms throughout and
// its latency is the figure a user would notice.
func runSlowBodies(ctx context.Context, b *bench) ([]row, error) {
	n := b.opts.slowClients
	if err := raiseFileLimit(uint64(2*n + 1024)); err != nil {
		return nil, err
	}
	bin, err := buildNimbus(ctx, b)
	if err != nil {
		return nil, err
	}

	var nimbus, raw slowResult
	for i := range max(b.opts.slowRuns, 1) {
		// Alternate who goes first, as the other scenarios do.
		for j := range 2 {
			if (i+j)%2 == 0 {
				var r slowResult
				if r, err = slowNimbus(ctx, b, bin); err != nil {
					return nil, fmt.Errorf("nimbus: %w", err)
				}
				nimbus.add(r)
			} else {
				var r slowResult
				if r, err = slowRaw(ctx, b); err != nil {
					return nil, fmt.Errorf("raw: %w", err)
				}
				raw.add(r)
			}
		}
	}
	desc := fmt.Sprintf("%d clients x 6MiB at %s/s", n, model.FormatBytes(uint64(b.opts.slowRate)))
	return []row{
		newRow("slowbodies", "RSS before", "B", nimbus.before, "raw net/http", raw.before),
		newRow("slowbodies", "RSS peak, "+desc, "B", nimbus.peak, "raw net/http", raw.peak).
			goal("Nimbus peak < before + 2 x body budget (512MiB) + 64KiB per client", median(nimbus.peak) < median(nimbus.before)+float64(512<<20+n*64<<10)),
		newRow("slowbodies", fmt.Sprintf("RSS %s after the clients stop", slowAfter), "B", nimbus.after, "raw net/http", raw.after),
		newRow("slowbodies", "probe p50 (small POST every 20ms)", "ms", nimbus.p50, "raw net/http", raw.p50),
		newRow("slowbodies", "probe p99", "ms", nimbus.p99, "raw net/http", raw.p99).goal("p99 < 200 ms", median(nimbus.p99) < 200),
		newRow("slowbodies", "probes failed", "", nimbus.probeFailed, "raw net/http", raw.probeFailed),
		newRow("slowbodies", "slow bodies read whole (200/502)", "", nimbus.done, "raw net/http", raw.done),
		newRow("slowbodies", "slow bodies refused (503 body_budget)", "", nimbus.refused, "raw net/http", raw.refused),
		newRow("slowbodies", "slow bodies cut (408) or failed", "", nimbus.cut, "raw net/http", raw.cut),
	}, nil
}

// slowResult holds the runs of one side.
type slowResult struct {
	before, peak, after, p50, p99, probeFailed, done, refused, cut []float64
}

func (s *slowResult) add(r slowResult) {
	s.before = append(s.before, r.before...)
	s.peak = append(s.peak, r.peak...)
	s.after = append(s.after, r.after...)
	s.p50 = append(s.p50, r.p50...)
	s.p99 = append(s.p99, r.p99...)
	s.probeFailed = append(s.probeFailed, r.probeFailed...)
	s.done = append(s.done, r.done...)
	s.refused = append(s.refused, r.refused...)
	s.cut = append(s.cut, r.cut...)
}

// slowNimbus runs the load against a `nimbus up` process serving the
// minimal guest at POST /slow (max_request_body 6MiB).
func slowNimbus(ctx context.Context, b *bench, bin string) (slowResult, error) {
	dir, err := os.MkdirTemp(b.tmp, "slowbodies-")
	if err != nil {
		return slowResult{}, err
	}
	defer os.RemoveAll(dir)
	p, err := startNimbus(ctx, bin, dir)
	if err != nil {
		return slowResult{}, err
	}
	defer p.stop()
	c := client.New(p.apiURL, p.token)
	mod := minimalSDK(0)
	if err := c.PutArtifact(ctx, sha(mod), mod); err != nil {
		return slowResult{}, err
	}
	fn := model.Function{Name: "fn", Runtime: "wasm", Module: sha(mod), MaxRequestBytes: slowBodySize,
		Routes: []model.Route{{Method: "POST", Path: "/slow"}}}
	if _, err := c.Deploy(ctx, "slow", model.Spec{Functions: []model.Function{fn}}); err != nil {
		return slowResult{}, err
	}
	return slowLoad(ctx, b, p.cmd.Process.Pid, p.gatewayURL)
}

// slowRaw runs the load against the baseline: this binary re-executed as
// a raw net/http server (serveRawBodies).
func slowRaw(ctx context.Context, b *bench) (slowResult, error) {
	self, err := os.Executable()
	if err != nil {
		return slowResult{}, err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), rawBodiesEnv+"=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return slowResult{}, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return slowResult{}, err
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGINT)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		return slowResult{}, fmt.Errorf("raw server printed no address: %w", err)
	}
	return slowLoad(ctx, b, cmd.Process.Pid, strings.TrimSpace(line))
}

// serveRawBodies is the baseline server: POST /slow reads the whole body
// (at most 6MiB) as the gateway did before body budgets, and answers
// 200. It prints its URL and serves until interrupted.
func serveRawBodies() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /slow", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, slowBodySize+1))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "read %d bytes\n", len(body))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	fmt.Printf("http://%s\n", ln.Addr())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	go func() { <-ctx.Done(); srv.Close() }()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// slowLoad measures one server (process pid, base URL url): RSS settled
// before, the slow clients and the probe for opts.slowDuration, then RSS
// slowAfter after the clients stopped; the peak is sampled every 100ms
// from start to that last reading.
func slowLoad(ctx context.Context, b *bench, pid int, url string) (slowResult, error) {
	var res slowResult
	before, err := settledRSS(ctx, pid)
	if err != nil {
		return res, err
	}
	addr := strings.TrimPrefix(url, "http://")
	lctx, cancel := context.WithTimeout(ctx, b.opts.slowDuration)
	defer cancel()

	// The sampler runs until "after" is read: memory may still grow as
	// the server handles the clients going away.
	sctx, stopSampler := context.WithCancel(ctx)
	var peak atomic.Int64
	peak.Store(before)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-t.C:
				if v, err := rss(pid); err == nil && v > peak.Load() {
					peak.Store(v)
				}
			}
		}
	}()
	var wg sync.WaitGroup
	var done, refused, cut atomic.Int64
	chunk := make([]byte, max(b.opts.slowRate/10, 1)) // sent every 100ms
	for i := range chunk {
		chunk[i] = 'x'
	}
	for i := range b.opts.slowClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Spread the first connections over a second.
			select {
			case <-lctx.Done():
				return
			case <-time.After(time.Duration(i) * time.Second / time.Duration(b.opts.slowClients)):
			}
			for lctx.Err() == nil {
				status, retry := slowClient(lctx, addr, chunk)
				switch {
				case status == http.StatusOK || status == http.StatusBadGateway:
					done.Add(1)
				case status == http.StatusServiceUnavailable:
					refused.Add(1)
				case status != 0:
					cut.Add(1)
				}
				select {
				case <-lctx.Done():
				case <-time.After(retry):
				}
			}
		}()
	}
	lat, failed := probe(lctx, url+"/slow")
	wg.Wait()
	// Every client connection is closed once wg is done.
	select {
	case <-ctx.Done():
		stopSampler()
		<-sampled
		return res, ctx.Err()
	case <-time.After(slowAfter):
	}
	after, err := rss(pid)
	stopSampler()
	<-sampled
	if err != nil {
		return res, err
	}
	if len(lat) == 0 {
		return res, errors.New("no probe answered")
	}
	slices.Sort(lat)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	res = slowResult{
		before: []float64{float64(before)}, peak: []float64{float64(peak.Load())}, after: []float64{float64(after)},
		p50: []float64{ms(lat[len(lat)/2])}, p99: []float64{ms(lat[len(lat)*99/100])},
		probeFailed: []float64{float64(failed)},
		done:        []float64{float64(done.Load())}, refused: []float64{float64(refused.Load())}, cut: []float64{float64(cut.Load())},
	}
	if b.opts.verbose {
		progress("   %s: RSS %s -> peak %s -> %s; probe p50 %.1fms p99 %.1fms (%d failed); bodies done %d, refused %d, cut %d",
			url, fmtValue(float64(before), "B"), fmtValue(float64(peak.Load()), "B"), fmtValue(float64(after), "B"),
			res.p50[0], res.p99[0], failed, done.Load(), refused.Load(), cut.Load())
	}
	return res, nil
}

// slowClient sends one POST /slow of slowBodySize bytes, a chunk every
// 100ms, until the body is sent, the server answers or ctx ends. It
// returns the answer's status (0 for none) and how long to wait before
// the next request: Retry-After for a 503, else 100ms.
func slowClient(ctx context.Context, addr string, chunk []byte) (int, time.Duration) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, time.Second
	}
	defer conn.Close()
	answered := make(chan *http.Response, 1)
	go func() {
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			resp = nil
		}
		answered <- resp
	}()
	header := fmt.Sprintf("POST /slow HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", addr, slowBodySize)
	if _, err := io.WriteString(conn, header); err != nil {
		return 0, time.Second
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for sent := 0; ; {
		select {
		case <-ctx.Done():
			return 0, 0
		case resp := <-answered:
			if resp == nil {
				return 0, 100 * time.Millisecond
			}
			if resp.StatusCode == http.StatusServiceUnavailable {
				return resp.StatusCode, time.Second
			}
			return resp.StatusCode, 100 * time.Millisecond
		case <-t.C:
			if sent >= slowBodySize {
				continue // sent whole: wait for the answer
			}
			k := min(len(chunk), slowBodySize-sent)
			conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := conn.Write(chunk[:k]); err != nil {
				// The server stopped reading: its answer, if any,
				// tells why.
				select {
				case resp := <-answered:
					if resp != nil {
						return resp.StatusCode, time.Second
					}
				case <-time.After(time.Second):
				}
				return 0, 100 * time.Millisecond
			}
			sent += k
		}
	}
}

// probe POSTs a small body to url every 20ms until ctx ends, and returns
// the latencies of the answers and how many failed (an error or a status
// other than 200).
func probe(ctx context.Context, url string) ([]time.Duration, int) {
	c := &http.Client{Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	var lat []time.Duration
	failed := 0
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return lat, failed
		case <-t.C:
		}
		start := time.Now()
		resp, err := c.Post(url, "text/plain", strings.NewReader("probe"))
		if err != nil {
			if ctx.Err() == nil {
				failed++
			}
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			failed++
			continue
		}
		lat = append(lat, time.Since(start))
	}
}

// raiseFileLimit raises this process's soft limit of open files to at
// least n (up to the hard limit): each client holds a connection, and
// the raw server is a child that inherits the limit.
func raiseFileLimit(n uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if lim.Cur >= n {
		return nil
	}
	if lim.Max < n {
		return fmt.Errorf("%d slow clients need %d open files; the hard limit is %d (ulimit -Hn): use fewer -slow-clients", n/2, n, lim.Max)
	}
	lim.Cur = n
	return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
}
