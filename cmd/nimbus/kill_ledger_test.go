package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/guesttest"
)

// nodeAPI calls a node's HTTP API with the admin token. URL changes at
// every restart (the API listens on port 0); the token does not.
type nodeAPI struct {
	client     *http.Client
	url, token string
}

// do sends body as JSON and decodes a 2xx answer into out (when not nil).
// Any other status is an error carrying the status and the body.
func (a *nodeAPI) do(method, path string, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, a.url+path, rd)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := a.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return resp.StatusCode, fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	if out == nil {
		return resp.StatusCode, nil
	}
	return resp.StatusCode, json.Unmarshal(b, out)
}

// ledger is an external service with idempotent effects: POST with an
// Idempotency-Key applies the key once (201 and a new sequence number);
// a POST with a key applied before is a duplicate (200 and the first
// sequence number). It answers after delay, so a node killed meanwhile
// loses the answer to an effect that happened.
type ledger struct {
	delay time.Duration
	mu    sync.Mutex
	seq   uint64
	keys  map[string]*ledgerKey
	posts int
}

type ledgerKey struct {
	seq   uint64
	posts int // 1 + the duplicates absorbed
}

func (l *ledger) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("Idempotency-Key")
	if r.Method != http.MethodPost || key == "" {
		http.Error(w, "POST with an Idempotency-Key", http.StatusBadRequest)
		return
	}
	l.mu.Lock()
	l.posts++
	k := l.keys[key]
	status := http.StatusOK
	if k == nil {
		l.seq++
		k = &ledgerKey{seq: l.seq}
		l.keys[key] = k
		status = http.StatusCreated
	}
	k.posts++
	seq := k.seq
	l.mu.Unlock()
	time.Sleep(l.delay)
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"seq":%d}`, seq)
}

// applied is the number of distinct keys applied.
func (l *ledger) applied() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.keys)
}

// TestKillLedgerExactlyOnce: 1,000 five-step runs whose steps POST to a
// loopback ledger with the SDK's idempotency key of (run, step), through
// the host's outbound HTTP. The node is killed with SIGKILL at least 20
// times while they run, and restarted on the same data directory each
// time. Every run completes; the ledger holds exactly the 5,000 keys
// (run, position, step), each applied once, and each run's journaled
// results are the ledger's sequence numbers of its keys; the duplicates
// the keys absorbed are re-runs of steps cut by a kill (at most one per
// activation in flight at each kill); no run is left unfinished.
//
// The kills follow the ledger's progress, not the clock: each waits for
// a share of the effects still to apply, so 20 kills fall while runs are
// in flight on a fast machine as on a slow one.
func TestKillLedgerExactlyOnce(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("kills and restarts a node 20 times under 1,000 runs (about a minute)")
	}
	const (
		runs, steps  = 1000, 5
		kills        = 20
		maxInstances = 16
	)
	led := &ledger{delay: 50 * time.Millisecond, keys: map[string]*ledgerKey{}}
	ls := httptest.NewServer(led)
	defer ls.Close()
	port := ls.Listener.Addr().(*net.TCPAddr).Port

	tmp := t.TempDir()
	app := filepath.Join(tmp, "ledgerwf")
	if err := os.MkdirAll(app, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(app, "ledger.wasm"), guesttest.MustBuild(t, "testdata/ledgerguest", guesttest.Reactor), 0o644); err != nil {
		t.Fatal(err)
	}
	manifest := fmt.Sprintf(`app: ledgerwf
functions:
  flow:
    kind: workflow
    module: ledger.wasm
    timeout: 30s
    max_instances: %d
    capabilities: [log, "http:127.0.0.1:%d"]
