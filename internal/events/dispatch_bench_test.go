package events_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/events"
	"github.com/nimbus-dev/nimbus/internal/runtime"
)

// stamper records when each event's function invocation started and counts
// completions.
type stamper struct {
	inv   events.Invoker
	mu    sync.Mutex
	start map[string]time.Time
	done  atomic.Int64
}

func (s *stamper) Invoke(ctx context.Context, app, fn string, req *runtime.Request) (*runtime.Response, error) {
	now := time.Now()
	s.mu.Lock()
	s.start[req.Header.Get("Ce-Id")] = now
	s.mu.Unlock()
	resp, err := s.inv.Invoke(ctx, app, fn, req)
	if err == nil && resp.Status/100 == 2 {
		s.done.Add(1)
	}
	return resp, err
}

// BenchmarkDispatch measures events from Append to function completion
// through one trigger (Concurrency 16, unordered) and the fast path of the
// guest (200, empty body), with 4 appenders each appending batches of
// batch events (one Append call per batch). It reports events/s and the
// p50/p99 latency from the start of the event's Append call to the start of
// its invocation. The keys variant is an ordered trigger (ordering key
// event.subject) over that many subjects.
func BenchmarkDispatch(b *testing.B) {
	for _, bc := range []struct {
		batch, appenders int
		noGuest          bool
		keys             int
	}{{100, 4, false, 0}, {1, 16, false, 0}, {100, 4, true, 0}, {100, 4, true, 20}} {
		name := fmt.Sprintf("batch=%d/appenders=%d", bc.batch, bc.appenders)
		if bc.noGuest {
			// Baseline in the same run: the dispatcher and JetStream alone,
			// the invocation answered in Go without the runtime.
			name += "/guest=none"
		}
		if bc.keys > 0 {
			name += fmt.Sprintf("/ordered-keys=%d", bc.keys)
		}
		b.Run(name, func(b *testing.B) {
			st := &stamper{start: map[string]time.Time{}}
			e := &env{t: b, dir: b.TempDir(), fns: []string{"a"}}
			e.open(func(inv events.Invoker) events.Invoker {
				st.inv = inv
				if bc.noGuest {
					st.inv = answer200{}
				}
				return st
			})
			b.Cleanup(e.close)
			spec := events.TriggerSpec{App: testApp, Function: "a", ID: "bench", Topic: "orders"}
			if bc.keys > 0 {
				spec.OrderingKey = "event.subject"
			}
			e.sync(spec)

			total := b.N * bc.batch
			appended := make(map[string]time.Time, total)
			var amu sync.Mutex
			var next atomic.Int64
			b.ResetTimer()
			begin, cpu0, ls0 := time.Now(), cpuTime(), e.log.Stats()
			var wg sync.WaitGroup
			for range bc.appenders {
				wg.Go(func() {
					ents := make([]events.Entry, bc.batch)
					ids := make([]string, bc.batch)
					for {
						op := int(next.Add(1)) - 1
						if op >= b.N {
							return
						}
						for i := range ents {
							ids[i] = fmt.Sprintf("%d-%d", op, i)
							subject := ""
							if bc.keys > 0 {
								subject = fmt.Sprint("k", i%bc.keys)
							}
							ents[i] = events.EventEntry(testApp, "orders", event(ids[i], "fast", subject))
						}
						t0 := time.Now()
						amu.Lock()
						for _, id := range ids {
							appended[id] = t0
						}
						amu.Unlock()
						if _, err := e.log.Append(context.Background(), ents...); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			waitFor(b, "completions", func() error {
				if n := st.done.Load(); n < int64(total) {
					return fmt.Errorf("%d of %d completed", n, total)
				}
				return nil
			})
			elapsed, cpu := time.Since(begin), cpuTime()-cpu0
			b.StopTimer()

			var lat []time.Duration
			st.mu.Lock()
			for id, t0 := range appended {
				if s, ok := st.start[id]; ok {
					lat = append(lat, s.Sub(t0))
				}
			}
			st.mu.Unlock()
			slices.Sort(lat)
			b.ReportMetric(float64(total)/elapsed.Seconds(), "events/s")
			// CPU per event (this process: appenders, dispatcher, JetStream,
			// guest) is steadier than events/s on a noisy host, and says what
			// a change saved when the path waits on fsyncs rather than CPU.
			b.ReportMetric(float64(cpu.Microseconds())/float64(total), "cpu-us/event")
			// Appends grouped per commit: each commit of several writes is an
			// atomic batch, whose fixed cost is most of ingress (store.doc.go).
			if ls := e.log.Stats(); ls.Commits > ls0.Commits {
				b.ReportMetric(float64(ls.Entries-ls0.Entries)/float64(ls.Commits-ls0.Commits), "entries/commit")
			}
			if len(lat) > 0 {
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			}
			b.ReportMetric(0, "ns/op")
		})
	}
}

// cpuTime is the CPU time this process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkDispatchLatency measures one event at a time on an idle node:
// Append, then wait for its invocation to complete. It reports the p50
// from the start of Append to the start of the invocation.
func BenchmarkDispatchLatency(b *testing.B) {
	st := &stamper{start: map[string]time.Time{}}
	e := &env{t: b, dir: b.TempDir(), fns: []string{"a"}}
	e.open(func(inv events.Invoker) events.Invoker { st.inv = inv; return st })
	b.Cleanup(e.close)
	e.sync(events.TriggerSpec{App: testApp, Function: "a", ID: "bench", Topic: "orders"})
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		id := fmt.Sprint("l", i)
		t0 := time.Now()
		if _, err := e.log.Append(context.Background(), events.EventEntry(testApp, "orders", event(id, "fast", ""))); err != nil {
			b.Fatal(err)
		}
		waitFor(b, "completion", func() error {
			if st.done.Load() < int64(i+1) {
				return fmt.Errorf("not yet")
			}
			return nil
		})
		st.mu.Lock()
		lat = append(lat, st.start[id].Sub(t0))
		st.mu.Unlock()
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// answer200 answers every invocation with 200 without running anything.
type answer200 struct{}

func (answer200) Invoke(context.Context, string, string, *runtime.Request) (*runtime.Response, error) {
	return &runtime.Response{Status: 200}, nil
}
