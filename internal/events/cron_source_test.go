package events

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbus-dev/nimbus/internal/events/cron"
)

// fakeClock is an injected clock: After registers a waiter that fires when
// Advance moves the time past its deadline.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
}

type fakeWaiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock(now time.Time) *fakeClock { return &fakeClock{now: now} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, fakeWaiter{at: c.now.Add(d), ch: ch})
	return ch
}

// Set moves the clock to t and fires the waiters due by then.
func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(t) {
			w.ch <- t
			continue
		}
		kept = append(kept, w)
	}
	c.waiters = kept
}

func (c *fakeClock) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// cronEvents returns the events appended on a cron trigger's topic.
func cronEvents(t *testing.T, js jetstream.JetStream, s CronSpec) []string {
	t.Helper()
	var ids []string
	for _, m := range readAll(t, js, DefaultStream) {
		if m.Subject() != SubjectFor(DefaultSubjectPrefix, s.App, CronTopic(s.Function, s.ID)) {
			continue
		}
		e, err := DecodeEntry(m.Data())
		if err != nil {
			t.Fatal(err)
		}
		if e.Type != CronEventType || e.Source != CronEventSource(s.App, s.Function, s.ID) {
			t.Fatalf("cron event type %q source %q", e.Type, e.Source)
		}
		var data struct{ Tick, Schedule string }
		if err := json.Unmarshal(e.Data, &data); err != nil || data.Tick != e.ID || data.Schedule != s.Schedule.String() {
			t.Fatalf("cron event data %s (%v), id %s", e.Data, err, e.ID)
		}
		if !e.Time.Equal(mustTick(t, e.ID)) {
			t.Fatalf("cron event time %v, id %s", e.Time, e.ID)
		}
		ids = append(ids, e.ID)
	}
	return ids
}

