package main

import (
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

// TestKillTimersWakeOnceNeverEarly: runs sleeping on durable timers when
// the node is killed with SIGKILL are woken by the restarted node once
// each, never before their recorded wake time. The workflow
// (internal/workflow/testdata/wfguest, count_wakes) appends the wall-clock
// time of every activation that gets past its sleep to "<run>/woke" in
// the bucket execs; the timeline records the sleep's wake time and the
// journaled time after it (a step, nimbus.now).
func TestKillTimersWakeOnceNeverEarly(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary and a guest, kills and restarts a node")
	}
	// Sleeps from 3s to 7.75s: some end while the node is down (the
	// restart finds them due), others on timers the restart re-arms.
	const runs = 20
	sleepMS := func(i int) int64 { return 3000 + 250*int64(i) }
	tmp := t.TempDir()
	c := newCLI(t, tmp)
	data := filepath.Join(tmp, "data")
	app := filepath.Join("testdata", "killwf")
	srv, f, stderr := c.up(app, data)
	api := &nodeAPI{client: &http.Client{Timeout: 30 * time.Second}, url: f["API"], token: f["admin"]}
	id := func(i int) string { return "t" + strconv.Itoa(i) }
	for i := range runs {
		input := json.RawMessage(fmt.Sprintf(`{"steps":2,"sleep_ms":%d,"count_wakes":true}`, sleepMS(i)))
		if _, err := api.do("POST", "/api/v1/apps/killwf/workflows/flow/runs", map[string]any{"id": id(i), "input": input}, nil); err != nil {
			t.Fatal(err)
		}
	}
	type runRec struct{ ID, State string }
	poll(t, 30*time.Second, func() error {
		var res struct{ Runs []runRec }
		if _, err := api.do("GET", "/api/v1/apps/killwf/runs?state=sleeping&limit=1000", nil, &res); err != nil {
			return err
		}
		if len(res.Runs) != runs {
			return fmt.Errorf("%d of %d runs sleeping", len(res.Runs), runs)
		}
		return nil
	})
	if err := srv.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	srv.Wait()
	killedAt := time.Now()
	_, f, stderr = c.up(app, data)
	api.url = f["API"]
	restarted := time.Now()

	poll(t, 60*time.Second, func() error {
		var res struct{ Runs []runRec }
		if _, err := api.do("GET", "/api/v1/apps/killwf/runs?state=completed&limit=1000", nil, &res); err != nil {
			return err
		}
		if len(res.Runs) != runs {
			return fmt.Errorf("%d of %d runs completed\nnode stderr:\n%s", len(res.Runs), runs, tail(stderr.String(), 2000))
		}
		return nil
	})

	var rearmed int // runs whose wake time came after the restart
	var across int  // runs that slept across the kill
	type entry struct {
		Type, Name string
		Pos        int
		Time       time.Time
		WakeAt     time.Time `json:"wake_at"`
		Result     json.RawMessage
	}
	for i := range runs {
		var info struct {
			Updated time.Time
			Result  struct {
				SleptMS int64 `json:"slept_ms"`
			}
			Timeline []entry
		}
		if _, err := api.do("GET", "/api/v1/apps/killwf/runs/"+id(i), nil, &info); err != nil {
			t.Fatal(err)
		}
		// The sleep, then the first operation after it: the journaled
		// time of nimbus.now.
		var sleep, after *entry
		for j, e := range info.Timeline {
			if e.Type == "sleep" && j+1 < len(info.Timeline) {
				sleep, after = &info.Timeline[j], &info.Timeline[j+1]
			}
		}
		if sleep == nil || after.Name != "nimbus.now" || sleep.WakeAt.IsZero() {
			t.Fatalf("run %s: no sleep with a wake time followed by nimbus.now in its timeline: %+v", id(i), info.Timeline)
		}
		var nowNS int64
		if err := json.Unmarshal(after.Result, &nowNS); err != nil {
			t.Fatalf("run %s: nimbus.now result %s: %v", id(i), after.Result, err)
		}
		if after.Time.Before(sleep.WakeAt) || time.Unix(0, nowNS).Before(sleep.WakeAt) {
			t.Errorf("run %s woke early: wake time %s, the step after the sleep journaled at %s (its clock read %s)",
				id(i), sleep.WakeAt.Format(time.RFC3339Nano), after.Time.Format(time.RFC3339Nano), time.Unix(0, nowNS).UTC().Format(time.RFC3339Nano))
		}
		if info.Result.SleptMS < sleepMS(i) {
			t.Errorf("run %s slept %dms by its journaled clock, asked %dms", id(i), info.Result.SleptMS, sleepMS(i))
		}
		wakes := wakeTimes(t, api, id(i))
		var before, afterKill int
		for _, w := range wakes {
			if w.Before(sleep.WakeAt) {
				t.Errorf("run %s: an activation got past its sleep at %s, before its wake time %s", id(i), w.Format(time.RFC3339Nano), sleep.WakeAt.Format(time.RFC3339Nano))
			}
			if w.After(killedAt) {
				afterKill++
			} else {
				before++
			}
		}
		// A run that woke before the kill (a slow machine) wakes again
		// after the restart only if the kill cut that activation.
		switch {
		case before == 0 && afterKill != 1, before > 1, afterKill > 1:
			t.Errorf("run %s woke %d times before the kill and %d times after the restart, want once", id(i), before, afterKill)
		case before == 1 && info.Updated.Before(killedAt) && afterKill != 0:
			t.Errorf("run %s completed before the kill, and woke again after the restart", id(i))
		case before == 0:
			across++
			if sleep.WakeAt.After(restarted) {
				rearmed++
			}
		}
	}
	t.Logf("%d of %d runs slept across the kill: %d were due when the node came back, %d woke on re-armed timers", across, runs, across-rearmed, rearmed)
	if across == 0 {
		t.Fatal("no run slept across the kill")
	}
}

// wakeTimes reads the wake-ups wfguest recorded for run.
func wakeTimes(t *testing.T, api *nodeAPI, run string) []time.Time {
	t.Helper()
	req, _ := http.NewRequest("GET", api.url+"/api/v1/apps/killwf/buckets/execs/keys/"+run+"/woke", nil)
	req.Header.Set("Authorization", "Bearer "+api.token)
	resp, err := api.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("wake-ups of run %s: %d %s", run, resp.StatusCode, b)
	}
	var out []time.Time
	for _, s := range strings.Split(string(b), ",") {
		ns, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("wake-ups of run %s: %q", run, b)
		}
		out = append(out, time.Unix(0, ns))
	}
	return out
}
