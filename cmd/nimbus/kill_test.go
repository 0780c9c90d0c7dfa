package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestKillWithEventsInFlight kills a real `nimbus up` process with SIGKILL
// while it is delivering events (and while a client is still publishing),
// restarts it on the same data directory, and counts: every event the
// gateway acknowledged is delivered, nothing that was refused is, an event
// runs twice only if one of its runs was cut by the kill, and re-sent
// events (same source and id) are not run again. Async invocations queued
// before the kill are counted the same way, and their records and
// Idempotency-Keys are checked after the restart.
//
// The app is testdata/killapp: its function records each run of an event
// in the bucket "state" (seen.<id>: the start time of every run) and
// counts invocations. Events with the extension gated=1 wait in the
// function until the test opens the gate after the restart, so deliveries
// are in flight at the kill whatever the machine's speed.
func TestKillWithEventsInFlight(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary and a guest, kills and restarts a node")
	}
	tmp := t.TempDir()
	c := newCLI(t, tmp)
	data := filepath.Join(tmp, "data")
	app := filepath.Join("testdata", "killapp")
	srv, f, stderr := c.up(app, data)
	ingress := f["gateway"] + "/_nimbus/events/killapp/events"
	client := &http.Client{Timeout: 30 * time.Second}

	acked := map[string]bool{} // ids the gateway answered 202 for
	var refused []string       // ids of batches answered 4xx
	publishAcked := func(evs []testEvent) {
		t.Helper()
		res, err := publishEvents(client, ingress, evs)
		if err != nil {
			t.Fatal(err)
		}
		if res.Accepted != len(evs) || res.Duplicates != 0 {
			t.Fatalf("publish of %d new events: %+v", len(evs), res)
		}
		for _, e := range evs {
			acked[e.ID] = true
		}
	}

	// 200 events that run at once, then 100 that wait at the gate, in
	// batches, each acknowledged only once on disk.
	var gated []string
	for b := range 8 {
		publishAcked(makeEvents(fmt.Sprintf("a%d-", b), 25, false))
	}
	for b := range 4 {
		evs := makeEvents(fmt.Sprintf("g%d-", b), 25, true)
		publishAcked(evs)
		for _, e := range evs {
			gated = append(gated, e.ID)
		}
	}
	// Async invocations ride the same path: 20 that run at once and 10
	// that wait at the gate, each queued on disk when answered 202.
	invocations := map[string]string{} // invocation id -> the id it records
	for i := range 30 {
		id := fmt.Sprintf("job%d", i)
		inv, dup, err := postJob(client, f["gateway"], id, i >= 20)
		if err != nil || dup {
			t.Fatalf("async job %s: %v (duplicate %v)", id, err, dup)
		}
		invocations[inv] = id
		acked[id] = true
	}
	// Refused batches store nothing: one with an event lacking its type
	// (400), one with an event over the topic's 1KiB max_event_size (413).
	bad := makeEvents("bad-", 5, false)
	bad[4].Type = ""
	big := makeEvents("big-", 5, false)
	big[2].Data = strings.Repeat("x", 2048)
	for _, evs := range [][]testEvent{bad, big} {
		if _, err := publishEvents(client, ingress, evs); err == nil || !strings.Contains(err.Error(), "status 4") {
			t.Fatalf("a batch with a bad event was not refused: %v", err)
		}
		for _, e := range evs {
			refused = append(refused, e.ID)
		}
	}

	// A client keeps publishing batches of 10 while the node is killed:
	// each batch ends acknowledged, in doubt (no answer), or unsent.
	type lateBatch struct {
		evs   []testEvent
		acked bool
	}
	var (
		lateMu   sync.Mutex
		late     []lateBatch // sent, in order
		lateDone = make(chan struct{})
		stopLate = make(chan struct{})
		lateGoes = make(chan struct{}) // closed once 3 batches are acknowledged
	)
	go func() {
		defer close(lateDone)
		defer func() {
			select {
			case <-lateGoes:
			default:
				close(lateGoes)
			}
		}()
		for b := range 20 {
			select {
			case <-stopLate:
				return
			default:
			}
			evs := makeEvents(fmt.Sprintf("late%d-", b), 10, false)
			res, err := publishEvents(client, ingress, evs)
			lateMu.Lock()
			late = append(late, lateBatch{evs: evs, acked: err == nil && res.Accepted == len(evs)})
			lateMu.Unlock()
			if err != nil {
				return
			}
			if b == 2 {
				close(lateGoes)
			}
		}
	}()

	// Kill once some deliveries have completed (the gated ones cannot
	// have) and the client is publishing.
	select {
	case <-lateGoes:
	case <-time.After(time.Minute):
		t.Fatal("the late publisher got no batch acknowledged in a minute")
	}
	var atKill int
	poll(t, 60*time.Second, func() error {
		st, err := getStats(client, f["gateway"], true)
		if err != nil {
			return err
		}
		atKill = st.Invocations
		if st.Invocations < 20 {
			return fmt.Errorf("%d invocations", st.Invocations)
		}
		return nil
	})
	if err := srv.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	srv.Wait()
	if ws, ok := srv.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("nimbus up did not die of SIGKILL: %v\n%s", srv.ProcessState, stderr)
	}
	// Every run of the killed process started before now; every run of the
	// restarted one after. The guest and the test read the same wall clock.
	killedAt := time.Now()
	close(stopLate)
	<-lateDone

	_, f2, stderr2 := c.up(app, data)
	if out, err := c.run("kv", "put", "killapp/state", "gate", "open"); err != nil {
		t.Fatalf("open the gate: %v\n%s", err, out)
	}
	ingress = f2["gateway"] + "/_nimbus/events/killapp/events"

	// A batch sent without an answer may or may not be stored. Sending it
	// again tells which (its events come back as duplicates if it was) and
	// makes sure it is.
	var lateAcked, lateDoubt, lateStored int
	for _, b := range late {
		if b.acked {
			lateAcked++
		} else {
			lateDoubt++
			res, err := publishEvents(client, ingress, b.evs)
			if err != nil {
				t.Fatalf("publish again a batch sent during the kill: %v", err)
			}
			lateStored += res.Duplicates
		}
		for _, e := range b.evs {
			acked[e.ID] = true
		}
	}

	// Wait until every acknowledged event has run. Deliveries that were in
	// flight come back after the consumers' ack wait (30s).
	var st stats
	poll(t, 3*time.Minute, func() error {
		var err error
		if st, err = getStats(client, f2["gateway"], false); err != nil {
			return err
		}
		var missing []string
		for id := range acked {
			if len(st.Seen[id]) == 0 {
				missing = append(missing, id)
			}
		}
		if len(missing) > 0 {
			slices.Sort(missing)
			return fmt.Errorf("%d of %d acknowledged events never ran, e.g. %s\nstderr after restart:\n%s",
				len(missing), len(acked), missing[:min(5, len(missing))], tail(stderr2.String(), 2000))
		}
		return nil
	})

	runs := 0
	for id, times := range st.Seen {
		runs += len(times)
		if !acked[id] {
			t.Errorf("event %s ran but was never acknowledged (refused or never sent)", id)
		}
		var before, after int
		for _, ns := range times {
			if time.Unix(0, ns).Before(killedAt) {
				before++
			} else {
				after++
			}
		}
		// Without a crash an event that succeeded is not run again: a
		// second run needs a first one cut short (or unacknowledged) by
		// the kill.
		if before > 1 || after > 1 {
			t.Errorf("event %s ran %d times before the kill and %d times after the restart; only a run cut by the kill may repeat", id, before, after)
		}
	}
	for _, id := range refused {
		if len(st.Seen[id]) > 0 {
			t.Errorf("event %s of a refused batch ran", id)
		}
	}
	unique := len(st.Seen)
	if st.Invocations < runs || runs < unique {
		t.Fatalf("counts do not add up: %d invocations, %d recorded runs, %d distinct events", st.Invocations, runs, unique)
	}
	t.Logf("%d events acknowledged (%d late batches acknowledged, %d in doubt at the kill of which %d events were stored), "+
		"%d invocations when killed; after the restart %d distinct events ran in %d invocations: %d duplicates (%d of them recorded a second run)",
		len(acked), lateAcked, lateDoubt, lateStored, atKill, unique, st.Invocations, st.Invocations-unique, runs-unique)

	// Every async invocation finishes, and its record says so; the same
	// Idempotency-Key after the restart names the same invocation. They
	// are not among the events waited for above: one queued at the kill
	// runs once its queue's delivery comes back after the restart, which
	// may be after every event ran.
	for inv, id := range invocations {
		poll(t, 90*time.Second, func() error {
			out, err := c.run("invocation", inv, "--json")
			var rec struct{ State string }
			if err != nil || json.Unmarshal([]byte(out), &rec) != nil || rec.State != "succeeded" {
				return fmt.Errorf("async invocation %s (job %s) after the restart: %v\n%s", inv, id, err, out)
			}
			return nil
		})
	}
	for inv, id := range invocations {
		again, dup, err := postJob(client, f2["gateway"], id, false)
		if err != nil || !dup || again != inv {
			t.Errorf("job %s posted again with its Idempotency-Key: %s (duplicate %v), want %s: %v", id, again, dup, inv, err)
		}
		break
	}

	// Idempotency across the restart: events sent again with the same
	// source and id are stored once and not run again. The gated events
	// all ran once, after the restart, and were acknowledged without a
	// crash since.
	again := gated[:20]
	before := map[string]int{}
	var evs []testEvent
	for _, id := range again {
		before[id] = len(st.Seen[id])
		evs = append(evs, testEvent{ID: id, Type: "kill.test", Data: "again"})
	}
	res, err := publishEvents(client, ingress, evs)
	if err != nil {
		t.Fatal(err)
	}
	if res.Accepted != len(evs) || res.Duplicates != len(evs) {
		t.Fatalf("re-sent events: %+v, want all %d duplicates", res, len(evs))
	}
	// Had the re-sent events been stored, they would be ahead of these
	// in the topic and would have started before these ran.
	sentinel := makeEvents("after-", 10, false)
	publishAcked(sentinel)
	poll(t, time.Minute, func() error {
		var err error
		if st, err = getStats(client, f2["gateway"], false); err != nil {
			return err
		}
		for _, e := range sentinel {
			if len(st.Seen[e.ID]) == 0 {
				return fmt.Errorf("event %s has not run", e.ID)
			}
		}
		return nil
	})
	for _, id := range again {
		if n := len(st.Seen[id]); n != before[id] {
			t.Errorf("event %s re-sent with the same source and id ran again (%d runs, had %d)", id, n, before[id])
		}
	}
}