func mustTick(t *testing.T, id string) time.Time {
	t.Helper()
	tm, err := time.Parse(time.RFC3339, id)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

func hourly(t *testing.T, catchUp time.Duration) CronSpec {
	t.Helper()
	s, err := cron.Parse("0 * * * *", "")
	if err != nil {
		t.Fatal(err)
	}
	return CronSpec{App: "shop", Function: "report", ID: "hourly", Schedule: s, CatchUp: catchUp}
}

func newCron(t *testing.T, js jetstream.JetStream, l *Log, clk *fakeClock) *CronSource {
	t.Helper()
	c := NewCronSource(js, l, CronOptions{Logger: testLogger(), Now: clk.Now, After: clk.After})
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func equalIDs(got []string, want ...string) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}

// A tick appends one event; the next tick another; no tick, nothing.
func TestCronTickAppendsOneEvent(t *testing.T) {
	t.Parallel()
	l, st := openLog(t, LogConfig{})
	js := st.JetStream()
	clk := newFakeClock(time.Date(2026, 11, 23, 12, 10, 0, 0, time.UTC))
	c := newCron(t, js, l, clk)
	spec := hourly(t, cron.NoLimit)
	if err := c.Sync(context.Background(), "shop", []CronSpec{spec}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the loop to sleep", func() bool { return clk.pending() == 1 })
	if ids := cronEvents(t, js, spec); len(ids) != 0 {
		t.Fatalf("a new trigger fired before its first tick: %v", ids)
	}
	clk.Set(time.Date(2026, 11, 23, 13, 0, 2, 0, time.UTC))
	waitFor(t, "the 13:00 event", func() bool { return len(cronEvents(t, js, spec)) == 1 })
	waitFor(t, "the loop to sleep again", func() bool { return clk.pending() == 1 })
	clk.Set(time.Date(2026, 11, 23, 14, 0, 0, 0, time.UTC))
	waitFor(t, "the 14:00 event", func() bool { return len(cronEvents(t, js, spec)) == 2 })
	waitFor(t, "the loop to sleep again", func() bool { return clk.pending() == 1 })
	if ids := cronEvents(t, js, spec); !equalIDs(ids, "2026-11-23T13:00:00Z", "2026-11-23T14:00:00Z") {
		t.Fatalf("events %v", ids)
	}
}

// A restart after downtime fires the latest missed tick once, within the
// catch-up window, and nothing beyond it.
func TestCronCatchUpAfterRestart(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		catchUp time.Duration
		down    time.Duration // from 12:10 to the restart
		want    []string
	}{
		{"no limit, 5h down: latest tick once", cron.NoLimit, 5 * time.Hour, []string{"2026-11-23T17:00:00Z"}},
		{"window 1h covers the latest tick", time.Hour, 5*time.Hour + 30*time.Minute, []string{"2026-11-23T17:00:00Z"}},
		{"window 10m exceeded: nothing", 10 * time.Minute, 5*time.Hour + 30*time.Minute, nil},
		{"window 0 exceeded: nothing", 0, 5*time.Hour + 30*time.Minute, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			st := openStore(t, dir)
			l, err := OpenLog(context.Background(), st.JetStream(), LogConfig{Logger: testLogger()})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Date(2026, 11, 23, 12, 10, 0, 0, time.UTC)
			clk := newFakeClock(start)
			spec := hourly(t, tc.catchUp)
			c := NewCronSource(st.JetStream(), l, CronOptions{Logger: testLogger(), Now: clk.Now, After: clk.After})
			if err := c.Sync(context.Background(), "shop", []CronSpec{spec}); err != nil {
				t.Fatal(err)
			}
			if err := c.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			l.Close(context.Background())
			st.Close()

			// Restart on the same data directory, later.
			st = openStore(t, dir)
			t.Cleanup(func() { st.Close() })
			l, err = OpenLog(context.Background(), st.JetStream(), LogConfig{Logger: testLogger()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close(context.Background()) })
			clk = newFakeClock(start.Add(tc.down))
			c = newCron(t, st.JetStream(), l, clk)
			if err := c.Sync(context.Background(), "shop", []CronSpec{spec}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the loop to sleep", func() bool { return clk.pending() == 1 })
			if ids := cronEvents(t, st.JetStream(), spec); !equalIDs(ids, tc.want...) {
				t.Fatalf("events %v, want %v", ids, tc.want)
			}
		})
	}
}

// Sync without the trigger stops it and deletes its watermark; Close
// stops the rest.
func TestCronSyncRemovalStops(t *testing.T) {
	t.Parallel()
	l, st := openLog(t, LogConfig{})
	js := st.JetStream()
	clk := newFakeClock(time.Date(2026, 11, 23, 12, 10, 0, 0, time.UTC))
	c := newCron(t, js, l, clk)
	spec := hourly(t, cron.NoLimit)
	ctx := context.Background()
	if err := c.Sync(ctx, "shop", []CronSpec{spec}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the loop to sleep", func() bool { return clk.pending() == 1 })
	if err := c.Sync(ctx, "shop", nil); err != nil {
		t.Fatal(err)
	}
	clk.Set(time.Date(2026, 11, 23, 15, 0, 0, 0, time.UTC))
	if ids := cronEvents(t, js, spec); len(ids) != 0 {
		t.Fatalf("a removed trigger fired: %v", ids)
	}
	kv, err := js.KeyValue(ctx, CronBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx, cronKey(spec.App, spec.Function, spec.ID)); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("watermark of a removed trigger: %v", err)
	}
	// Re-created later: it owes nothing before its re-creation.
	if err := c.Sync(ctx, "shop", []CronSpec{spec}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the loop to sleep", func() bool { return clk.pending() >= 1 })
	if ids := cronEvents(t, js, spec); len(ids) != 0 {
		t.Fatalf("a re-created trigger fired for an old tick: %v", ids)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Sync(ctx, "shop", []CronSpec{spec}); !errors.Is(err, ErrCronClosed) {
		t.Fatalf("Sync after Close: %v", err)
	}
}

// Two sources (two nodes) firing the same tick store one event.
func TestCronDuplicateFiringStoredOnce(t *testing.T) {
	t.Parallel()
	l, st := openLog(t, LogConfig{})
	js := st.JetStream()
	clk := newFakeClock(time.Date(2026, 11, 23, 12, 10, 0, 0, time.UTC))
	spec := hourly(t, cron.NoLimit)
	ctx := context.Background()
	a, b := newCron(t, js, l, clk), newCron(t, js, l, clk)
	for _, c := range []*CronSource{a, b} {
		if err := c.Sync(ctx, "shop", []CronSpec{spec}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "both loops to sleep", func() bool { return clk.pending() == 2 })
	clk.Set(time.Date(2026, 11, 23, 13, 0, 0, 0, time.UTC))
	waitFor(t, "both loops to fire and sleep", func() bool { return clk.pending() == 2 })
	if ids := cronEvents(t, js, spec); !equalIDs(ids, "2026-11-23T13:00:00Z") {
		t.Fatalf("events %v", ids)
	}
	if st := l.Stats(); st.Duplicates != 1 {
		t.Fatalf("log duplicates %d, want 1", st.Duplicates)
	}
}

func TestCronSyncValidates(t *testing.T) {
	t.Parallel()
	l, st := openLog(t, LogConfig{})
	clk := newFakeClock(time.Date(2026, 11, 23, 12, 10, 0, 0, time.UTC))
	c := newCron(t, st.JetStream(), l, clk)
	good := hourly(t, 0)
	for _, tc := range []struct {
		name string
		edit func(*CronSpec)
	}{
		{"other app", func(s *CronSpec) { s.App = "other" }},
		{"no schedule", func(s *CronSpec) { s.Schedule = nil }},
		{"underscore in function", func(s *CronSpec) { s.Function = "a_b" }},
		{"dot in trigger", func(s *CronSpec) { s.ID = "a.b" }},
		{"empty trigger", func(s *CronSpec) { s.ID = "" }},
	} {
		s := good
		tc.edit(&s)
		if err := c.Sync(context.Background(), "shop", []CronSpec{s}); err == nil {
			t.Errorf("%s: Sync accepted %+v", tc.name, s)
		}
	}
	if err := c.Sync(context.Background(), "shop", []CronSpec{good, good}); err == nil {
		t.Error("Sync accepted a trigger listed twice")
	}
}
