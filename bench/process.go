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
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/nimbus-dev/nimbus/internal/deploy"
	"github.com/nimbus-dev/nimbus/internal/guestbuild"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/runtime/process"
	"github.com/nimbus-dev/nimbus/internal/server"
)

// coldStarts bounds the scale-from-zero measurements of one run.
const coldStarts = 200

// runProcess: examples/process-go (plain net/http) as a process function.
// Scale from zero: a new instance of the loaded function (start the
// process sandboxed, wait until its port accepts) and its first response,
// through internal/runtime/process (with its pool of sandboxes made ahead
// of time full, as after an idle period; and without the pool), vs fork/exec of the same binary on the
// host, polling its port, and its first response. Warm: GET through the
// gateway of a whole node vs GET straight to the same binary; and the
// runtime's hop alone (Handle on an instance), with the node's 1-CPU cap
// on the process and without it.
func runProcess(ctx context.Context, b *bench) ([]row, error) {
	if !process.Probe().Sandbox() {
		return nil, errors.New("this host cannot sandbox processes (see process.Probe); the scenario measures the sandbox")
	}
	dir := filepath.Join(b.root, "examples", "process-go")
	bin := filepath.Join(b.tmp, "process-go")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	build.Dir = dir
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build process-go: %w\n%s", err, out)
	}

	// Scale from zero, runtime level.
	appDir := filepath.Join(b.tmp, "process-app")
	if err := os.MkdirAll(appDir, 0o755); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(appDir, "server"), data, 0o755); err != nil {
		return nil, err
	}
	art, err := guestbuild.Pack(appDir)
	if err != nil {
		return nil, err
	}
	// Two runtimes: the node's default, whose pool of sandboxes made ahead
	// of time is full again before each start (untimed), as it is after an
	// idle period; and one without the pool, which makes the sandbox at
	// every start (what a burst that empties the pool pays).
	coldOf := func(name string, sandboxes int) (func(context.Context) (time.Duration, error), func(), error) {
		rt, err := process.New(process.Config{Dir: filepath.Join(b.tmp, "process-rt-"+name), Sandboxes: sandboxes})
		if err != nil {
			return nil, nil, err
		}
		mod, err := rt.Load(ctx, runtime.Spec{App: "bench", Function: "go", Runtime: model.RuntimeProcess, Revision: "bench",
			Artifact: art, Process: &model.Process{Command: []string{"./server"}, Contract: model.ContractHTTP, Isolation: model.IsolationSandbox},
			Env:    map[string]string{"GREETING": "bench"},
			Limits: runtime.Limits{MemoryBytes: 64 << 20, Timeout: 10 * time.Second, MaxResponseBytes: 1 << 20}})
		if err != nil {
			rt.Close(context.Background())
			return nil, nil, err
		}
		closeAll := func() { mod.Close(context.Background()); rt.Close(context.Background()) }
		return func(ctx context.Context) (time.Duration, error) {
			if err := rt.SandboxesReady(ctx); err != nil {
				return 0, err
			}
			start := time.Now()
			inst, err := mod.NewInstance(ctx)
			if err != nil {
				return 0, err
			}
			defer inst.Close(context.Background())
			resp, err := inst.Handle(ctx, &runtime.Request{Method: "GET", Path: "/cold"})
			if err != nil || resp.Status != 200 {
				return 0, fmt.Errorf("first response: %v", err)
			}
			return time.Since(start), nil
		}, closeAll, nil
	}
	nimbusCold, closePooled, err := coldOf("pooled", 0)
	if err != nil {
		return nil, err
	}
	defer closePooled()
	unpooledCold, closeUnpooled, err := coldOf("unpooled", -1)
	if err != nil {
		return nil, err
	}
	defer closeUnpooled()
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	rawCold := func(ctx context.Context) (time.Duration, error) {
		port, err := freePort()
		if err != nil {
			return 0, err
		}
		start := time.Now()
		cmd := exec.Command(bin)
		cmd.Env = []string{"PORT=" + strconv.Itoa(port), "GREETING=bench"}
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		addr := "127.0.0.1:" + strconv.Itoa(port)
		for {
			c, err := net.Dial("tcp", addr)
			if err == nil {
				c.Close()
				break
			}
			if time.Since(start) > 10*time.Second {
				return 0, fmt.Errorf("raw server not up: %w", err)
			}
			// Every 100µs, as the runtime polls: a nanosleep, since a Go
			// timer this short fires after about a millisecond.
			ts := syscall.NsecToTimespec(int64(100 * time.Microsecond))
			_ = syscall.Nanosleep(&ts, nil)
		}
		resp, err := client.Get("http://" + addr + "/cold")
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return time.Since(start), nil
	}
	var np50, np99, up50, rp50, rp99 []float64
	for i := range b.opts.runs {
		sides := []struct {
			op       func(context.Context) (time.Duration, error)
			p50, p99 *[]float64
		}{{nimbusCold, &np50, &np99}, {rawCold, &rp50, &rp99}, {unpooledCold, &up50, nil}}
		if i%2 == 1 {
			slices.Reverse(sides)
		}
		for _, s := range sides {
			res, err := measure(ctx, 1, b.opts.duration/2, coldStarts, s.op)
			if err != nil {
				return nil, err
			}
			*s.p50 = append(*s.p50, ms(res.P50))
			if s.p99 != nil {
				*s.p99 = append(*s.p99, ms(res.P99))
			}
		}
	}
	p50 := newRow("process", "scale from zero: first response p50", "ms", np50, "fork/exec + first response", rp50)
	rows := []row{
		p50.goal("< 10ms", p50.Nimbus < 10),
		newRow("process", "scale from zero: first response p99", "ms", np99, "fork/exec + first response", rp99),
		newRow("process", "scale from zero, pool empty: p50", "ms", up50, "fork/exec + first response", rp50),
	}

	// Warm, through a whole node.
	srv, err := b.startServer(ctx, "process")
	if err != nil {
		return nil, err
	}
	defer srv.Close(context.Background())
	if _, err := deploy.Run(ctx, deploy.Local{S: srv}, dir, nil); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	raw := exec.Command(bin)
	raw.Env = []string{"PORT=" + strconv.Itoa(port), "GREETING=bench"}
	if err := raw.Start(); err != nil {
		return nil, err
	}
	defer func() { raw.Process.Kill(); raw.Wait() }()
	rawURL := "http://127.0.0.1:" + strconv.Itoa(port) + "/go/bench"
	targets := []struct{ name, url string }{{"nimbus", srv.GatewayURL() + "/go/bench"}, {"raw", rawURL}}

	// The runtime's own hop, without the gateway: Handle on a running
	// instance from the same workers, with the node's 1-CPU cap on the
	// process and without it (the direct server has no cap), so that the
	// platform's cost and the cap's show apart.
	hops := map[string]func(context.Context) (time.Duration, error){}
	for _, c := range []struct {
		name string
		cpus float64
	}{{"hop", 0}, {"hop-nocap", -1}} {
		rt, err := process.New(process.Config{Dir: filepath.Join(b.tmp, "process-"+c.name), CPUs: c.cpus, Sandboxes: -1})
		if err != nil {
			return nil, err
		}
		defer rt.Close(context.Background())
		mod, err := rt.Load(ctx, runtime.Spec{App: "bench", Function: "go", Runtime: model.RuntimeProcess, Revision: "bench",
			Artifact: art, Process: &model.Process{Command: []string{"./server"}, Contract: model.ContractHTTP, Isolation: model.IsolationSandbox},
			Env:    map[string]string{"GREETING": "bench"},
			Limits: runtime.Limits{MemoryBytes: 64 << 20, Timeout: 10 * time.Second, MaxResponseBytes: 1 << 20}})
		if err != nil {
			return nil, err
		}
		inst, err := mod.NewInstance(ctx)
		if err != nil {
			return nil, err
		}
		defer inst.Close(context.Background())
		hops[c.name] = func(ctx context.Context) (time.Duration, error) {
			resp, err := inst.Handle(ctx, &runtime.Request{Method: "GET", Path: "/go/bench", InvocationID: "bench"})
			if err == nil && resp.Status != 200 {
				err = fmt.Errorf("status %d", resp.Status)
			}
			return 0, err
		}
	}
	const workers = 8
	rps := map[string][]float64{}
	wp50 := map[string][]float64{}
	clients := map[string]*http.Client{}
	for _, t := range targets {
		clients[t.name] = loadClient(workers)
		defer clients[t.name].CloseIdleConnections()
		deadline := time.Now().Add(10 * time.Second)
		for { // the raw server may still be starting
			if _, err := drive(ctx, clients[t.name], t.url, workers, min(b.opts.duration/4, 500*time.Millisecond)); err == nil {
				break
			} else if time.Now().After(deadline) {
				return nil, fmt.Errorf("warm up %s: %w", t.name, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	names := []string{"nimbus", "raw", "hop", "hop-nocap"}
	for i := range b.opts.runs {
		for j := range names {
			name := names[(i+j)%len(names)]
			var res loadResult
			var err error
			if op := hops[name]; op != nil {
				res, err = measure(ctx, workers, b.opts.duration, maxRequests, op)
			} else {
				url := targets[0].url
				if name == "raw" {
					url = targets[1].url
				}
				res, err = drive(ctx, clients[name], url, workers, b.opts.duration)
			}
			if err != nil {
				return nil, err
			}
			rps[name] = append(rps[name], res.RPS())
			wp50[name] = append(wp50[name], ms(res.P50))
		}
	}
	r := newRow("process", "warm req/s, 8 workers", "req/s", rps["nimbus"], "same binary direct", rps["raw"])
	wrkRows, err := runWrk(ctx, b, "process", "", "same binary direct", targets[0].url, targets[1].url, 32, true)
	if err != nil {
		return nil, err
	}
	// One connection: a warm request's own latency, each side idle
	// between requests (the gateway's two wakeups against the direct
	// call's one).
	oneRows, err := runWrk(ctx, b, "process", "", "same binary direct", targets[0].url, targets[1].url, 1, false)
	if err != nil {
		return nil, err
	}
	wrkRows = append(wrkRows, oneRows...)
	proxyRows, err := proxyBaselines(ctx, b, rawURL)
	if err != nil {
		return nil, err
	}
	wrkRows = append(wrkRows, proxyRows...)
	rows = append(rows,
		r.goal(">= 0.60x raw", r.Ratio >= 0.6),
		newRow("process", "warm p50, 8 workers", "ms", wp50["nimbus"], "same binary direct", wp50["raw"]),
		newRow("process", "warm req/s, runtime hop only (1-CPU cap)", "req/s", rps["hop"], "same binary direct", rps["raw"]),
		newRow("process", "warm req/s, runtime hop only, no CPU cap", "req/s", rps["hop-nocap"], "same binary direct", rps["raw"]),
	)
	rows = append(rows, wrkRows...)
	langRows, err := processLanguages(ctx, b, srv)
	if err != nil {
		return nil, err
	}
	return append(rows, langRows...), nil
}

// processLanguages measures, with wrk, the Python and Node examples
// through the gateway against the same program started directly: one
// instance each (max_instances: 1), so that both sides run one process.
// A Go net/http process answers as fast as the gateway itself, which
// makes it the worst case for the ratio; these show what the gateway
// costs a function whose own work is not negligible.
func processLanguages(ctx context.Context, b *bench, srv *server.Server) ([]row, error) {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		return nil, nil
	}
	var rows []row
	for _, l := range []struct{ name, example, prog, route string }{
		{"python", "process-python", "python3", "/python/bench"},
		{"node", "process-node", "node", "/node/bench"},
	} {
		if _, err := exec.LookPath(l.prog); err != nil {
			progress("   %s not installed; skipping the %s process", l.prog, l.name)
			continue
		}
		dir := filepath.Join(b.tmp, "lang-"+l.name)
		if err := os.CopyFS(dir, os.DirFS(filepath.Join(b.root, "examples", l.example))); err != nil {
			return nil, err
		}
		manifest := filepath.Join(dir, "nimbus.yaml")
		m, err := os.ReadFile(manifest)
		if err != nil {
			return nil, err
		}
		one := regexp.MustCompile(`(?m)^(\s*)max_instances: \d+`).ReplaceAll(m, []byte("${1}max_instances: 1"))
		if err := os.WriteFile(manifest, one, 0o644); err != nil {
			return nil, err
		}
		if _, err := deploy.Run(ctx, deploy.Local{S: srv}, dir, nil); err != nil {
			return nil, fmt.Errorf("deploy %s: %w", l.example, err)
		}
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		args := map[string][]string{"python": {"app.py"}, "node": {"server.js"}}[l.name]
		direct := exec.Command(l.prog, args...)
		direct.Dir = dir
		direct.Env = []string{"PORT=" + strconv.Itoa(port), "GREETING=bench", "PATH=" + os.Getenv("PATH")}
		if err := direct.Start(); err != nil {
			return nil, err
		}
		defer func() { direct.Process.Kill(); direct.Wait() }()
		url, rawURL := srv.GatewayURL()+l.route, "http://127.0.0.1:"+strconv.Itoa(port)+l.route
		if err := waitOK(ctx, rawURL, url); err != nil {
			return nil, fmt.Errorf("%s: %w", l.example, err)
		}
		got, raw, err := wrkPair(ctx, b, wrk, url, rawURL, 32)
		if err != nil {
			return nil, err
		}
		rows = append(rows,
			newRow("process", l.name+": wrk req/s, 32 conns, one instance", "req/s", got.rps, "same program direct", raw.rps),
			newRow("process", l.name+": wrk p50, 32 conns, one instance", "ms", got.p50, "same program direct", raw.p50))
	}
	return rows, nil
}

// waitOK waits until every url answers 200 (a process starting, an
// instance starting on its first request).
func waitOK(ctx context.Context, urls ...string) error {
	deadline := time.Now().Add(20 * time.Second)
	for _, u := range urls {
		for {
			resp, err := http.Get(u)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
				err = fmt.Errorf("%s answered %d", u, resp.StatusCode)
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return err
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
