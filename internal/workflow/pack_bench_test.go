package workflow

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/store"
)

// benchEngine is an engine on a real store whose workflow "flow" is three
// steps that return at once, with inFlight activations allowed at once.
func benchEngine(b *testing.B, inFlight int) *Engine {
	b.Helper()
	st, err := store.Open(b.Context(), store.Options{DataDir: b.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	var execs sync.Map
	inv := &invoker{g: steps([]string{"a", "b", "c"}, 0, &execs), n: map[string]int{}}
	e := New(st.Committer(), inv, Options{Logger: slog.New(slog.DiscardHandler)})
	inv.e = e
	b.Cleanup(func() { e.Close(context.Background()) })
	rev := testRevision()
	rev.Functions[0].MaxInstances = inFlight
	if err := e.Provision(b.Context(), rev); err != nil {
		b.Fatal(err)
	}
	return e
}

// BenchmarkRun3Steps: start -> result of a 3-step run (every commit
// fsynced), one at a time and 50 at once, started with Start or with
// StartLazy (what the HTTP route and a start with a wait use); it reports
// the runs' changes per log commit and the log commits per run.
func BenchmarkRun3Steps(b *testing.B) {
	for _, c := range []struct {
		inFlight int
		lazy     bool
	}{{1, false}, {1, true}, {50, false}, {50, true}} {
		inFlight := c.inFlight
		start := "eager"
		if c.lazy {
			start = "lazy"
		}
		b.Run(fmt.Sprintf("inflight=%d/start=%s", inFlight, start), func(b *testing.B) {
			e := benchEngine(b, inFlight)
			var n atomic.Int64
			var mu sync.Mutex
			lat := make([]time.Duration, 0, b.N)
			s0 := e.JournalStats()
			b.ResetTimer()
			var wg sync.WaitGroup
			t0 := time.Now()
			for range inFlight {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for n.Add(1) <= int64(b.N) {
						t := time.Now()
						startRun := e.Start
						if c.lazy {
							startRun = e.StartLazy
						}
						rec, _, err := startRun(b.Context(), testApp, "flow", "", nil)
						if err != nil {
							b.Error(err)
							return
						}
						if rec, err = e.Wait(b.Context(), testApp, rec.ID); err != nil || rec.State != StateCompleted {
							b.Errorf("run %s: %v %v", rec.ID, rec.State, err)
							return
						}
						mu.Lock()
						lat = append(lat, time.Since(t))
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			s := e.JournalStats()
			b.ReportMetric(float64(b.N)/time.Since(t0).Seconds(), "runs/s")
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			if p := s.Packs - s0.Packs; p > 0 {
				b.ReportMetric(float64(s.Changes-s0.Changes)/float64(p), "changes/pack")
				b.ReportMetric(float64(p)/float64(b.N), "packs/run")
			}
		})
	}
}
