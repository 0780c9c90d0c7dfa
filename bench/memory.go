package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nimbus-dev/nimbus/internal/client"
	"github.com/nimbus-dev/nimbus/internal/model"
)

// runMemory: a real `nimbus up` process (built with go build), its RSS with
// no function, then with opts.functions apps of one function each deployed
// through the API (none invoked, so no instance exists), in two variants:
// every function on one shared minimal module, and every function on its own
// distinct minimal module. Each run is a fresh process and data directory.
func runMemory(ctx context.Context, b *bench) ([]row, error) {
	bin, err := buildNimbus(ctx, b)
	if err != nil {
		return nil, err
	}
	n := b.opts.functions
	var rows []row
	for _, variant := range []string{"shared module", "distinct modules"} {
		var rss0, rssN, perFn, rate, first, last []float64
		for i := range max(b.opts.memoryRuns, 1) {
			r0, rN, took, ends, err := memoryRun(ctx, b, bin, fmt.Sprintf("%s-%d", strings.Fields(variant)[0], i), n, variant == "distinct modules")
			if err != nil {
				return nil, fmt.Errorf("%s, run %d: %w", variant, i+1, err)
			}
			rss0, rssN = append(rss0, float64(r0)), append(rssN, float64(rN))
			perFn = append(perFn, float64(rN-r0)/float64(n))
			rate = append(rate, float64(n)/took.Seconds())
			first, last = append(first, ends[0]), append(last, ends[1])
			if b.opts.verbose {
				progress("   run %d %s: RSS %s -> %s with %d functions, %.0f deploys/s (first tenth %.0f/s, last tenth %.0f/s)", i+1, variant,
					fmtValue(float64(r0), "B"), fmtValue(float64(rN), "B"), n, float64(n)/took.Seconds(), ends[0], ends[1])
			}
		}
		rows = append(rows,
			newRow("memory", fmt.Sprintf("%s: RSS, %d idle functions", variant, n), "B", rssN, "0 functions", rss0),
			newRow("memory", variant+": RSS per function", "B", perFn, "", nil),
			newRow("memory", fmt.Sprintf("%s: %d deploys via API, 1 client", variant, n), "deploys/s", rate, "", nil),
			// Deploy cost must not grow with the apps already deployed:
			// the last tenth of the deploys against the first.
			newRow("memory", variant+": deploys/s, last tenth", "deploys/s", last, "first tenth", first),
		)
	}
	return rows, nil
}

// memoryRun starts one nimbus process, measures its RSS, deploys n
// functions and measures again. It returns both RSS values and how long
// the deploys took, and the deploy rates of the first and the last tenth
// of them.
func memoryRun(ctx context.Context, b *bench, bin, name string, n int, distinct bool) (rss0, rssN int64, took time.Duration, ends [2]float64, err error) {
	dir, err := os.MkdirTemp(b.tmp, "memory-"+name+"-")
	if err != nil {
		return 0, 0, 0, ends, err
	}
	defer os.RemoveAll(dir)
	p, err := startNimbus(ctx, bin, dir)
	if err != nil {
		return 0, 0, 0, ends, err
	}
	defer p.stop()
	c := client.New(p.apiURL, p.token)
	if _, err := c.Status(ctx); err != nil {
		return 0, 0, 0, ends, err
	}
	if rss0, err = settledRSS(ctx, p.cmd.Process.Pid); err != nil {
		return 0, 0, 0, ends, err
	}

	shared := minimalSDK(0)
	start := time.Now()
	tenth := max(n/10, 1)
	var lastStart time.Time
	for i := range n {
		if i == tenth {
			ends[0] = float64(tenth) / time.Since(start).Seconds()
		}
		if i == n-tenth {
			lastStart = time.Now()
		}
		mod := shared
		if distinct {
			mod = minimalSDK(uint32(i + 1))
		}
		// A client uploads a module only when the server lacks it, as
		// `nimbus deploy` does.
		s := sha(mod)
		if distinct || i == 0 {
			if err := c.PutArtifact(ctx, s, mod); err != nil {
				return 0, 0, 0, ends, fmt.Errorf("upload module %d: %w", i, err)
			}
		}
		fn := model.Function{
			Name: "fn", Runtime: "wasm", Module: s,
			MemoryBytes: 64 << 20, TimeoutMS: 5000, Concurrency: 1, MaxInstances: 8,
			MaxRequestBytes: 6 << 20, MaxResponseBytes: 6 << 20,
			Routes: []model.Route{{Method: "GET", Path: fmt.Sprintf("/f%04d/{name}", i)}},
		}
		if _, err := c.Deploy(ctx, fmt.Sprintf("f%04d", i), model.Spec{Functions: []model.Function{fn}}); err != nil {
			return 0, 0, 0, ends, fmt.Errorf("deploy function %d: %w", i, err)
		}
	}
	took = time.Since(start)
	ends[1] = float64(tenth) / time.Since(lastStart).Seconds()
	if rssN, err = settledRSS(ctx, p.cmd.Process.Pid); err != nil {
		return 0, 0, 0, ends, err
	}
	return rss0, rssN, took, ends, nil
}

