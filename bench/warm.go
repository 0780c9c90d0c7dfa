package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/pprof"
	"strconv"
	"time"

	"github.com/nimbus-dev/nimbus/internal/guesttest"
	"github.com/nimbus-dev/nimbus/internal/model"
)

// warmWorkers are the fixed concurrencies of the warm scenario.
var warmWorkers = []int{8, 32}

// runWarm: the SDK hello guests of examples/hello deployed on a whole
// in-process node, called through the gateway on 127.0.0.1, against a raw
// net/http handler that answers the same text: the lean one
// (nimbus.HandleRequest; the goal's), and the net/http handler, which also
// logs a line per request. The in-process load generator drives the
// net/http one; wrk drives both.
func runWarm(ctx context.Context, b *bench) ([]row, error) {
	ex, err := b.loadExample("hello", "hello", guesttest.Reactor)
	if err != nil {
		return nil, err
	}
	lean, err := b.loadExample("hello", "lean", guesttest.Reactor)
	if err != nil {
		return nil, err
	}
	srv, err := b.startServer(ctx, "warm")
	if err != nil {
		return nil, err
	}
	defer srv.Close(context.Background())
	if err := deployExample(ctx, srv, "hello", ex); err != nil {
		return nil, err
	}
	if err := deployExample(ctx, srv, "lean", lean); err != nil {
		return nil, err
	}
	// The minimal hand-made guest on the same node shows what the platform
	// itself (HTTP, gateway, scheduler, runtime) costs without a Go guest.
	minimal := &example{wasm: minimalSDK(0), fn: ex.fn}
	minimal.fn.Module = sha(minimal.wasm)
	minimal.fn.Capabilities = nil
	minimal.fn.Routes = []model.Route{{Method: http.MethodGet, Path: "/minimal/{name}"}}
	if err := deployExample(ctx, srv, "minimal", minimal); err != nil {
		return nil, err
	}
	// Two Go guests split the hello's cost: one that implements the ABI
	// without the SDK (a Go guest's call alone), and an SDK guest whose
	// handler writes a constant (the SDK's decoding and encoding).
	for _, g := range []struct{ name, dir string }{{"nosdk", "bench/testdata/nosdkguest"}, {"const", "bench/testdata/constguest"}} {
		progress("   building %s (reactor)", g.dir)
		wasm, err := guesttest.Build(b.root+"/"+g.dir, guesttest.Reactor)
		if err != nil {
			return nil, err
		}
		c := &example{wasm: wasm, fn: ex.fn}
		c.fn.Module = sha(wasm)
		c.fn.Capabilities = nil
		c.fn.Routes = []model.Route{{Method: http.MethodGet, Path: "/" + g.name + "/{name}"}}
		if err := deployExample(ctx, srv, g.name, c); err != nil {
			return nil, err
		}
	}
	raw, err := startRawHello()
	if err != nil {
		return nil, err
	}
	defer raw.close()

	targets := []struct{ name, url string }{
		{"nimbus", srv.GatewayURL() + "/hello/bench"},
		{"raw", raw.url + "/hello/bench"},
		{"minimal", srv.GatewayURL() + "/minimal/bench"},
		{"nosdk", srv.GatewayURL() + "/nosdk/bench"},
		{"const", srv.GatewayURL() + "/const/bench"},
	}
	contrast := map[string]string{
		"minimal": "minimal guest",
		"nosdk":   "Go guest without the SDK",
		"const":   "Go SDK guest, constant handler",
	}
	var rows []row
	for _, c := range warmWorkers {
		rps := map[string][]float64{}
		p50 := map[string][]float64{}
		p99 := map[string][]float64{}
		clients := map[string]*http.Client{}
		targets := targets
		if c != warmWorkers[0] {
			targets = targets[:2] // the contrast guests at the first concurrency only
		}
		for _, t := range targets {
			clients[t.name] = loadClient(c)
			defer clients[t.name].CloseIdleConnections()
			// Warm up: open connections, start the instances.
			if _, err := drive(ctx, clients[t.name], t.url, c, min(b.opts.duration/4, 500*time.Millisecond)); err != nil {
				return nil, fmt.Errorf("warm up %s: %w", t.name, err)
			}
		}
		for i := range b.opts.runs {
			for j := range targets {
				t := targets[(i+j)%len(targets)] // alternate who goes first
				res, err := drive(ctx, clients[t.name], t.url, c, b.opts.duration)
				if err != nil {
					return nil, fmt.Errorf("%s with %d workers: %w", t.name, c, err)
				}
				rps[t.name] = append(rps[t.name], res.RPS())
				p50[t.name] = append(p50[t.name], ms(res.P50))
				p99[t.name] = append(p99[t.name], ms(res.P99))
				if b.opts.verbose {
					progress("   run %d c=%d %-6s %8.0f req/s p50 %.3fms p99 %.3fms", i+1, c, t.name, res.RPS(), ms(res.P50), ms(res.P99))
				}
			}
		}
		// In process, the load generator takes the node's CPU: the goal
		// is wrk's (below).
		rows = append(rows,
			newRow("warm", fmt.Sprintf("hello, net/http handler: req/s, %d workers", c), "req/s", rps["nimbus"], "net/http", rps["raw"]),
			newRow("warm", fmt.Sprintf("hello, net/http handler: p50, %d workers", c), "ms", p50["nimbus"], "net/http", p50["raw"]),
			newRow("warm", fmt.Sprintf("hello, net/http handler: p99, %d workers", c), "ms", p99["nimbus"], "net/http", p99["raw"]),
		)
		for _, t := range targets[2:] {
			rows = append(rows,
				newRow("warm", fmt.Sprintf("%s: req/s, %d workers (for contrast)", contrast[t.name], c), "req/s", rps[t.name], "net/http", rps["raw"]),
				newRow("warm", fmt.Sprintf("%s: p50, %d workers (for contrast)", contrast[t.name], c), "ms", p50[t.name], "net/http", p50["raw"]),
			)
		}
	}
	// The goal is at 32 connections; 1 and 8 show latency without
	// queueing and the ratio at a lighter load.
	for _, g := range []struct {
		label, url string
		goal       bool
	}{
		{"hello, lean API: ", srv.GatewayURL() + "/lean/bench", true},
		{"hello, net/http handler: ", targets[0].url, false},
	} {
		for _, conns := range []int{1, 8, 32} {
			wrkRows, err := runWrk(ctx, b, "warm", g.label, "net/http", g.url, targets[1].url, conns, g.goal)
			if err != nil {
				return nil, err
			}
			rows = append(rows, wrkRows...)
		}
	}
	for _, t := range targets[2:] {
		r, err := runWrkContrast(ctx, b, contrast[t.name], t.url, targets[1].url)
		if err != nil {
			return nil, err
		}
		rows = append(rows, r...)
	}
	return rows, nil
}

