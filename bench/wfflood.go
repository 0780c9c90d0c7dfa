package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nimbus-dev/nimbus/internal/model"
)

// wfFloodWorkers post workflow starts in a closed loop.
const wfFloodWorkers = 32

// runWorkflowFlood: examples/approval on a `nimbus up` process, its route
// flooded for -flood by wfFloodWorkers clients starting runs without
// waiting for them (Nimbus-Wait: 0), faster than the workflow's instances
// run them; with the default --max-active-runs and, as the contrast, with
// --max-active-runs -1 (no bound, as before it). Each side is a fresh
// process; its RSS is sampled every 100ms for the peak, and its active
// runs and goroutines read from /metrics at the end of the flood. It runs
// once.
func runWorkflowFlood(ctx context.Context, b *bench) ([]row, error) {
	bin, err := buildNimbus(ctx, b)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(b.root, "examples", "approval")
	bounded, err := wfFloodRun(ctx, b, bin, dir)
	if err != nil {
		return nil, fmt.Errorf("default --max-active-runs: %w", err)
	}
	unbounded, err := wfFloodRun(ctx, b, bin, dir, "--max-active-runs", "-1")
	if err != nil {
		return nil, fmt.Errorf("--max-active-runs -1: %w", err)
	}
	desc := fmt.Sprintf("%s of starts by %d clients", b.opts.flood, wfFloodWorkers)
	base := "--max-active-runs -1 (no bound)"
	return []row{
		newRow("wfflood", "RSS peak, "+desc, "B", bounded.peak, base, unbounded.peak),
		newRow("wfflood", "runs active at the end", "", bounded.active, base, unbounded.active),
		newRow("wfflood", "goroutines at the end", "", bounded.goroutines, base, unbounded.goroutines),
		newRow("wfflood", "starts taken (202)", "", bounded.taken, base, unbounded.taken),
		newRow("wfflood", "starts refused (503 busy)", "", bounded.refused, base, unbounded.refused),
	}, nil
}

// wfFloodResult is one side's figures, each a one-value series.
type wfFloodResult struct{ peak, active, goroutines, taken, refused []float64 }

func wfFloodRun(ctx context.Context, b *bench, bin, dir string, flags ...string) (wfFloodResult, error) {
	p, done, err := nodeWithApp(ctx, b, bin, dir, flags...)
	if err != nil {
		return wfFloodResult{}, err
	}
	defer done()
	pid := p.cmd.Process.Pid
	stop := make(chan struct{})
	peak := peakRSS(pid, stop)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: wfFloodWorkers}, Timeout: 30 * time.Second}
	defer hc.CloseIdleConnections()
	var taken, refused, other atomic.Int64
	fctx, cancel := context.WithTimeout(ctx, b.opts.flood)
	defer cancel()
	var seq atomic.Int64
	var wg sync.WaitGroup
	for range wfFloodWorkers {
		wg.Go(func() {
			for fctx.Err() == nil {
				n := seq.Add(1)
				body := fmt.Sprintf(`{"request":"req-%d","amount":%d}`, n, n%1000)
				req, _ := http.NewRequestWithContext(fctx, "POST", p.gatewayURL+"/requests", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Nimbus-Wait", "0s")
				resp, err := hc.Do(req)
				if err != nil {
					if fctx.Err() == nil {
						other.Add(1)
					}
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				switch resp.StatusCode {
				case http.StatusAccepted:
					taken.Add(1)
				case http.StatusServiceUnavailable:
					refused.Add(1)
				default:
					other.Add(1)
				}
			}
		})
	}
	wg.Wait()
	m, err := metricValues(ctx, p.apiURL, "nimbus_workflow_runs_active", "go_goroutines")
	close(stop)
	top := <-peak
	if err != nil {
		return wfFloodResult{}, err
	}
	progress("   %v: %d starts taken, %d refused, %d other; %v runs active, %v goroutines; RSS peak %s", flags,
		taken.Load(), refused.Load(), other.Load(), m["nimbus_workflow_runs_active"], m["go_goroutines"], model.FormatBytes(uint64(top)))
	one := func(v float64) []float64 { return []float64{v} }
	return wfFloodResult{peak: one(float64(top)), active: one(m["nimbus_workflow_runs_active"]), goroutines: one(m["go_goroutines"]),
		taken: one(float64(taken.Load())), refused: one(float64(refused.Load()))}, nil
}

// metricValues reads unlabelled series from the node's /metrics.
func metricValues(ctx context.Context, apiURL string, names ...string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", apiURL+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		for _, n := range names {
			if f[0] == n {
				v, err := strconv.ParseFloat(f[1], 64)
				if err == nil {
					out[n] = v
				}
			}
		}
	}
	for _, n := range names {
		if _, ok := out[n]; !ok {
			return nil, fmt.Errorf("/metrics has no %s", n)
		}
	}
	return out, sc.Err()
}
