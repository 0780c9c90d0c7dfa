package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/nimbus-dev/nimbus/internal/model"
)

// runAsync measures async invocations per second, from the gateway's 202
// (request fsynced) to the function's completion (its result recorded,
// fsynced), beside raw JetStream synchronous publishes.
func runAsync(ctx context.Context, b *bench) ([]row, error) {
	srv, wasm, err := b.serverWithGuest(ctx, "async", "internal/events/testdata/eventguest")
	if err != nil {
		return nil, err
	}
	defer srv.Close(context.Background())
	fn := benchFunction(wasm)
	fn.Routes = []model.Route{{Method: "POST", Path: "/job"}}
	if _, _, err := srv.Deploy(ctx, "ev", model.Spec{Functions: []model.Function{fn}, Topics: benchTopics()}); err != nil {
		return nil, err
	}
	raw, err := newRawJetStream(ctx, b)
	if err != nil {
		return nil, err
	}
	defer raw.close()

	url := srv.GatewayURL() + "/job"
	client := loadClient(64)
	post := func(ctx context.Context) (int, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(`{"n":1}`))
		if err != nil {
			return 0, err
		}
		req.Header.Set("Prefer", "respond-async")
		req.Header.Set("Ce-Type", "fast") // the guest's minimal path
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			return 0, fmt.Errorf("async request: %d %s", resp.StatusCode, body)
		}
		return 1, nil
	}
	var c16, c64, rawRuns []float64
	for i := 0; i < b.opts.runs; i++ {
		n, err := eventsRun(ctx, srv, b.opts.duration, 16, post)
		if err != nil {
			return nil, fmt.Errorf("16 clients: %w", err)
		}
		c16 = append(c16, n)
		n, err = eventsRun(ctx, srv, b.opts.duration, 64, post)
		if err != nil {
			return nil, fmt.Errorf("64 clients: %w", err)
		}
		c64 = append(c64, n)
		r, err := raw.run(ctx, b.opts.duration, 16)
		if err != nil {
			return nil, fmt.Errorf("raw JetStream: %w", err)
		}
		rawRuns = append(rawRuns, r)
		progress("   run %d: 16 clients %.0f/s, 64 clients %.0f/s, raw sync publish %.0f/s", i+1, c16[i], c64[i], r)
	}
	return []row{
		newRow("async", "202 -> completion recorded, 16 clients", "invocations/s", c16, "raw js.Publish (sync), 16 publishers", rawRuns),
		newRow("async", "202 -> completion recorded, 64 clients", "invocations/s", c64, "raw js.Publish (sync), 16 publishers", rawRuns),
	}, nil
}