// runWrkContrast is runWrk's req/s figure for a contrast guest, beside the
// raw server measured again in the same runs.
func runWrkContrast(ctx context.Context, b *bench, name, url, rawURL string) ([]row, error) {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		return nil, nil
	}
	got, raw, err := wrkPair(ctx, b, wrk, url, rawURL, 32)
	if err != nil {
		return nil, err
	}
	return []row{newRow("warm", name+": wrk req/s, 32 conns (for contrast)", "req/s", got.rps, "net/http", raw.rps)}, nil
}

// wrkRuns are the figures of several wrk runs against one URL.
type wrkRuns struct{ rps, p50, p99 []float64 }

// wrkPair runs wrk -runs times against url and against rawURL with conns
// connections, taking turns at going first.
func wrkPair(ctx context.Context, b *bench, wrk, url, rawURL string, conns int) (got, raw wrkRuns, err error) {
	secs := max(1, int(b.opts.duration.Round(time.Second)/time.Second))
	for i := range b.opts.runs {
		for j := range 2 {
			u, runs := url, &got
			if (i+j)%2 == 1 {
				u, runs = rawURL, &raw
			}
			r, p5, p9, err := wrkOnce(ctx, wrk, secs, u, conns)
			if err != nil {
				return got, raw, err
			}
			runs.rps, runs.p50, runs.p99 = append(runs.rps, r), append(runs.p50, p5), append(runs.p99, p9)
		}
	}
	return got, raw, nil
}

// wrkOnce runs wrk once against url (2 threads, or 1 for one connection;
// conns connections) and reads its req/s, p50 and p99 (ms).
func wrkOnce(ctx context.Context, wrk string, secs int, url string, conns int) (rps, p50, p99 float64, err error) {
	cctx, cancel := context.WithTimeout(ctx, time.Duration(secs+30)*time.Second)
	defer cancel()
	threads := min(2, conns)
	out, err := exec.CommandContext(cctx, wrk, fmt.Sprintf("-t%d", threads), fmt.Sprintf("-c%d", conns), fmt.Sprintf("-d%ds", secs), "--latency", url).CombinedOutput()
	if err != nil {
		return 0, 0, 0, fmt.Errorf("wrk %s: %w\n%s", url, err, out)
	}
	return parseWrk(string(out))
}

