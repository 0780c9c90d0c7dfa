package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/server"
	"github.com/nimbus-dev/nimbus/internal/store"
)

// runEvents measures events per second from gateway ingress to function
// completion (fsync on), batched and single-event, beside raw JetStream
// publishes with synchronous writes on the same kind of store.
func runEvents(ctx context.Context, b *bench) ([]row, error) {
	// The runs append more than the default budget of ids in the
	// duplicate window (1M per 2 minutes: ~8.3k events/s sustained) allows;
	// a node meant for such a rate raises it, as this one does
	// (docs/events.md, "Back-pressure").
	srv, wasm, err := b.serverWithGuest(ctx, "events", "internal/events/testdata/eventguest",
		func(c *server.Config) { c.EventsMaxWindowEvents = 20_000_000 })
	if err != nil {
		return nil, err
	}
	defer srv.Close(context.Background())
	fn := benchFunction(wasm)
	fn.Triggers = []model.Trigger{topicTrigger("t")}
	topics := benchTopics("t")
	if _, _, err := srv.Deploy(ctx, "ev", model.Spec{Functions: []model.Function{fn}, Topics: topics}); err != nil {
		return nil, err
	}
	// The same trigger on a minimal guest (hand-assembled, answers 200 at
	// once): what the platform path carries when the function costs ~0.
	minimal := minimalSDK(7)
	if _, err := srv.PutArtifact(ctx, minimal); err != nil {
		return nil, err
	}
	fnMin := fn
	fnMin.Module = sha(minimal)
	if _, _, err := srv.Deploy(ctx, "evmin", model.Spec{Functions: []model.Function{fnMin}, Topics: topics}); err != nil {
		return nil, err
	}
	raw, err := newRawJetStream(ctx, b)
	if err != nil {
		return nil, err
	}
	defer raw.close()

	url := srv.GatewayURL() + "/_nimbus/events/ev/t"
	urlMin := srv.GatewayURL() + "/_nimbus/events/evmin/t"
	client := loadClient(16)
	var seq atomic.Int64
	var batched, batchedMin, batched8, single, rawRuns []float64
	for i := 0; i < b.opts.runs; i++ {
		n, err := eventsRun(ctx, srv, b.opts.duration, 4, func(ctx context.Context) (int, error) {
			return postBatch(ctx, client, url, &seq, 100)
		})
		if err != nil {
			return nil, fmt.Errorf("batched: %w", err)
		}
		batched = append(batched, n)
		n, err = eventsRunFor(ctx, srv, "evmin", b.opts.duration, 4, func(ctx context.Context) (int, error) {
			return postBatch(ctx, client, urlMin, &seq, 100)
		})
		if err != nil {
			return nil, fmt.Errorf("batched, minimal guest: %w", err)
		}
		batchedMin = append(batchedMin, n)
		n, err = eventsRun(ctx, srv, b.opts.duration, 8, func(ctx context.Context) (int, error) {
			return postBatch(ctx, client, url, &seq, 100)
		})
		if err != nil {
			return nil, fmt.Errorf("batched, 8 clients: %w", err)
		}
		batched8 = append(batched8, n)
		n, err = eventsRun(ctx, srv, b.opts.duration, 16, func(ctx context.Context) (int, error) {
			return postBatch(ctx, client, url, &seq, 1)
		})
		if err != nil {
			return nil, fmt.Errorf("single: %w", err)
		}
		single = append(single, n)
		r, err := raw.run(ctx, b.opts.duration, 16)
		if err != nil {
			return nil, fmt.Errorf("raw JetStream: %w", err)
		}
		rawRuns = append(rawRuns, r)
		progress("   run %d: batched %.0f/s (minimal guest %.0f/s, 8 clients %.0f/s), single %.0f/s, raw sync publish %.0f/s", i+1, batched[i], batchedMin[i], batched8[i], single[i], r)
	}
	rows := []row{
		newRow("events", "ingress->completion, batches of 100, 4 clients", "events/s", batched, "raw js.Publish (sync), 16 publishers", rawRuns).
			goal(">= 20000 events/s", median(batched) >= 20000),
		newRow("events", "same, minimal guest (platform path only)", "events/s", batchedMin, "raw js.Publish (sync), 16 publishers", rawRuns).
			goal(">= 20000 events/s", median(batchedMin) >= 20000),
		// 4 clients each wait for their batch's commit (one pack, one
		// fsync); 8 show whether delivery keeps up with more ingress.
		newRow("events", "same, Go guest, 8 clients", "events/s", batched8, "raw js.Publish (sync), 16 publishers", rawRuns),
		newRow("events", "ingress->completion, single events, 16 clients", "events/s", single, "raw js.Publish (sync), 16 publishers", rawRuns),
	}
	return rows, nil
}

