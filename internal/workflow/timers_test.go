package workflow

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	rt "github.com/nimbus-dev/nimbus/internal/runtime"
)

// A timer is due at its time, not a nanosecond before, and fires once
// however often it was armed; arming it earlier moves it.
func TestTimersNeverEarlyFireOnce(t *testing.T) {
	t.Parallel()
	clk := newClock()
	t0 := clk.Now()
	tm := newTimers(clk.Now, func(string, string) {})
	tm.add(t0.Add(10*time.Second), "a", "x")
	tm.add(t0.Add(20*time.Second), "a", "x") // later: the earlier one stays
	tm.add(t0.Add(30*time.Second), "a", "y")
	if due, next := tm.popDue(t0.Add(10*time.Second - time.Nanosecond)); len(due) != 0 || next != time.Nanosecond {
		t.Fatalf("due early: %v (next in %s)", due, next)
	}
	if due, _ := tm.popDue(t0.Add(10 * time.Second)); len(due) != 1 || due[0].id != "x" {
		t.Fatalf("at 10s: %v, want x", due)
	}
	if due, _ := tm.popDue(t0.Add(25 * time.Second)); len(due) != 0 {
		t.Fatalf("x fired twice: %v", due)
	}
	tm.add(t0.Add(26*time.Second), "a", "y") // earlier than 30s: moves y
	if due, _ := tm.popDue(t0.Add(26 * time.Second)); len(due) != 1 || due[0].id != "y" {
		t.Fatalf("at 26s: %v, want y", due)
	}
	if due, _ := tm.popDue(t0.Add(time.Hour)); len(due) != 0 || tm.Len() != 0 {
		t.Fatalf("y fired twice: %v, %d armed", due, tm.Len())
	}
}

// sleeper sleeps an hour at position 0 (suspending the run), then
// completes once the sleep is over.
func sleeper(clk *clock) guest {
	return func(ctx context.Context, e *Engine, inv string, n int) (*rt.Response, error) {
		if err := e.Sleep(ctx, testApp, inv, 0, clk.Now().Add(time.Hour)); err != nil {
			return nil, err
		}
		return completed(`"woke"`), nil
	}
}

// Sleeping runs' timers are re-armed from their records by a new engine;
// a wake-up before the recorded time activates nothing; at the time each
// run is activated once and completes.
func TestTimersRebuiltFromRecords(t *testing.T) {
	t.Parallel()
	const n = 20
	clk := newClock()
	st := openStore(t)
	e1, _ := newEngine(t, st, sleeper(clk), clk.Now)
	wake := clk.Now().Add(time.Hour)
	for i := range n {
		if _, _, err := e1.Start(t.Context(), testApp, "flow", fmt.Sprint("s", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	pollUntil(t, "runs sleeping", func() bool { return e1.timers.Len() == n && e1.ActiveRuns() == 0 })
	if err := e1.Close(t.Context()); err != nil {
		t.Fatal(err)
	}

	// A restart: a new engine on the same store.
	e2, inv := newEngine(t, st, sleeper(clk), clk.Now)
	if got := e2.timers.Len(); got != n {
		t.Fatalf("%d timers re-armed, want %d", got, n)
	}
	rec, err := e2.record(t.Context(), testApp, "s0")
	if err != nil || rec.State != StateSleeping || !rec.WakeAt.Equal(wake) {
		t.Fatalf("record %+v, %v; want sleeping until %s", rec, err, wake)
	}
	// Early wake-ups (a clock step, a restart): nothing runs.
	clk.Set(wake.Add(-time.Second))
	for i := range n {
		e2.fire(testApp, fmt.Sprint("s", i))
	}
	pollUntil(t, "early wake-ups handled", func() bool { return e2.ActiveRuns() == 0 && e2.timers.Len() == n })
	for i := range n {
		if c := inv.count(fmt.Sprint("s", i)); c != 0 {
			t.Fatalf("run s%d activated %d times before its wake time", i, c)
		}
	}
	// At the time: the timer loop fires each once.
	clk.Set(wake)
	e2.timers.kick <- struct{}{}
	for i := range n {
		id := fmt.Sprint("s", i)
		if rec := wait(t, e2, id); rec.State != StateCompleted || inv.count(id) != 1 {
			t.Fatalf("run %s: %s after %d activations, want completed after 1", id, rec.State, inv.count(id))
		}
	}
	if due, _ := e2.timers.popDue(wake.Add(time.Hour)); len(due) != 0 {
		t.Fatalf("timers left after every run completed: %v", due)
	}
}

// pollUntil polls cond with a deadline (no sleeps asserting on timing).
func pollUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestMemoryPerSleepingRun measures what a sleeping run costs the engine:
// 10,000 sleeping runs' records re-armed by Provision. It reports the
// heap per run (bench/README.md "workflow" has the figures) and fails only
// past a generous bound.
func TestMemoryPerSleepingRun(t *testing.T) {
	const n = 10_000
	clk := newClock()
	st := openStore(t)
	e1 := New(st.Committer(), &invoker{n: map[string]int{}}, Options{Now: clk.Now})
	defer e1.Close(context.Background())
	if err := e1.j.ensure(t.Context(), testApp); err != nil {
		t.Fatal(err)
	}
	var m0, m1, m2 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	now := clk.Now()
	p := e1.j.viewPublisher(t.Context())
	for k := range n {
		w, err := recordWrite(&Run{ID: fmt.Sprintf("run-%024x", k), App: testApp, Workflow: "flow", Revision: "f1",
			State: StateSleeping, Input: []byte("null"), WakeAt: now.Add(time.Hour), Created: now, Updated: now, Steps: 1})
		if err != nil {
			t.Fatal(err)
		}
		p.publish(&nats.Msg{Subject: w.Subject, Data: w.Data})
	}
	if err := p.wait(); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	e2 := New(st.Committer(), &invoker{n: map[string]int{}, g: func(context.Context, *Engine, string, int) (*rt.Response, error) {
		return nil, errors.New("no run is due")
	}}, Options{Now: clk.Now})
	defer e2.Close(context.Background())
	if err := e2.Provision(t.Context(), testRevision()); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&m2)
	if got := e2.timers.Len(); got != n {
		t.Fatalf("%d timers, want %d", got, n)
	}
	engine := (int64(m2.HeapAlloc) - int64(m1.HeapAlloc)) / n
	stored := (int64(m1.HeapAlloc) - int64(m0.HeapAlloc)) / n
	t.Logf("%d sleeping runs: engine heap %d bytes per run (timer and its key); the in-process JetStream's heap for their records %d bytes per run", n, engine, stored)
	if engine > 1024 {
		t.Fatalf("a sleeping run costs the engine %d bytes of heap, want well under 1KiB", engine)
	}
}
