package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
	"github.com/nimbus-dev/nimbus/internal/guestlog"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/server"
	"github.com/nimbus-dev/nimbus/internal/store"
)

// latencyRate is the fixed publish rate of the latency scenario, events per
// second: well below what one topic trigger completes (see events), so
// the figure is the path's latency, not queueing.
const latencyRate = 200

// runLatency measures the time from publishing one event to the start of
// the function it triggers. Events go one at a time at latencyRate; the
// guest (bench/testdata/startguest) logs the wall-clock time its handler
// began, and the bench subtracts the time it began the publish. The
// baseline does the same with raw JetStream: a synchronous publish, and a
// durable pull consumer (explicit ack) on a store opened like the node's
// noting when each message arrives.
func runLatency(ctx context.Context, b *bench) ([]row, error) {
	srv, wasm, err := b.serverWithGuest(ctx, "latency", "bench/testdata/startguest")
	if err != nil {
		return nil, err
	}
	defer srv.Close(context.Background())
	fn := benchFunction(wasm)
	fn.Capabilities = []string{"log"}
	fn.Triggers = []model.Trigger{topicTrigger("t")}
	topics := benchTopics("t")
	if _, _, err := srv.Deploy(ctx, "lat", model.Spec{Functions: []model.Function{fn}, Topics: topics}); err != nil {
		return nil, err
	}
	raw, err := newRawLatency(ctx, b)
	if err != nil {
		return nil, err
	}
	defer raw.close()

	client := loadClient(1)
	defer client.CloseIdleConnections()
	url := srv.GatewayURL() + "/_nimbus/events/lat/t"
	viaHTTP := func(ctx context.Context, id string) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Ce-Specversion", "1.0")
		req.Header.Set("Ce-Id", id)
		req.Header.Set("Ce-Source", "/bench")
		req.Header.Set("Ce-Type", "latency")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			return fmt.Errorf("publish: %d %s", resp.StatusCode, body)
		}
		return nil
	}
	inProcess := func(ctx context.Context, id string) error {
		_, _, err := srv.Publish(ctx, "lat", "t", []cloudevents.Event{{SpecVersion: "1.0", ID: id, Source: "/bench", Type: "latency"}}, "")
		return err
	}
	// Warm up: the first event starts the instance.
	if _, err := nimbusLatency(ctx, srv, "warm", 100*time.Millisecond, viaHTTP); err != nil {
		return nil, fmt.Errorf("warm up: %w", err)
	}
	if _, err := raw.run(ctx, "warm", 100*time.Millisecond); err != nil {
		return nil, fmt.Errorf("warm up raw: %w", err)
	}

	type side struct {
		name     string
		run      func(prefix string) ([]time.Duration, error)
		p50, p99 []float64
	}
	sides := []*side{
		{name: "http", run: func(p string) ([]time.Duration, error) {
			return nimbusLatency(ctx, srv, p, b.opts.duration, viaHTTP)
		}},
		{name: "in-process", run: func(p string) ([]time.Duration, error) {
			return nimbusLatency(ctx, srv, p, b.opts.duration, inProcess)
		}},
		{name: "raw", run: func(p string) ([]time.Duration, error) { return raw.run(ctx, p, b.opts.duration) }},
	}
	for i := range b.opts.runs {
		for j := range sides {
			s := sides[(i+j)%len(sides)] // alternate who goes first
			lat, err := s.run(fmt.Sprintf("%s%d-", s.name, i))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", s.name, err)
			}
			s.p50 = append(s.p50, ms(quantile(lat, 0.50)))
			s.p99 = append(s.p99, ms(quantile(lat, 0.99)))
			if b.opts.verbose {
				progress("   run %d %-10s %d events, p50 %.3fms p99 %.3fms", i+1, s.name, len(lat), s.p50[i], s.p99[i])
			}
		}
		progress("   run %d: p50 %.3fms (http), %.3fms (in-process), %.3fms (raw)", i+1, sides[0].p50[i], sides[1].p50[i], sides[2].p50[i])
	}
	rawName := "raw js.Publish -> pull consumer"
	h, p, r := sides[0], sides[1], sides[2]
	return []row{
		newRow("latency", fmt.Sprintf("publish->start p50, HTTP ingress, %d events/s", latencyRate), "ms", h.p50, rawName, r.p50).
			goal("< 2 ms", median(h.p50) < 2),
		newRow("latency", fmt.Sprintf("publish->start p99, HTTP ingress, %d events/s", latencyRate), "ms", h.p99, rawName, r.p99),
		newRow("latency", "publish->start p50, server.Publish in process (for contrast)", "ms", p.p50, rawName, r.p50),
		newRow("latency", "publish->start p99, server.Publish in process (for contrast)", "ms", p.p99, rawName, r.p99),
	}, nil
}

