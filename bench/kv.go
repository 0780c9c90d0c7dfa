package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/state"
	"github.com/nimbus-dev/nimbus/internal/store"
)

// kvWorkers are the fixed concurrencies of the kv scenario, and
// kvOpsPerRequest how many calls the guest makes in one request.
var (
	kvWorkers       = []int{1, 8}
	kvOpsPerRequest = 100
)

// kvSlices is how many turns each side of a kv measurement takes.
const kvSlices = 4

// kvValue is the value every put writes (the kv guest's /loop value).
var kvValue = []byte("0123456789abcdef")

// runKV: key-value gets and puts made by a wasm guest through the SDK
// (host function -> state -> JetStream KV), the guest called through the
// gateway and making kvOpsPerRequest calls per request, against the same
// calls made with nats.go's jetstream.KeyValue on a store opened the same
// way, with the same bucket configuration and the same concurrency.
func runKV(ctx context.Context, b *bench) ([]row, error) {
	srv, wasm, err := b.serverWithGuest(ctx, "kv", "internal/runtime/wasm/testdata/kvguest")
	if err != nil {
		return nil, err
	}
	defer srv.Close(context.Background())
	maxWorkers := kvWorkers[len(kvWorkers)-1]
	fn := benchFunction(wasm)
	fn.TimeoutMS, fn.MaxInstances = 30_000, maxWorkers
	fn.Capabilities = []string{"kv:counts"}
	fn.Routes = []model.Route{{Method: http.MethodGet, Path: "/loop"}}
	bucket := model.Bucket{Name: "counts", MaxValueBytes: state.DefaultMaxValueBytes, History: 1}
	if _, _, err := srv.Deploy(ctx, "kv", model.Spec{Functions: []model.Function{fn}, Buckets: []model.Bucket{bucket}}); err != nil {
		return nil, err
	}
	raw, err := newRawKV(ctx, b, "kv", bucket)
	if err != nil {
		return nil, err
	}
	defer raw.close()
	// Every worker reads and writes its own key, on both sides; gets read
	// a key that exists.
	for w := range maxWorkers {
		if _, err := srv.KV().Put(ctx, "kv", "counts", kvKey(w), kvValue, state.PutOptions{}); err != nil {
			return nil, err
		}
		if _, err := raw.kv.Put(ctx, kvKey(w), kvValue); err != nil {
			return nil, err
		}
	}

	client := loadClient(maxWorkers)
	defer client.CloseIdleConnections()
	// guest and rawOps return operations and seconds of one measurement.
	guest := func(op string, workers, n int, d time.Duration) (float64, float64, error) {
		res, err := measure(ctx, workers, d, maxRequests, kvGuestOp(client, srv.GatewayURL(), op, workers, n))
		return float64(res.Requests * n), res.Elapsed.Seconds(), err
	}
	rawOps := func(op string, workers int, d time.Duration) (float64, float64, error) {
		res, err := measure(ctx, workers, d, maxRequests, raw.op(op, workers))
		return float64(res.Requests), res.Elapsed.Seconds(), err
	}
	// Warm up: start the instances, open the connections.
	for _, op := range []string{"get", "put"} {
		if _, _, err := guest(op, maxWorkers, 1, 200*time.Millisecond); err != nil {
			return nil, fmt.Errorf("warm up %s: %w", op, err)
		}
	}

	type key struct {
		op      string
		workers int
	}
	nimbus, baseline := map[key][]float64{}, map[key][]float64{}
	var single []float64 // get, one call per request, maxWorkers
	for i := range b.opts.runs {
		for _, c := range kvWorkers {
			for _, op := range []string{"get", "put"} {
				// Puts wait for fsync, whose cost swings with whatever else
				// the disk is doing: each side's -duration is cut in
				// kvSlices slices taken in turn, so both see the same disk.
				var ops, secs [2]float64
				for s := range 2 * kvSlices {
					side := (s + i) % 2
					var o, sec float64
					var err error
					if side == 0 {
						o, sec, err = guest(op, c, kvOpsPerRequest, b.opts.duration/kvSlices)
					} else {
						o, sec, err = rawOps(op, c, b.opts.duration/kvSlices)
					}
					if err != nil {
						return nil, fmt.Errorf("%s with %d workers (%s): %w", op, c, []string{"guest", "raw"}[side], err)
					}
					ops[side] += o
					secs[side] += sec
				}
				k := key{op, c}
				nimbus[k] = append(nimbus[k], ops[0]/secs[0])
				baseline[k] = append(baseline[k], ops[1]/secs[1])
				if b.opts.verbose {
					progress("   run %d %s c=%d: guest %.0f ops/s, raw %.0f ops/s", i+1, op, c, nimbus[k][i], baseline[k][i])
				}
			}
		}
		o, sec, err := guest("get", maxWorkers, 1, b.opts.duration)
		if err != nil {
			return nil, fmt.Errorf("get, one per request: %w", err)
		}
		single = append(single, o/sec)
		progress("   run %d done", i+1)
	}
	var rows []row
	for _, op := range []string{"get", "put"} {
		for _, c := range kvWorkers {
			k := key{op, c}
			rows = append(rows, newRow("kv", fmt.Sprintf("%s, %d worker(s), %d per request", op, c, kvOpsPerRequest), "ops/s",
				nimbus[k], fmt.Sprintf("raw jetstream.KeyValue %s, %d goroutine(s)", op, c), baseline[k]))
		}
	}
	rows = append(rows, newRow("kv", fmt.Sprintf("get, %d workers, 1 per request (for contrast)", maxWorkers), "ops/s",
		single, fmt.Sprintf("raw jetstream.KeyValue get, %d goroutines", maxWorkers), baseline[key{"get", maxWorkers}]))
	return rows, nil
}

