package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbus-dev/nimbus/internal/client"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/store"
)

// rawJetStreamEnv, when set (to a data directory), makes this program a
// raw JetStream server for the backpressure scenario's baseline instead of
// the bench: it prints the client URL and runs until stdin closes.
const rawJetStreamEnv = "NIMBUS_BENCH_RAW_JETSTREAM"

// floodWorkers publish batches of floodBatch events in a closed loop.
const (
	floodWorkers = 4
	floodBatch   = 1000
)

// runBackpressure: a real `nimbus up` process with its default limits, one
// app whose trigger runs the minimal guest, flooded with batches of events
// over HTTP for -flood (faster than delivery); its RSS before, at the peak
// and after the backlog is delivered, and how many requests were refused
// (429/503). The baseline is a raw JetStream server process (the same
// embedded store, fsync on) with the 10-minute duplicate window Nimbus had
// before, flooded with the same batches of publishes with ids: no limit,
// no back-pressure.
func runBackpressure(ctx context.Context, b *bench) ([]row, error) {
	bin, err := buildNimbus(ctx, b)
	if err != nil {
		return nil, err
	}
	d := b.opts.flood
	n, err := floodNimbus(ctx, b, bin, d)
	if err != nil {
		return nil, fmt.Errorf("nimbus: %w", err)
	}
	raw, err := floodRaw(ctx, b, d)
	if err != nil {
		return nil, fmt.Errorf("raw JetStream: %w", err)
	}
	progress("   nimbus: RSS %s -> peak %s -> %s after the drain (%s); %d events accepted (%.0f/s), %d requests refused (%s), drained in %s",
		fmtValue(n.before, "B"), fmtValue(n.peak, "B"), fmtValue(n.after, "B"), n.afterNote, n.accepted, float64(n.accepted)/d.Seconds(), n.refused, n.refusedBy, n.drain.Round(time.Second))
	progress("   raw JetStream: RSS %s -> peak %s -> %s; %d events accepted (%.0f/s)",
		fmtValue(raw.before, "B"), fmtValue(raw.peak, "B"), fmtValue(raw.after, "B"), raw.accepted, float64(raw.accepted)/d.Seconds())
	name := fmt.Sprintf("flood %s, %d clients x batches of %d", d, floodWorkers, floodBatch)
	one := func(v float64) []float64 { return []float64{v} }
	return []row{
		newRow("backpressure", name+": peak RSS", "B", one(n.peak), "raw JetStream, dedupe window 10m", one(raw.peak)),
		newRow("backpressure", "RSS before the flood", "B", one(n.before), "raw JetStream", one(raw.before)),
		newRow("backpressure", "RSS after ("+n.afterNote+")", "B", one(n.after), "raw JetStream, after the flood", one(raw.after)),
		newRow("backpressure", "events accepted during the flood", "events/s", one(float64(n.accepted)/d.Seconds()), "raw JetStream", one(float64(raw.accepted)/d.Seconds())),
		newRow("backpressure", "requests refused (429/503, Retry-After)", "requests", one(float64(n.refused)), "", nil),
	}, nil
}

// floodResult is what one flood measured.
type floodResult struct {
	before, peak, after float64 // RSS, bytes
	afterNote           string
	accepted, refused   int64
	refusedBy           string // status counts
	drain               time.Duration
}

// buildNimbus builds cmd/nimbus into the bench's temporary directory once.
func buildNimbus(ctx context.Context, b *bench) (string, error) {
	bin := filepath.Join(b.tmp, "nimbus")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	progress("   building cmd/nimbus")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/nimbus")
	build.Dir = b.root
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/nimbus: %w\n%s", err, out)
	}
	return bin, nil
}

// peakRSS samples pid's RSS every 100ms until stop is closed, then returns
// the highest.
func peakRSS(pid int, stop <-chan struct{}) <-chan int64 {
	out := make(chan int64, 1)
	go func() {
		var peak int64
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if r, err := rss(pid); err == nil {
				peak = max(peak, r)
			}
			select {
			case <-stop:
				out <- peak
				return
			case <-t.C:
			}
		}
	}()
	return out
}

