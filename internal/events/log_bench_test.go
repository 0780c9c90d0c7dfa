package events

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The benchmarks below run on the real embedded JetStream of store.Open
// (SyncAlways: every acknowledged write is fsynced), 200-byte entries with a
// unique Nats-Msg-Id each, and report entries/s and the p50/p99 latency of
// one call. The raw baselines use the same server and stream settings.
//
// Run (each case stays well under 10 s):
//
//	go test -run '^$' -bench . -benchtime 2s ./internal/events/

var benchConcurrency = []int{1, 16, 64, 256}

// BenchmarkAppend: concurrent callers, one entry per Append (what the
// gateway's binary and structured modes and the publish host function do).
func BenchmarkAppend(b *testing.B) {
	for _, n := range benchConcurrency {
		b.Run(fmt.Sprintf("appenders=%d", n), func(b *testing.B) {
			l, _ := openLog(b, LogConfig{})
			data := make([]byte, 200)
			var ids atomic.Uint64
			runConcurrent(b, n, 1, func(ctx context.Context) error {
				_, err := l.Append(ctx, Entry{Subject: "nimbus.events.bench.t", MsgID: strconv.FormatUint(ids.Add(1), 10), Data: data})
				return err
			})
			st := l.Stats()
			b.ReportMetric(float64(st.Entries)/float64(st.Commits), "entries/commit")
		})
	}
}

// BenchmarkAppendBatched: one Append carries 100 entries (the gateway's
// batched mode, application/cloudevents-batch+json).
func BenchmarkAppendBatched(b *testing.B) {
	for _, n := range []int{1, 16} {
		b.Run(fmt.Sprintf("appenders=%d/entries=100", n), func(b *testing.B) {
			l, _ := openLog(b, LogConfig{})
			data := make([]byte, 200)
			var ids atomic.Uint64
			runConcurrent(b, n, 100, func(ctx context.Context) error {
				es := make([]Entry, 100)
				for i := range es {
					es[i] = Entry{Subject: "nimbus.events.bench.t", MsgID: strconv.FormatUint(ids.Add(1), 10), Data: data}
				}
				_, err := l.Append(ctx, es...)
				return err
			})
		})
	}
}

// BenchmarkRawPublish is the baseline: js.Publish, one at a time per
// publisher, on the same SyncAlways server (one fsync per event).
func BenchmarkRawPublish(b *testing.B) {
	for _, n := range benchConcurrency {
		b.Run(fmt.Sprintf("publishers=%d", n), func(b *testing.B) {
			l, s := openLog(b, LogConfig{}) // same stream settings
			js := s.JetStream()
			data := make([]byte, 200)
			var ids atomic.Uint64
			runConcurrent(b, n, 1, func(ctx context.Context) error {
				_, err := js.Publish(ctx, "nimbus.events.bench.t", data, jetstream.WithMsgID(strconv.FormatUint(ids.Add(1), 10)))
				return err
			})
			_ = l
		})
	}
}

// BenchmarkRawPublishAsync is the other baseline: one publisher with
// js.PublishAsync (up to 4,096 unacknowledged), waiting for every ack. The
// reported latency is not per call: entries/s is the figure.
func BenchmarkRawPublishAsync(b *testing.B) {
	_, s := openLog(b, LogConfig{})
	nc := s.Conn()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 200)
	b.ResetTimer()
	for i := range b.N {
		if _, err := js.PublishAsync("nimbus.events.bench.t", data, jetstream.WithMsgID(strconv.Itoa(i)), jetstream.WithStallWait(30*time.Second)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(60 * time.Second):
		b.Fatal("async publishes not acknowledged")
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "entries/s")
}

// runConcurrent runs op b.N/perOp times from n goroutines (b.RunParallel
// when n is a multiple of GOMAXPROCS) and reports entries/s and the p50 and
// p99 latency of one op.
func runConcurrent(b *testing.B, n, perOp int, op func(context.Context) error) {
	ctx := context.Background()
	var mu sync.Mutex
	var lat []time.Duration
	collect := func(local []time.Duration) {
		mu.Lock()
		lat = append(lat, local...)
		mu.Unlock()
	}
	procs := runtime.GOMAXPROCS(0)
	b.ResetTimer()
	if n >= procs && n%procs == 0 {
		b.SetParallelism(n / procs)
		b.RunParallel(func(pb *testing.PB) {
			var local []time.Duration
			for pb.Next() {
				t0 := time.Now()
				if err := op(ctx); err != nil {
					b.Error(err)
					return
				}
				local = append(local, time.Since(t0))
			}
			collect(local)
		})
	} else {
		var next atomic.Int64
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				var local []time.Duration
				for next.Add(1) <= int64(b.N) {
					t0 := time.Now()
					if err := op(ctx); err != nil {
						b.Error(err)
						return
					}
					local = append(local, time.Since(t0))
				}
				collect(local)
			})
		}
		wg.Wait()
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N*perOp)/b.Elapsed().Seconds(), "entries/s")
	if len(lat) > 0 {
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	}
}
