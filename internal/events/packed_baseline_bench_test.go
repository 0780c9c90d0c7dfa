package events_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbus-dev/nimbus/internal/events"
	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
	"github.com/nimbus-dev/nimbus/internal/runtime"
)

// BenchmarkPackedBaseline is the baseline of the packed-entries design
// (docs/dev/events-plan.md, "Next: packed entries"), built from raw parts:
// 4 appenders each store 100 events as ONE fsynced message (a JSON array
// of the events' entries); a pull consumer takes those packs, runs every
// event through the same scheduler and Go guest as BenchmarkDispatch (16
// at a time), writes one fsynced record message per pack and acks it. No
// retries, filters, ordering, deduplication or dead letters: what the
// Log and the Dispatcher would add on top is what a packed implementation
// must be measured against. Compare its cpu-us/event and events/s with
// BenchmarkDispatch/batch=100/appenders=4 in the same run.
func BenchmarkPackedBaseline(b *testing.B) {
	const batch, appenders, conc = 100, 4, 16
	e := &env{t: b, dir: b.TempDir(), fns: []string{"a"}}
	e.open(nil)
	b.Cleanup(e.close)
	ctx := context.Background()
	js := e.st.JetStream()
	for _, name := range []string{"PACKS", "PACKREC"} {
		if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{name + ".>"}, Storage: jetstream.FileStorage}); err != nil {
			b.Fatal(err)
		}
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, "PACKS", jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 64})
	if err != nil {
		b.Fatal(err)
	}
	total := b.N * batch
	var done atomic.Int64
	stop := make(chan struct{})
	sem := make(chan struct{}, conc)
	var cwg sync.WaitGroup
	cwg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			msgs, err := cons.Fetch(8, jetstream.FetchMaxWait(100*time.Millisecond))
			if err != nil {
				continue
			}
			for m := range msgs.Messages() {
				var raw []json.RawMessage
				if err := json.Unmarshal(m.Data(), &raw); err != nil {
					b.Error(err)
					return
				}
				var wg sync.WaitGroup
				for _, r := range raw {
					ev, err := events.DecodeEntry(r)
					if err != nil {
						b.Error(err)
						return
					}
					sem <- struct{}{}
					wg.Go(func() {
						defer func() { <-sem }()
						hr := http.Request{Header: make(http.Header, 10)}
						cloudevents.WriteRequest(&hr, ev)
						resp, err := e.sched.Invoke(ctx, testApp, "a", &runtime.Request{Method: "POST", Path: "/", Header: hr.Header, Body: ev.Data})
						if err == nil && resp.Status/100 == 2 {
							done.Add(1)
						}
					})
				}
				wg.Wait()
				if _, err := js.Publish(ctx, "PACKREC.x", []byte(fmt.Sprint(m.Headers()))); err != nil {
					b.Error(err)
				}
				m.Ack()
			}
		}
	})
	b.ResetTimer()
	begin, cpu0 := time.Now(), cpuTime()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range appenders {
		wg.Go(func() {
			for {
				op := int(next.Add(1)) - 1
				if op >= b.N {
					return
				}
				var raw []json.RawMessage
				for i := range batch {
					ent := events.EventEntry(testApp, "orders", event(fmt.Sprintf("%d-%d", op, i), "fast", ""))
					raw = append(raw, ent.Data)
				}
				data, _ := json.Marshal(raw)
				if _, err := js.Publish(ctx, "PACKS.x", data); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	waitFor(b, "completions", func() error {
		if n := done.Load(); n < int64(total) {
			return fmt.Errorf("%d of %d", n, total)
		}
		return nil
	})
	elapsed, cpu := time.Since(begin), cpuTime()-cpu0
	b.StopTimer()
	close(stop)
	cwg.Wait()
	b.ReportMetric(float64(total)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(total), "cpu-us/event")
	b.ReportMetric(0, "ns/op")
}