func floodNimbus(ctx context.Context, b *bench, bin string, d time.Duration) (*floodResult, error) {
	dir, err := os.MkdirTemp(b.tmp, "backpressure-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	p, err := startNimbus(ctx, bin, dir)
	if err != nil {
		return nil, err
	}
	defer p.stop()
	c := client.New(p.apiURL, p.token)
	minimal := minimalSDK(17)
	if err := c.PutArtifact(ctx, sha(minimal), minimal); err != nil {
		return nil, err
	}
	fn := benchFunction(minimal)
	fn.Triggers = []model.Trigger{topicTrigger("t")}
	if _, err := c.Deploy(ctx, "bp", model.Spec{Functions: []model.Function{fn}, Topics: benchTopics("t")}); err != nil {
		return nil, err
	}
	pid := p.cmd.Process.Pid
	r := &floodResult{}
	before, err := settledRSS(ctx, pid)
	if err != nil {
		return nil, err
	}
	r.before = float64(before)
	stop := make(chan struct{})
	peak := peakRSS(pid, stop)

	url := p.gatewayURL + "/_nimbus/events/bp/t"
	hc := loadClient(floodWorkers)
	var seq, accepted, refused atomic.Int64
	var mu sync.Mutex
	statuses := map[int]int{}
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for range floodWorkers {
		wg.Go(func() {
			for time.Now().Before(deadline) && ctx.Err() == nil {
				status, retry, err := postFlood(ctx, hc, url, &seq)
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				if status == http.StatusAccepted {
					accepted.Add(floodBatch)
					continue
				}
				refused.Add(1)
				mu.Lock()
				statuses[status]++
				mu.Unlock()
				// An eager client: honours Retry-After, but at most 1s, so
				// the node stays under pressure.
				time.Sleep(min(retry, time.Second, time.Until(deadline)))
			}
		})
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		close(stop)
		return nil, err
	}
	r.accepted, r.refused = accepted.Load(), refused.Load()
	for s, k := range statuses {
		r.refusedBy += fmt.Sprintf("%d x %d ", k, s)
	}
	r.refusedBy = strings.TrimSpace(r.refusedBy)
	if r.refusedBy == "" {
		r.refusedBy = "none"
	}
	// The drain: until every accepted event is delivered, at most 3 min.
	start := time.Now()
	r.afterNote = "backlog delivered"
	for {
		done, err := delivered(ctx, p)
		if err != nil {
			close(stop)
			return nil, err
		}
		if done >= r.accepted {
			break
		}
		if time.Since(start) > 3*time.Minute {
			r.afterNote = fmt.Sprintf("%d of %d delivered after 3m", done, r.accepted)
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	r.drain = time.Since(start)
	after, err := settledRSS(ctx, pid)
	close(stop)
	if err != nil {
		return nil, err
	}
	r.peak, r.after = float64(<-peak), float64(after)
	return r, nil
}

// postFlood posts one batch of floodBatch events and returns the status
// and its Retry-After.
func postFlood(ctx context.Context, hc *http.Client, url string, seq *atomic.Int64) (int, time.Duration, error) {
	var body bytes.Buffer
	body.WriteByte('[')
	for i := range floodBatch {
		if i > 0 {
			body.WriteByte(',')
		}
		fmt.Fprintf(&body, `{"specversion":"1.0","id":"bp-%d","source":"/bench","type":"bench","data":{"n":%d}}`, seq.Add(1), i)
	}
	body.WriteByte(']')
	req, err := http.NewRequestWithContext(ctx, "POST", url, &body)
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Content-Type", "application/cloudevents-batch+json")
	resp, err := hc.Do(req)
	if err != nil {
		return 0, 0, err
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusAccepted:
		return resp.StatusCode, 0, nil
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		secs, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
		return resp.StatusCode, time.Duration(max(secs, 1)) * time.Second, nil
	}
	return 0, 0, fmt.Errorf("publish: %d %s", resp.StatusCode, msg)
}

// delivered reads nimbus_deliveries_total{outcome="delivered"} from the
// node's /metrics.
func delivered(ctx context.Context, p *nimbusProcess) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", p.apiURL+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+p.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), `nimbus_deliveries_total{outcome="delivered"} `); ok {
			f, err := strconv.ParseFloat(v, 64)
			return int64(f), err
		}
	}
	return 0, fmt.Errorf("/metrics: %d, no nimbus_deliveries_total: %v", resp.StatusCode, sc.Err())
}

