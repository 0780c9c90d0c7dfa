package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// maxRequests bounds one load measurement in count, besides its duration.
const maxRequests = 5_000_000

// loadResult is one load measurement.
type loadResult struct {
	Requests int
	Elapsed  time.Duration
	P50, P99 time.Duration
}

func (r loadResult) RPS() float64 { return float64(r.Requests) / r.Elapsed.Seconds() }

// loadClient is a keep-alive client able to hold one connection per worker.
func loadClient(workers int) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			MaxIdleConns:        workers * 2,
			MaxIdleConnsPerHost: workers * 2,
			MaxConnsPerHost:     0,
			DisableCompression:  true,
			IdleConnTimeout:     time.Minute,
		},
		Timeout: 30 * time.Second,
	}
}

// drive sends GET url from a fixed number of workers for d (or until
// maxRequests), each worker one request at a time, and measures latency.
// Any answer other than 200 fails the measurement.
func drive(ctx context.Context, client *http.Client, url string, workers int, d time.Duration) (loadResult, error) {
	return measure(ctx, workers, d, maxRequests, func(ctx context.Context) (time.Duration, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return 0, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			return 0, err
		}
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
		}
		return 0, nil
	})
}

// measure runs op from workers goroutines until d has passed or limit ops
// were started, and reports throughput and latency. An op's latency is the
// duration it returns, or its wall time if it returns 0 (so an op can leave
// its own clean-up out). The first error stops every worker.
func measure(ctx context.Context, workers int, d time.Duration, limit int64, op func(context.Context) (time.Duration, error)) (loadResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		started  atomic.Int64
		firstErr error
		errOnce  sync.Once
		wg       sync.WaitGroup
	)
	lat := make([][]time.Duration, workers)
	begin := time.Now()
	deadline := begin.Add(d)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			own := make([]time.Duration, 0, 4096)
			defer func() { lat[w] = own }()
			for ctx.Err() == nil && started.Add(1) <= limit {
				t0 := time.Now()
				if t0.After(deadline) {
					return
				}
				took, err := op(ctx)
				if err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
					return
				}
				if took == 0 {
					took = time.Since(t0)
				}
				own = append(own, took)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(begin)
	if firstErr != nil {
		return loadResult{}, firstErr
	}
	if err := ctx.Err(); err != nil {
		return loadResult{}, err
	}
	all := slices.Concat(lat...)
	if len(all) == 0 {
		return loadResult{}, fmt.Errorf("no operation completed in %s", d)
	}
	slices.Sort(all)
	return loadResult{Requests: len(all), Elapsed: elapsed, P50: quantile(all, 0.50), P99: quantile(all, 0.99)}, nil
}

// quantile of sorted latencies (nearest rank).
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