// postJob sends POST /killapp/job?id=ID as an async invocation (with id as
// its Idempotency-Key) and returns the invocation id from the 202.
func postJob(client *http.Client, gateway, id string, gated bool) (inv string, duplicate bool, err error) {
	url := gateway + "/killapp/job?id=" + id
	if gated {
		url += "&gated=1"
	}
	req, _ := http.NewRequest(http.MethodPost, url, nil)
	req.Header.Set("Prefer", "respond-async")
	req.Header.Set("Idempotency-Key", id)
	resp, err := client.Do(req)
	if err != nil {
		return "", false, err
	}
	defer resp.Body.Close()
	var acc struct {
		ID        string `json:"id"`
		Duplicate bool   `json:"duplicate"`
	}
	if resp.StatusCode != http.StatusAccepted || json.NewDecoder(resp.Body).Decode(&acc) != nil {
		return "", false, fmt.Errorf("POST %s: %s", url, resp.Status)
	}
	return acc.ID, acc.Duplicate, nil
}

// testEvent is one CloudEvent of the test, in the JSON format.
type testEvent struct {
	ID     string `json:"id"`
	Source string `json:"source"`
	Spec   string `json:"specversion"`
	Type   string `json:"type,omitempty"`
	Gated  string `json:"gated,omitempty"`
	Data   string `json:"data,omitempty"`
}