// rawServer is the baseline: net/http with a ServeMux route like the
// gateway's, answering what the hello guest answers.
type rawServer struct {
	url string
	srv *http.Server
	ln  net.Listener
	// done is closed when Serve returned.
	done chan struct{}
}

func startRawServer(h http.Handler) (*rawServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &rawServer{url: "http://" + ln.Addr().String(), ln: ln, done: make(chan struct{}),
		srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}}
	go func() {
		defer close(s.done)
		s.srv.Serve(ln)
	}()
	return s, nil
}

func startRawHello() (*rawServer, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello/{name}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "%s, %s\n", "hello", r.PathValue("name"))
	})
	return startRawServer(mux)
}

func (s *rawServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.srv.Shutdown(ctx)
	<-s.done
}

// runWrk measures both URLs with wrk when it is installed (the bench never
// installs it): 2 threads, conns connections; the goal row is the one at
// 32. The load comes from another process, so the node has this one to
// itself (the in-process load generator shares it).
// label starts each row's name; goal puts the goal on the row at 32.
func runWrk(ctx context.Context, b *bench, scenario, label, baseline, nimbusURL, rawURL string, conns int, goal bool) ([]row, error) {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		progress("   wrk not installed; skipping the wrk measurement")
		return nil, nil
	}
	if b.opts.wrkprofile != "" && conns == 32 && goal { // the goal's guest
		secs := max(1, int(b.opts.duration.Round(time.Second)/time.Second))
		if err := profileWrk(ctx, wrk, secs, nimbusURL, filepath.Join(filepath.Dir(b.opts.wrkprofile), scenario+"-"+filepath.Base(b.opts.wrkprofile))); err != nil {
			return nil, err
		}
	}
	got, raw, err := wrkPair(ctx, b, wrk, nimbusURL, rawURL, conns)
	if err != nil {
		return nil, err
	}
	r := newRow(scenario, fmt.Sprintf("%swrk req/s, %d conns", label, conns), "req/s", got.rps, baseline, raw.rps)
	if goal && conns == 32 {
		r = r.goal(">= 0.60x raw", r.Ratio >= 0.6)
	}
	return []row{
		r,
		newRow(scenario, fmt.Sprintf("%swrk p50, %d conns", label, conns), "ms", got.p50, baseline, raw.p50),
		newRow(scenario, fmt.Sprintf("%swrk p99, %d conns", label, conns), "ms", got.p99, baseline, raw.p99),
	}, nil
}

// profileWrk writes a CPU profile of this process (the node; wrk runs
// in its own) during one wrk run against url, which is not counted.
func profileWrk(ctx context.Context, wrk string, secs int, url, file string) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := pprof.StartCPUProfile(f); err != nil {
		return fmt.Errorf("-wrkprofile: %w (not with -cpuprofile)", err)
	}
	cctx, cancel := context.WithTimeout(ctx, time.Duration(secs+30)*time.Second)
	defer cancel()
	out, err := exec.CommandContext(cctx, wrk, "-t2", "-c32", fmt.Sprintf("-d%ds", secs), url).CombinedOutput()
	pprof.StopCPUProfile()
	if err != nil {
		return fmt.Errorf("wrk (profiled): %w\n%s", err, out)
	}
	progress("   CPU profile of the node under wrk written to %s", file)
	return nil
}

var (
	wrkRPS     = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkLatency = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
	wrkErrors  = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

// parseWrk reads req/s and p50/p99 (ms) from wrk --latency output.
func parseWrk(out string) (rps, p50, p99 float64, err error) {
	if m := wrkErrors.FindStringSubmatch(out); m != nil {
		return 0, 0, 0, fmt.Errorf("wrk saw %s non-2xx answers:\n%s", m[1], out)
	}
	m := wrkRPS.FindStringSubmatch(out)
	if m == nil {
		return 0, 0, 0, errors.New("no Requests/sec in wrk output:\n" + out)
	}
	rps, _ = strconv.ParseFloat(m[1], 64)
	for _, l := range wrkLatency.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(l[2], 64)
		v *= map[string]float64{"us": 1e-3, "ms": 1, "s": 1e3}[l[3]]
		if l[1] == "50" {
			p50 = v
		} else {
			p99 = v
		}
	}
	return rps, p50, p99, nil
}