// eventsRun publishes with `workers` clients for d, then waits until the
// function has completed every accepted event, and returns events per second
// from the first publish to the last completion.
func eventsRun(ctx context.Context, srv *server.Server, d time.Duration, workers int, publish func(context.Context) (int, error)) (float64, error) {
	return eventsRunFor(ctx, srv, "ev", d, workers, publish)
}

// eventsRunFor is eventsRun for the function f of app.
func eventsRunFor(ctx context.Context, srv *server.Server, app string, d time.Duration, workers int, publish func(context.Context) (int, error)) (float64, error) {
	completions := func(srv *server.Server) (float64, error) { return completionsOf(srv, app) }
	before, err := completions(srv)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	var sent atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	pctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for pctx.Err() == nil {
				n, err := publish(pctx)
				if err != nil {
					if pctx.Err() == nil {
						errs <- err
					}
					return
				}
				sent.Add(int64(n))
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	want := before + float64(sent.Load())
	deadline := time.Now().Add(2 * time.Minute)
	for {
		done, err := completions(srv)
		if err != nil {
			return 0, err
		}
		if done >= want {
			return float64(sent.Load()) / time.Since(start).Seconds(), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%0.f of %d events completed after 2 minutes", done-before, sent.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// completionsOf is the successful invocation count of app's function f,
// from the node's own metrics.
func completionsOf(srv *server.Server, app string) (float64, error) {
	mfs, err := srv.Metrics().Registry().Gather()
	if err != nil {
		return 0, err
	}
	for _, mf := range mfs {
		if mf.GetName() != "nimbus_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["app"] == app && labels["function"] == "f" && labels["code"] == "200" {
				return m.GetCounter().GetValue(), nil
			}
		}
	}
	return 0, nil
}

// postBatch publishes n events (batched mode, or binary mode for one).
func postBatch(ctx context.Context, client *http.Client, url string, seq *atomic.Int64, n int) (int, error) {
	var body bytes.Buffer
	ct := "application/cloudevents-batch+json"
	var req *http.Request
	var err error
	if n == 1 {
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
		if err != nil {
			return 0, err
		}
		req.Header.Set("Ce-Specversion", "1.0")
		req.Header.Set("Ce-Id", strconv.FormatInt(seq.Add(1), 10))
		req.Header.Set("Ce-Source", "/bench")
		req.Header.Set("Ce-Type", "fast")
	} else {
		body.WriteByte('[')
		for i := 0; i < n; i++ {
			if i > 0 {
				body.WriteByte(',')
			}
			fmt.Fprintf(&body, `{"specversion":"1.0","id":"%d","source":"/bench","type":"fast"}`, seq.Add(1))
		}
		body.WriteByte(']')
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, url, &body)
		if err != nil {
			return 0, err
		}
		req.Header.Set("Content-Type", ct)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return 0, fmt.Errorf("publish: %d %s", resp.StatusCode, b)
	}
	return n, nil
}

// rawJetStream is the baseline: an embedded store like the node's
// (synchronous writes) and plain publishes to a stream of its own.
type rawJetStream struct {
	st *store.Store
	js jetstream.JetStream
}

func newRawJetStream(ctx context.Context, b *bench) (*rawJetStream, error) {
	dir, err := os.MkdirTemp(b.tmp, "rawjs-")
	if err != nil {
		return nil, err
	}
	st, err := store.Open(ctx, store.Options{DataDir: dir, Logger: b.logger})
	if err != nil {
		return nil, err
	}
	js := st.JetStream()
	if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "RAW", Subjects: []string{"raw.>"}, Storage: jetstream.FileStorage}); err != nil {
		st.Close()
		return nil, err
	}
	return &rawJetStream{st: st, js: js}, nil
}

func (r *rawJetStream) close() { r.st.Close() }

// run publishes one message at a time from each of `workers` goroutines for
// d and returns acknowledged messages per second.
func (r *rawJetStream) run(ctx context.Context, d time.Duration, workers int) (float64, error) {
	msg := []byte(`{"specversion":"1.0","id":"1","source":"/bench","type":"fast"}`)
	var n atomic.Int64
	var wg sync.WaitGroup
	pctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	start := time.Now()
	var firstErr atomic.Value
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for pctx.Err() == nil {
				if _, err := r.js.Publish(pctx, "raw.t", msg); err != nil {
					if pctx.Err() == nil {
						firstErr.Store(err)
					}
					return
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	if err, ok := firstErr.Load().(error); ok {
		return 0, err
	}
	return float64(n.Load()) / time.Since(start).Seconds(), nil
}
