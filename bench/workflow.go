package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nimbus-dev/nimbus/internal/model"
)

// Runs the workflow scenario keeps in flight. The function has
// max_instances workflowInFlight: an active run holds an instance, so at
// workflowInFlightHigh the runs beyond it wait for one in the engine.
const (
	workflowInFlight     = 50
	workflowInFlightHigh = 500
)

// runWorkflow measures a 3-step workflow whose steps return at once,
// started through its HTTP route and answered with its result (every log
// commit fsynced): completed runs/s and start -> result p50/p99 with 50
// runs in flight, beside raw JetStream doing the same number of sync
// writes per run (start, 3 steps, end: 5) one after another, 50 at once.
func runWorkflow(ctx context.Context, b *bench) ([]row, error) {
	srv, wasm, err := b.serverWithGuest(ctx, "workflow", "internal/workflow/testdata/wfguest")
	if err != nil {
		return nil, err
	}
	defer srv.Close(context.Background())
	fn := benchFunction(wasm)
	fn.Name, fn.Kind, fn.MaxInstances = "flow", model.KindWorkflow, workflowInFlight
	fn.Routes = []model.Route{{Method: "POST", Path: "/flow"}}
	if _, _, err := srv.Deploy(ctx, "wf", model.Spec{Functions: []model.Function{fn}}); err != nil {
		return nil, err
	}
	raw, err := newRawJetStream(ctx, b)
	if err != nil {
		return nil, err
	}
	defer raw.close()
	client := loadClient(workflowInFlightHigh)
	url := srv.GatewayURL() + "/flow"
	one := func(ctx context.Context) (time.Duration, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(`{"steps":3,"plain":true}`))
		t0 := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("run: %d %s", resp.StatusCode, body)
		}
		return time.Since(t0), nil
	}
	// load keeps inFlight runs going for the scenario's duration and
	// returns completed runs/s and the sorted latencies.
	load := func(inFlight int) (float64, []time.Duration, error) {
		var mu sync.Mutex
		var lat []time.Duration
		var firstErr atomic.Value
		pctx, cancel := context.WithTimeout(ctx, b.opts.duration)
		defer cancel()
		start := time.Now()
		js0 := srv.Workflows().JournalStats()
		var wg sync.WaitGroup
		for range inFlight {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for pctx.Err() == nil {
					d, err := one(pctx)
					if err != nil {
						if pctx.Err() == nil {
							firstErr.Store(err)
						}
						return
					}
					mu.Lock()
					lat = append(lat, d)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if err, ok := firstErr.Load().(error); ok {
			return 0, nil, err
		}
		rate := float64(len(lat)) / time.Since(start).Seconds()
		// Runs whose request the deadline cut go on in the engine: let
		// them finish before the next measurement (bounded).
		for t := time.Now(); srv.Workflows().ActiveRuns() > 0 && time.Since(t) < time.Minute; {
			time.Sleep(10 * time.Millisecond)
		}
		slices.Sort(lat)
		if js := srv.Workflows().JournalStats(); len(lat) > 0 && js.Packs > js0.Packs {
			progress("   %d in flight: %d runs, %.2f log commits per run (%.1f run changes per commit), %.2f view messages per run",
				inFlight, len(lat), float64(js.Packs-js0.Packs)/float64(len(lat)),
				float64(js.Changes-js0.Changes)/float64(js.Packs-js0.Packs), float64(js.Views-js0.Views)/float64(len(lat)))
		}
		return rate, lat, nil
	}
	// Warm the pool (max_instances cold starts), not measured.
	if _, _, err := load(workflowInFlight); err != nil {
		return nil, err
	}
	var rate, p50, p99, rate500, rawRate, one50, one99, rawOne, rawOne3 []float64
	for i := 0; i < b.opts.runs; i++ {
		r, lat, err := load(workflowInFlight)
		if err != nil {
			return nil, err
		}
		rate = append(rate, r)
		p50 = append(p50, ms(quantile(lat, 0.50)))
		p99 = append(p99, ms(quantile(lat, 0.99)))
		if r, _, err = load(workflowInFlightHigh); err != nil {
			return nil, err
		}
		rate500 = append(rate500, r)
		_, lat, err = load(1)
		if err != nil {
			return nil, err
		}
		one50 = append(one50, ms(quantile(lat, 0.50)))
		one99 = append(one99, ms(quantile(lat, 0.99)))
		raw50, err := raw.run(ctx, b.opts.duration, workflowInFlight)
		if err != nil {
			return nil, fmt.Errorf("raw JetStream: %w", err)
		}
		rawRate = append(rawRate, raw50/5)
		raw1, err := raw.run(ctx, b.opts.duration, 1)
		if err != nil {
			return nil, fmt.Errorf("raw JetStream: %w", err)
		}
		rawOne = append(rawOne, 5*1000/raw1)   // ms for 5 sync writes in a row
		rawOne3 = append(rawOne3, 3*1000/raw1) // the 3 commits a lone run makes
		progress("   run %d: %.0f runs/s at %d in flight (p50 %.2fms p99 %.2fms), %.0f runs/s at %d; one at a time p50 %.2fms p99 %.2fms; raw 5 sync writes per run: %.0f runs/s at 50, %.2fms one at a time",
			i+1, rate[i], workflowInFlight, p50[i], p99[i], rate500[i], workflowInFlightHigh, one50[i], one99[i], rawRate[i], rawOne[i])
	}
	const rawName = "raw js.Publish (sync), 5 per run, 50 at once"
	const rawOneName = "raw js.Publish (sync), 5 in a row"
	throughput := newRow("workflow", "3-step runs completed/s, 50 in flight", "runs/s", rate, rawName, rawRate)
	single := newRow("workflow", "start -> result p50, one run at a time", "ms", one50, rawOneName, rawOne)
	return []row{
		throughput.goal(">= 2,000 runs/s", throughput.Nimbus >= 2000),
		newRow("workflow", "3-step runs completed/s, 500 in flight", "runs/s", rate500, rawName, rawRate),
		newRow("workflow", "start -> result p50, 50 in flight", "ms", p50, "", nil),
		newRow("workflow", "start -> result p99, 50 in flight", "ms", p99, "", nil),
		single.goal("<= 2 ms", single.Nimbus <= 2),
		newRow("workflow", "start -> result p50, one run at a time", "ms", one50, "raw js.Publish (sync), 3 in a row (a lone run's commits)", rawOne3),
		newRow("workflow", "start -> result p99, one run at a time", "ms", one99, rawOneName, rawOne),
	}, nil
}