// floodRaw runs the baseline: this program as a raw JetStream server
// process, flooded with publishes with ids for d.
func floodRaw(ctx context.Context, b *bench, d time.Duration) (*floodResult, error) {
	dir, err := os.MkdirTemp(b.tmp, "backpressure-raw-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), rawJetStreamEnv+"="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer func() { stdin.Close(); cmd.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("raw JetStream server printed no URL: %w", err)
	}
	// The server prints its URL and the NKey seed file its clients
	// authenticate with (the store admits no anonymous client).
	url, seed, _ := strings.Cut(strings.TrimSpace(line), " ")
	auth, err := nats.NkeyOptionFromSeed(seed)
	if err != nil {
		return nil, fmt.Errorf("raw JetStream server's seed %q: %w", seed, err)
	}
	nc, err := nats.Connect(url, auth)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "RAWBP", Subjects: []string{"rawbp.>"},
		Storage: jetstream.FileStorage, Duplicates: 10 * time.Minute, MaxAge: 7 * 24 * time.Hour}); err != nil {
		return nil, err
	}
	pid := cmd.Process.Pid
	r := &floodResult{afterNote: "after the flood"}
	before, err := settledRSS(ctx, pid)
	if err != nil {
		return nil, err
	}
	r.before = float64(before)
	stop := make(chan struct{})
	peak := peakRSS(pid, stop)
	var seq, accepted atomic.Int64
	var firstErr atomic.Value
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for range floodWorkers {
		js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(2*floodBatch)) // a context per worker: its own acks
		if err != nil {
			return nil, err
		}
		wg.Go(func() {
			for time.Now().Before(deadline) && ctx.Err() == nil {
				// One batch: floodBatch async publishes, each with an id (the
				// hex sha256 Nimbus uses), then wait for every ack.
				for i := range floodBatch {
					id := seq.Add(1)
					h := sha256.Sum256([]byte("bp-" + strconv.FormatInt(id, 10)))
					data := fmt.Appendf(nil, `{"specversion":"1.0","id":"bp-%d","source":"/bench","type":"bench","data":{"n":%d}}`, id, i)
					if _, err := js.PublishAsync("rawbp.t", data, jetstream.WithMsgID(hex.EncodeToString(h[:]))); err != nil {
						firstErr.CompareAndSwap(nil, err)
						return
					}
				}
				select {
				case <-js.PublishAsyncComplete():
					accepted.Add(floodBatch)
				case <-time.After(30 * time.Second):
					firstErr.CompareAndSwap(nil, errors.New("publish acks did not come within 30s"))
					return
				}
			}
		})
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		close(stop)
		return nil, err
	}
	r.accepted = accepted.Load()
	after, err := settledRSS(ctx, pid)
	close(stop)
	if err != nil {
		return nil, err
	}
	r.peak, r.after = float64(<-peak), float64(after)
	return r, nil
}

// rawJetStreamMain is this program as the baseline's JetStream server: the
// embedded store Nimbus uses (fsync on), listening on 127.0.0.1, until
// stdin closes. It prints its URL and its clients' NKey seed file.
func rawJetStreamMain(dir string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := store.Open(ctx, store.Options{DataDir: dir, Listen: "127.0.0.1:0"})
	if err != nil {
		return err
	}
	defer st.Close()
	fmt.Println(st.ClientURL(), st.ClientSeedFile())
	io.Copy(io.Discard, os.Stdin)
	return nil
}