// makeEvents returns n events with ids prefix0..prefix(n-1).
func makeEvents(prefix string, n int, gated bool) []testEvent {
	evs := make([]testEvent, n)
	for i := range evs {
		evs[i] = testEvent{ID: fmt.Sprint(prefix, i), Type: "kill.test"}
		if gated {
			evs[i].Gated = "1"
		}
	}
	return evs
}

// publishAnswer is the gateway's 202 body.
type publishAnswer struct {
	Accepted   int `json:"accepted"`
	Duplicates int `json:"duplicates"`
}

// publishEvents posts evs in batched mode; any answer but 202 is an error
// naming the status.
func publishEvents(client *http.Client, url string, evs []testEvent) (publishAnswer, error) {
	for i := range evs {
		evs[i].Source, evs[i].Spec = "/killtest", "1.0"
	}
	body, err := json.Marshal(evs)
	if err != nil {
		return publishAnswer{}, err
	}
	resp, err := client.Post(url, "application/cloudevents-batch+json", bytes.NewReader(body))
	if err != nil {
		return publishAnswer{}, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return publishAnswer{}, err
	}
	if resp.StatusCode != http.StatusAccepted {
		return publishAnswer{}, fmt.Errorf("publish: status %d: %s", resp.StatusCode, b)
	}
	var res publishAnswer
	if err := json.Unmarshal(b, &res); err != nil {
		return publishAnswer{}, fmt.Errorf("publish answer %q: %w", b, err)
	}
	return res, nil
}

// stats is what GET /killapp/stats answers.
type stats struct {
	Invocations int                `json:"invocations"`
	Seen        map[string][]int64 `json:"seen"`
}

func getStats(client *http.Client, gateway string, brief bool) (stats, error) {
	url := gateway + "/killapp/stats"
	if brief {
		url += "?brief=1"
	}
	var st stats
	resp, err := client.Get(url)
	if err != nil {
		return st, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return st, err
	}
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("GET %s: %q: %w", url, b, err)
	}
	return st, nil
}

// poll calls check until it returns nil, every 100ms for at most limit,
// and fails the test with check's last error after that.
func poll(t *testing.T, limit time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still not done after %s: %v", limit, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