func kvKey(worker int) string { return fmt.Sprintf("k%d", worker) }

// kvGuestOp is one request to the kv guest: n gets or puts of the worker's
// key. Workers take keys in turn (the load generator does not name them).
func kvGuestOp(client *http.Client, gateway, op string, workers, n int) func(context.Context) (time.Duration, error) {
	urls := make(chan string, workers)
	for w := range workers {
		urls <- fmt.Sprintf("%s/loop?op=%s&b=counts&k=%s&n=%d", gateway, op, kvKey(w), n)
	}
	return func(ctx context.Context) (time.Duration, error) {
		url := <-urls
		defer func() { urls <- url }()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return 0, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return 0, fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, body)
		}
		return 0, nil
	}
}

// rawKV is the baseline: a store opened like the node's (store.Open:
// embedded server, SyncAlways, in-process connection), a bucket created
// with the node's configuration (state.Buckets.Ensure), and plain
// jetstream.KeyValue calls on it.
type rawKV struct {
	st *store.Store
	kv jetstream.KeyValue
}

func newRawKV(ctx context.Context, b *bench, app string, bk model.Bucket) (*rawKV, error) {
	dir, err := os.MkdirTemp(b.tmp, "rawkv-")
	if err != nil {
		return nil, err
	}
	st, err := store.Open(ctx, store.Options{DataDir: dir, Logger: b.logger})
	if err != nil {
		return nil, err
	}
	cfg := state.BucketConfig{App: app, Name: bk.Name, MaxValueBytes: int(bk.MaxValueBytes), History: bk.History}
	if err := state.NewBuckets(st.JetStream(), b.logger).Ensure(ctx, cfg); err != nil {
		st.Close()
		return nil, err
	}
	kv, err := st.JetStream().KeyValue(ctx, state.BucketName(app, bk.Name))
	if err != nil {
		st.Close()
		return nil, err
	}
	return &rawKV{st: st, kv: kv}, nil
}

func (r *rawKV) close() { r.st.Close() }

// op is one get or put of a worker's key.
func (r *rawKV) op(op string, workers int) func(context.Context) (time.Duration, error) {
	keys := make(chan string, workers)
	for w := range workers {
		keys <- kvKey(w)
	}
	return func(ctx context.Context) (time.Duration, error) {
		k := <-keys
		defer func() { keys <- k }()
		var err error
		if op == "put" {
			_, err = r.kv.Put(ctx, k, kvValue)
		} else {
			_, err = r.kv.Get(ctx, k)
		}
		return 0, err
	}
}