// paced calls send(i) at latencyRate for d, one call at a time. A call
// that overruns its slot moves the schedule instead of bunching the next
// ones behind it.
func paced(ctx context.Context, d time.Duration, send func(i int) error) (int, error) {
	interval := time.Second / latencyRate
	next := time.Now()
	end := next.Add(d)
	n := 0
	for ; next.Before(end) && n < latencyRate*int(d/time.Second+1); n++ {
		if wait := time.Until(next); wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return n, ctx.Err()
			}
		}
		if err := send(n); err != nil {
			return n, err
		}
		next = next.Add(interval)
		if now := time.Now(); now.After(next) {
			next = now
		}
	}
	return n, nil
}

// nimbusLatency publishes events (ids prefix0, prefix1, ...) with publish
// at latencyRate for d, then reads the guest's "start" lines from the
// node's logs and returns each event's publish->start latency, sorted.
func nimbusLatency(ctx context.Context, srv *server.Server, prefix string, d time.Duration, publish func(context.Context, string) error) ([]time.Duration, error) {
	since := time.Now()
	var sent []time.Time
	n, err := paced(ctx, d, func(i int) error {
		sent = append(sent, time.Now())
		return publish(ctx, prefix+strconv.Itoa(i))
	})
	if err != nil {
		return nil, err
	}
	started := make([]time.Time, n)
	found := 0
	for deadline := time.Now().Add(30 * time.Second); found < n; {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%d of %d functions started within 30s of the last publish", found, n)
		}
		if err := srv.ReadLogs(ctx, guestlog.Query{App: "lat", Function: "f", Since: since}, func(e guestlog.Entry) error {
			f := strings.Fields(e.Message)
			if len(f) != 3 || f[0] != "start" || !strings.HasPrefix(f[1], prefix) {
				return nil
			}
			i, err1 := strconv.Atoi(strings.TrimPrefix(f[1], prefix))
			ns, err2 := strconv.ParseInt(f[2], 10, 64)
			if err1 != nil || err2 != nil || i < 0 || i >= n {
				return fmt.Errorf("unexpected guest line %q", e.Message)
			}
			if started[i].IsZero() {
				found++
			}
			started[i] = time.Unix(0, ns)
			return nil
		}); err != nil {
			return nil, err
		}
		if found < n {
			time.Sleep(50 * time.Millisecond)
		}
	}
	lat := make([]time.Duration, n)
	for i := range lat {
		lat[i] = started[i].Sub(sent[i])
	}
	slices.Sort(lat)
	return lat, nil
}

// rawLatency is the baseline: a store opened like the node's (SyncAlways,
// in-process connection), a file stream with message ids (as the events
// stream), a durable pull consumer with explicit ack consumed with
// Consume, and synchronous publishes.
type rawLatency struct {
	st *store.Store
	js jetstream.JetStream
	cc jetstream.ConsumeContext

	mu   sync.Mutex
	recv map[string]time.Time
}

func newRawLatency(ctx context.Context, b *bench) (*rawLatency, error) {
	dir, err := os.MkdirTemp(b.tmp, "rawlat-")
	if err != nil {
		return nil, err
	}
	st, err := store.Open(ctx, store.Options{DataDir: dir, Logger: b.logger})
	if err != nil {
		return nil, err
	}
	r := &rawLatency{st: st, js: st.JetStream(), recv: map[string]time.Time{}}
	if _, err := r.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: "RAWLAT", Subjects: []string{"rawlat.>"},
		Storage: jetstream.FileStorage, Duplicates: 10 * time.Minute}); err != nil {
		st.Close()
		return nil, err
	}
	cons, err := r.js.CreateOrUpdateConsumer(ctx, "RAWLAT", jetstream.ConsumerConfig{Durable: "lat",
		AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		st.Close()
		return nil, err
	}
	r.cc, err = cons.Consume(func(msg jetstream.Msg) {
		now := time.Now()
		r.mu.Lock()
		r.recv[string(msg.Data())] = now
		r.mu.Unlock()
		msg.Ack()
	})
	if err != nil {
		st.Close()
		return nil, err
	}
	return r, nil
}

func (r *rawLatency) close() {
	r.cc.Stop()
	<-r.cc.Closed()
	r.st.Close()
}

// run publishes messages (data prefix0, prefix1, ...) at latencyRate for d
// and returns each one's publish->receive latency, sorted.
func (r *rawLatency) run(ctx context.Context, prefix string, d time.Duration) ([]time.Duration, error) {
	var sent []time.Time
	n, err := paced(ctx, d, func(i int) error {
		id := prefix + strconv.Itoa(i)
		sent = append(sent, time.Now())
		_, err := r.js.Publish(ctx, "rawlat.t", []byte(id), jetstream.WithMsgID(id))
		return err
	})
	if err != nil {
		return nil, err
	}
	lat := make([]time.Duration, n)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		r.mu.Lock()
		got := 0
		for i := range lat {
			if t, ok := r.recv[prefix+strconv.Itoa(i)]; ok {
				lat[i] = t.Sub(sent[i])
				got++
			}
		}
		r.mu.Unlock()
		if got == n {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%d of %d messages received within 30s of the last publish", got, n)
		}
	}
	slices.Sort(lat)
	return lat, nil
}
