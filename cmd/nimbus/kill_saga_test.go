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

// TestKillSagaCompensation: runs of a 5-step saga whose step 3 fails for
// good compensate steps 2 then 1. The node is killed with SIGKILL while
// compensation 2 runs, and again while compensation 1 runs. After each
// restart the compensation resumes: a compensation whose completion was
// journaled never runs again, the one cut by the kill runs again (its
// effect is applied once, by its key), the order is 2 then 1, and steps 4
// and 5 never run.
func TestKillSagaCompensation(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary and a guest, kills and restarts a node")
	}
	const runs = 3
	tmp := t.TempDir()
	c := newCLI(t, tmp)
	data := filepath.Join(tmp, "data")
	app := filepath.Join("testdata", "killsaga")
	srv, f, _ := c.up(app, data)
	token := f["admin"]
	client := &http.Client{Timeout: 30 * time.Second}
	api := func(method, path string, body, out any) (int, error) {
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, f["API"]+path, rd)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
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
	// count is how many times key's effect ran (0: never); rev is its
	// ledger revision (0: not applied).
	count := func(key string) int {
		req, _ := http.NewRequest("GET", f["API"]+"/api/v1/apps/killsaga/buckets/execs/keys/"+key, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			return -1
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		n, _ := strconv.Atoi(string(b))
		return n
	}
	rev := func(key string) uint64 {
		req, _ := http.NewRequest("GET", f["API"]+"/api/v1/apps/killsaga/buckets/ledger/keys/"+key, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		n, _ := strconv.ParseUint(resp.Header.Get("X-Nimbus-Revision"), 10, 64)
		return n
	}
	id := func(i int) string { return "k" + strconv.Itoa(i) }
	for i := range runs {
		var res struct{ Created bool }
		if _, err := api("POST", "/api/v1/apps/killsaga/workflows/saga/runs",
			map[string]any{"id": id(i), "input": json.RawMessage(`{"steps":5,"fail_at":3,"comp_ms":1000}`)}, &res); err != nil || !res.Created {
			t.Fatalf("start %s: %v", id(i), err)
		}
	}
	killWhen := func(what string, ready func(i int) bool) {
		t.Helper()
		poll(t, 30*time.Second, func() error {
			for i := range runs {
				if !ready(i) {
					return fmt.Errorf("run %s: %s not yet", id(i), what)
				}
			}
			return nil
		})
		if err := srv.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		srv.Wait()
		srv, f, _ = c.up(app, data)
	}
	killWhen("compensation 2 running", func(i int) bool { return count(id(i)+"/c2") > 0 })
	killWhen("compensation 1 running", func(i int) bool { return count(id(i)+"/c1") > 0 })
	c2AtKill := map[int]int{}
	for i := range runs {
		c2AtKill[i] = count(id(i) + "/c2")
	}

	type entry struct{ Type, Name string }
	for i := range runs {
		var r struct {
			State, Error string
			Timeline     []entry
		}
		poll(t, 30*time.Second, func() error {
			if _, err := api("GET", "/api/v1/apps/killsaga/runs/"+id(i), nil, &r); err != nil {
				return err
			}
			if r.State != "failed" {
				return fmt.Errorf("run %s is %s", id(i), r.State)
			}
			return nil
		})
		if !strings.Contains(r.Error, "s3 fails for good") {
			t.Errorf("run %s failed with %q, want s3's error", id(i), r.Error)
		}
		var steps []string
		for _, e := range r.Timeline {
			if e.Type == "step" {
				steps = append(steps, e.Name)
			}
		}
		if got := strings.Join(steps, " "); got != "s1 s2 s3 nimbus.compensate:c2 nimbus.compensate:c1" {
			t.Errorf("run %s journaled %q", id(i), got)
		}
		k := id(i) + "/"
		for key, max := range map[string]int{"s1": 1, "s2": 1, "s3": 1, "s4": 0, "s5": 0, "c3": 0, "c2": 2, "c1": 2} {
			if n := count(k + key); n > max || (max > 0 && n == 0) {
				t.Errorf("run %s: %s ran %d times, want 1 to %d", id(i), key, n, max)
			}
		}
		if n := count(k + "c2"); n != c2AtKill[i] {
			t.Errorf("run %s: compensation 2 ran again after the kill during compensation 1 (%d then %d)", id(i), c2AtKill[i], n)
		}
		t.Logf("run %s: compensation 2 executed %d times, 1 %d times (a kill cut the execution it repeats)", id(i), count(k+"c2"), count(k+"c1"))
		if r2, r1 := rev(k+"c2"), rev(k+"c1"); r2 == 0 || r1 <= r2 {
			t.Errorf("run %s: compensation effects at ledger revisions c2=%d c1=%d, want c2 then c1, each once", id(i), r2, r1)
		}
	}
}
