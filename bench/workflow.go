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

// workflowInFlight is how many runs the workflow scenario keeps in flight.
const workflowInFlight = 50

// runWorkflow measures a 3-step workflow whose steps return at once,
// started through its HTTP route and answered with its result (every
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
	client := loadClient(workflowInFlight)
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
	var rate, p50, p99, rawRate []float64
	for i := 0; i < b.opts.runs; i++ {
		var mu sync.Mutex
		var lat []time.Duration
		var firstErr atomic.Value
		pctx, cancel := context.WithTimeout(ctx, b.opts.duration)
		start := time.Now()
		var wg sync.WaitGroup
		for range workflowInFlight {
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
		cancel()
		if err, ok := firstErr.Load().(error); ok {
			return nil, err
		}
		rate = append(rate, float64(len(lat))/time.Since(start).Seconds())
		slices.Sort(lat)
		p50 = append(p50, ms(quantile(lat, 0.50)))
		p99 = append(p99, ms(quantile(lat, 0.99)))
		r, err := raw.run(ctx, b.opts.duration, workflowInFlight)
		if err != nil {
			return nil, fmt.Errorf("raw JetStream: %w", err)
		}
		rawRate = append(rawRate, r/5)
		progress("   run %d: %.0f runs/s, p50 %.2fms p99 %.2fms; raw 5 sync writes per run: %.0f runs/s", i+1, rate[i], p50[i], p99[i], rawRate[i])
	}
	const rawName = "raw js.Publish (sync), 5 per run, 50 at once"
	return []row{
		newRow("workflow", "3-step runs completed/s, 50 in flight", "runs/s", rate, rawName, rawRate),
		newRow("workflow", "start -> result p50, 50 in flight", "ms", p50, rawName, nil),
		newRow("workflow", "start -> result p99, 50 in flight", "ms", p99, rawName, nil),
	}, nil
}