`, maxInstances, port)
	if err := os.WriteFile(filepath.Join(app, "nimbus.yaml"), []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	c := newCLI(t, tmp)
	data := filepath.Join(tmp, "data")
	egress := []string{"--egress-allow-cidr", "127.0.0.0/8"}
	srv, f, stderr := c.up(app, data, egress...)
	api := &nodeAPI{client: &http.Client{Timeout: 30 * time.Second}, url: f["API"], token: f["admin"]}

	input := json.RawMessage(fmt.Sprintf(`{"url":%q,"steps":%d}`, ls.URL+"/apply", steps))
	id := func(i int) string { return "L" + strconv.Itoa(i) }
	starts := make(chan int)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := range starts {
				var res struct{ Created bool }
				if _, err := api.do("POST", "/api/v1/apps/ledgerwf/workflows/flow/runs", map[string]any{"id": id(i), "input": input}, &res); err != nil || !res.Created {
					t.Errorf("start run %d: %v (created %v)", i, err, res.Created)
				}
			}
		})
	}
	for i := range runs {
		starts <- i
	}
	close(starts)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	total := runs * steps
	var intervals []string
	for k := range kills {
		base := led.applied()
		remaining := total - base
		// Leave at least two shares for after the last kill.
		share := max(1, remaining/(kills-k+2))
		if remaining < kills-k+2 {
			t.Fatalf("only %d effects left before kill %d of %d: the runs went faster than the kills", remaining, k+1, kills)
		}
		began := time.Now()
		poll(t, time.Minute, func() error {
			if n := led.applied(); n < base+share {
				return fmt.Errorf("kill %d: %d effects applied since the restart, waiting for %d\nnode stderr:\n%s", k+1, n-base, share, tail(stderr.String(), 2000))
			}
			return nil
		})
		if err := srv.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		srv.Wait()
		intervals = append(intervals, time.Since(began).Round(100*time.Millisecond).String())
		srv, f, stderr = c.up(app, data, egress...)
		api.url = f["API"]
	}
	t.Logf("%d kills, each after the node applied a share of what was left, %s after its restart", kills, strings.Join(intervals, " "))

	type runRec struct {
		ID, State, Error string
	}
	poll(t, 2*time.Minute, func() error {
		var res struct{ Runs []runRec }
		if _, err := api.do("GET", "/api/v1/apps/ledgerwf/runs?limit=10000", nil, &res); err != nil {
			return err
		}
		done := 0
		for _, r := range res.Runs {
			switch r.State {
			case "completed":
				done++
			case "running", "sleeping":
			default:
				t.Fatalf("run %s is %s: %s", r.ID, r.State, r.Error)
			}
		}
		if len(res.Runs) != runs || done != runs {
			return fmt.Errorf("%d of %d runs completed (%d listed)\nnode stderr:\n%s", done, runs, len(res.Runs), tail(stderr.String(), 2000))
		}
		return nil
	})

	// The journal and the ledger agree, key by key.
	want := map[string]bool{}
	for i := range runs {
		var info struct {
			State  string
			Result struct{ Seqs []uint64 }
		}
		if _, err := api.do("GET", "/api/v1/apps/ledgerwf/runs/"+id(i), nil, &info); err != nil {
			t.Fatal(err)
		}
		if len(info.Result.Seqs) != steps {
			t.Fatalf("run %s: result %+v, want %d sequence numbers", id(i), info.Result, steps)
		}
		for s := range steps {
			key := fmt.Sprintf("%s/%d/post%d", id(i), s, s)
			want[key] = true
			led.mu.Lock()
			k := led.keys[key]
			led.mu.Unlock()
			if k == nil {
				t.Fatalf("run %s step %d completed, but its key %s never reached the ledger", id(i), s, key)
			}
			if k.seq != info.Result.Seqs[s] {
				t.Errorf("run %s step %d: journal says ledger sequence %d, the ledger applied %s as %d", id(i), s, info.Result.Seqs[s], key, k.seq)
			}
		}
	}
	led.mu.Lock()
	defer led.mu.Unlock()
	dups, repeated := 0, 0
	for key, k := range led.keys {
		if !want[key] {
			t.Errorf("the ledger applied %s, which is no step's key: a key that is not stable across activations applies an effect twice", key)
		}
		if k.posts > 1 {
			repeated++
			dups += k.posts - 1
		}
	}
	if len(led.keys) != total || int(led.seq) != total {
		t.Fatalf("the ledger applied %d distinct keys (last sequence %d), want exactly %d", len(led.keys), led.seq, total)
	}
	t.Logf("%d runs x %d steps across %d kills: %d POSTs, %d distinct effects, %d duplicates absorbed by idempotency keys (%d keys posted more than once)",
		runs, steps, kills, led.posts, len(led.keys), dups, repeated)
	if led.posts != total+dups {
		t.Fatalf("%d POSTs, %d effects and %d duplicates do not add up", led.posts, total, dups)
	}
	// A completed step is never run again: only a step in flight when
	// the node died repeats, at most one per activation.
	if dups > kills*maxInstances {
		t.Fatalf("%d duplicate POSTs: more than one per activation in flight (%d) at each of %d kills; completed steps ran again", dups, maxInstances, kills)
	}
}