// nimbusProcess is a running `nimbus up`.
type nimbusProcess struct {
	cmd        *exec.Cmd
	apiURL     string
	gatewayURL string
	token      string
	done       chan struct{} // closed when the process has been waited for
	stderr     *strings.Builder
}

// startNimbus runs `nimbus --json up` on 127.0.0.1 port 0 with its data and
// CLI config under dir, and reads the API URL and admin token it prints.
func startNimbus(ctx context.Context, bin, dir string, flags ...string) (*nimbusProcess, error) {
	empty := filepath.Join(dir, "app") // no nimbus.yaml: start with no app
	if err := os.Mkdir(empty, 0o700); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--json", "up",
		"--data", filepath.Join(dir, "data"),
		"--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0",
		"--log-level", "warn")
	cmd.Args = append(append(cmd.Args, flags...), empty)
	cmd.Env = append(os.Environ(), "NIMBUS_CONFIG="+filepath.Join(dir, "config.json"))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p := &nimbusProcess{cmd: cmd, done: make(chan struct{}), stderr: &strings.Builder{}}
	cmd.Stderr = &limitedWriter{w: p.stderr, n: 64 << 10}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		defer close(p.done)
		cmd.Wait()
	}()
	type info struct {
		APIURL     string `json:"api_url"`
		GatewayURL string `json:"gateway_url"`
		Token      string `json:"admin_token"`
	}
	got := make(chan info, 1)
	go func() {
		defer close(got)
		var i info
		if err := json.NewDecoder(bufio.NewReader(stdout)).Decode(&i); err == nil {
			got <- i
		}
		io.Copy(io.Discard, stdout)
	}()
	select {
	case i, ok := <-got:
		if !ok || i.APIURL == "" || i.Token == "" {
			p.stop()
			return nil, fmt.Errorf("nimbus up printed no API URL and token: %s", p.stderr)
		}
		p.apiURL, p.gatewayURL, p.token = i.APIURL, i.GatewayURL, i.Token
		return p, nil
	case <-time.After(60 * time.Second):
		p.stop()
		return nil, errors.New("nimbus up did not start within 60s")
	case <-ctx.Done():
		p.stop()
		return nil, ctx.Err()
	}
}

// stop interrupts the process (a clean shutdown) and kills it if it has
// not exited within 15s.
func (p *nimbusProcess) stop() {
	p.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(b []byte) (int, error) {
	if l.n > 0 {
		k := min(len(b), l.n)
		l.w.Write(b[:k])
		l.n -= k
	}
	return len(b), nil
}

// rss reads VmRSS of a process, in bytes.
func rss(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			f := strings.Fields(v) // "12345 kB"
			if len(f) == 2 && f[1] == "kB" {
				kb, err := strconv.ParseInt(f[0], 10, 64)
				return kb << 10, err
			}
		}
	}
	return 0, errors.New("no VmRSS in /proc/PID/status")
}

// settledRSS reads RSS every 100ms until two readings agree within 1% (at
// most 3s), so background work right after start or a deploy burst is over.
func settledRSS(ctx context.Context, pid int) (int64, error) {
	prev, err := rss(pid)
	if err != nil {
		return 0, err
	}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for range 30 {
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-t.C:
		}
		cur, err := rss(pid)
		if err != nil {
			return 0, err
		}
		if d := cur - prev; d*100 <= cur && -d*100 <= cur {
			return cur, nil
		}
		prev = cur
	}
	return prev, nil
}
