package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestKillWorkflowsInFlight starts workflow runs on a real `nimbus up`,
// kills the process with SIGKILL several times while they run, restarts
// it on the same data directory each time, and checks: every run
// completes; each step's idempotency key is in the ledger once (the
// guest applies it create-if-absent); each run's journaled results are
// the ledger's revisions of its keys (the journal and the effects agree);
// and a step ran more than once only if a kill cut it (at most one step
// per activation in flight per kill).
func TestKillWorkflowsInFlight(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary and a guest, kills and restarts a node")
	}
	const (
		runs, steps, kills = 30, 5, 3
		maxInstances       = 16 // testdata/killwf/nimbus.yaml
	)
	tmp := t.TempDir()
	c := newCLI(t, tmp)
	data := filepath.Join(tmp, "data")
	app := filepath.Join("testdata", "killwf")
	srv, f, _ := c.up(app, data)
	client := &http.Client{Timeout: 30 * time.Second}
	token := f["admin"] // printed on the first start only
	api := func(method, path string, body any, out any) error {
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, f["API"]+path, rd)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode >= 300 {
			return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
		return json.Unmarshal(b, out)
	}

	kvGet := func(bucket, key string) (string, uint64, error) {
		req, _ := http.NewRequest("GET", f["API"]+"/api/v1/apps/killwf/buckets/"+bucket+"/keys/"+key, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			return "", 0, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return "", 0, fmt.Errorf("GET %s/%s: %d %s", bucket, key, resp.StatusCode, b)
		}
		rev, err := strconv.ParseUint(resp.Header.Get("X-Nimbus-Revision"), 10, 64)
		return string(b), rev, err
	}

	input := fmt.Sprintf(`{"steps":%d,"step_ms":400}`, steps)
	for i := range runs {
		var res struct{ Created bool }
		err := api("POST", "/api/v1/apps/killwf/workflows/flow/runs", map[string]any{"id": "r" + strconv.Itoa(i), "input": json.RawMessage(input)}, &res)
		if err != nil || !res.Created {
			t.Fatalf("start run %d: %v (created %v)", i, err, res.Created)
		}
	}
	for k := range kills {
		time.Sleep(time.Duration(250+50*k) * time.Millisecond) // let some steps run, then cut them
		var before struct{ Runs []struct{ State string } }
		if err := api("GET", "/api/v1/apps/killwf/runs?state=completed&limit=1000", nil, &before); err == nil {
			t.Logf("kill %d: %d runs completed before it", k+1, len(before.Runs))
		}
		if err := srv.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		srv.Wait()
		srv, f, _ = c.up(app, data)
	}

	// The CLI starts one more, and a second start of its id starts nothing.
	if out, err := c.run("wf", "start", "killwf/flow", "--id", "cli", "-i", input); err != nil || !strings.Contains(out, "cli") {
		t.Fatalf("nimbus wf start: %v\n%s", err, out)
	}
	if out, err := c.run("wf", "start", "killwf/flow", "--id", "cli", "-i", input); err != nil || !strings.Contains(out, "existing run") {
		t.Fatalf("nimbus wf start again: %v\n%s", err, out)
	}

	type run struct {
		ID, State, Error string
		Result           json.RawMessage
	}
	var done []run
	poll(t, 60*time.Second, func() error {
		var res struct{ Runs []run }
		if err := api("GET", "/api/v1/apps/killwf/runs?limit=1000", nil, &res); err != nil {
			return err
		}
		n := 0
		for _, r := range res.Runs {
			if r.State == "failed" {
				t.Fatalf("run %s failed: %s", r.ID, r.Error)
			}
			if r.State == "completed" {
				n++
			}
		}
		if n != runs+1 {
			return fmt.Errorf("%d of %d runs completed", n, runs+1)
		}
		done = res.Runs
		return nil
	})

	extra := 0
	for _, r := range done {
		var info struct {
			Result struct{ Revs []uint64 }
		}
		if err := api("GET", "/api/v1/apps/killwf/runs/"+r.ID, nil, &info); err != nil {
			t.Fatal(err)
		}
		var keys struct{ Keys []string }
		if err := api("GET", "/api/v1/apps/killwf/buckets/ledger/keys?prefix="+r.ID+"/", nil, &keys); err != nil {
			t.Fatal(err)
		}
		if len(keys.Keys) != steps || len(info.Result.Revs) != steps {
			t.Fatalf("run %s: ledger keys %v, journaled results %v: want %d of each", r.ID, keys.Keys, info.Result.Revs, steps)
		}
		for i := range steps {
			key := fmt.Sprintf("%s/%d/s%d", r.ID, i, i)
			_, rev, err := kvGet("ledger", key)
			if err != nil {
				t.Fatalf("ledger %s: %v", key, err)
			}
			if rev != info.Result.Revs[i] {
				t.Errorf("run %s step %d: journal says ledger revision %d, the ledger has %d", r.ID, i, info.Result.Revs[i], rev)
			}
			ex, _, err := kvGet("execs", key)
			if err != nil {
				t.Fatalf("execs %s: %v", key, err)
			}
			if n, _ := strconv.Atoi(ex); n > 1 {
				extra += n - 1
			}
		}
	}
	t.Logf("%d runs x %d steps across %d kills; %d step executions repeated (cut by a kill before their journal entry)", runs+1, steps, kills, extra)
	if extra > kills*maxInstances {
		t.Fatalf("%d repeated step executions: more than one per activation in flight at each of %d kills", extra, kills)
	}
}
