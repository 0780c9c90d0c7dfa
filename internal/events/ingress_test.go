package events_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/events"
	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/store"
)

// held holds every invocation until open is closed: delivery that falls
// behind.
type held struct {
	inv  events.Invoker
	open chan struct{}
}

func (g held) Invoke(ctx context.Context, app, fn string, req *runtime.Request) (*runtime.Response, error) {
	select {
	case <-g.open:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return g.inv.Invoke(ctx, app, fn, req)
}

// clock is a settable clock.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *clock) now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) add(d time.Duration) { c.ns.Add(int64(d)) }

func backpressureOf(err error) *events.BackpressureError {
	var be *events.BackpressureError
	errors.As(err, &be)
	return be
}

// An app whose trigger falls behind by more than MaxLag events gets its
// publishes refused (a BackpressureError with a Retry-After), measured at
// most once per LagInterval; once delivery catches up, they are accepted
// again.
func TestIngressRefusesWhileTriggersLag(t *testing.T) {
	t.Parallel()
	open := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(open) }) }
	e := &env{t: t, dir: t.TempDir(), opts: events.DispatcherOptions{Concurrency: 2}, fns: []string{"a"}}
	e.open(func(inv events.Invoker) events.Invoker { return held{inv: inv, open: open} })
	t.Cleanup(e.close)
	t.Cleanup(release) // before close: the held invocations end
	e.sync(spec("a", "0", "orders"))
	clk := newClock()
	in := events.NewIngress(e.log, e.disp, events.IngressOptions{MaxLag: 5, LagInterval: time.Second, Now: clk.now, Logger: quietLogger()})
	ctx := context.Background()
	if err := in.Admit(ctx, testApp, 10); err != nil {
		t.Fatalf("no lag yet: %v", err)
	}
	var evs []*cloudevents.Event
	for i := range 10 {
		evs = append(evs, event(fmt.Sprint("e", i), "ok", ""))
	}
	e.publish("orders", evs...)
	// The lag measured before the publish is used for LagInterval.
	if err := in.Admit(ctx, testApp, 1); err != nil {
		t.Fatalf("within the lag interval the last measure holds: %v", err)
	}
	// The consumer's info may count the new message a moment after the
	// commit: measure again (a LagInterval later each time) until it does.
	var err error
	waitFor(t, "the lag measured", func() error {
		clk.add(time.Second)
		if err = in.Admit(ctx, testApp, 1); err == nil {
			return errors.New("admitted")
		}
		return nil
	})
	be := backpressureOf(err)
	if !errors.Is(err, events.ErrBackpressure) || be == nil || be.Limit != events.LimitLag || be.Value != 10 || be.Max != 5 || be.RetryAfter != time.Second {
		t.Fatalf("10 events behind, limit 5: got %#v (%v)", be, err)
	}
	if msg := err.Error(); !strings.Contains(msg, `app "shop" has 10 events waiting`) || !strings.Contains(msg, "--events-max-lag") {
		t.Fatalf("message %q does not say what is wrong and what to do", msg)
	}
	// Another app is not held back by this one's lag.
	if err := in.Admit(ctx, "other", 1); err != nil {
		t.Fatalf("other app: %v", err)
	}

	release()
	e.waitSucceeded(ids("a", "e", 10))
	if err := in.Admit(ctx, testApp, 1); err == nil {
		t.Fatal("the lag was measured again before LagInterval passed")
	}
	waitFor(t, "publishes accepted again", func() error {
		clk.add(time.Second)
		return in.Admit(ctx, testApp, 1)
	})
}

// The node refuses publishes while it holds MaxWindowEvents ids in the
// duplicate window (what the server keeps in memory for deduplication),
// and accepts them again as the window slides past them. Entries without
// an id and duplicates hold nothing.
func TestIngressRefusesOverWindowBudget(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, err := store.Open(ctx, store.Options{DataDir: t.TempDir(), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clk := newClock()
	log, err := events.OpenLog(ctx, st.JetStream(), events.LogConfig{Logger: quietLogger(), Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close(ctx) })
	in := events.NewIngress(log, nil, events.IngressOptions{MaxWindowEvents: 10, Logger: quietLogger()})
	appendN := func(prefix string, n int, withID bool) {
		t.Helper()
		ents := make([]events.Entry, n)
		for i := range ents {
			ents[i] = events.Entry{Subject: "nimbus.events.shop.orders", Data: []byte("x")}
			if withID {
				ents[i].MsgID = fmt.Sprint(prefix, i)
			}
		}
		if _, err := log.Append(ctx, ents...); err != nil {
			t.Fatal(err)
		}
	}
	appendN("a", 6, true)
	clk.add(time.Minute)
	appendN("b", 2, true)
	appendN("a", 6, true) // duplicates: stored once already
	appendN("", 20, false)
	if got := log.WindowEvents(); got != 8 {
		t.Fatalf("WindowEvents %d, want 8", got)
	}
	if err := in.Admit(ctx, testApp, 2); err != nil {
		t.Fatalf("8+2 ids, limit 10: %v", err)
	}
	err = in.Admit(ctx, testApp, 3)
	be := backpressureOf(err)
	// 1 id over: the 6 ids of a minute ago leave the window first, a
	// minute from now.
	if be == nil || be.Limit != events.LimitWindow || be.Value != 8 || be.Window != events.DefaultDuplicateWindow ||
		be.RetryAfter < time.Minute || be.RetryAfter > time.Minute+2*time.Second {
		t.Fatalf("8+3 ids, limit 10: got %#v (%v)", be, err)
	}
	if !strings.Contains(err.Error(), "--events-max-window-events") {
		t.Fatalf("message %q does not say what to do", err)
	}
	clk.add(be.RetryAfter)
	if err := in.Admit(ctx, testApp, 3); err != nil {
		t.Fatalf("after Retry-After: %v", err)
	}
	if got := log.WindowEvents(); got != 2 {
		t.Fatalf("WindowEvents %d after the first ids left the window, want 2", got)
	}
}

// A data directory of an earlier version has the events stream with a
// 10-minute duplicate window; opening the log updates it, and a duplicate
// within the new window is still stored once.
func TestOpenLogUpdatesDuplicateWindow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, err := store.Open(ctx, store.Options{DataDir: t.TempDir(), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	old, err := events.OpenLog(ctx, st.JetStream(), events.LogConfig{Logger: quietLogger(), DuplicateWindow: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ent := events.Entry{Subject: "nimbus.events.shop.orders", MsgID: "id-1", Data: []byte("x")}
	if _, err := old.Append(ctx, ent); err != nil {
		t.Fatal(err)
	}
	old.Close(ctx)
	log, err := events.OpenLog(ctx, st.JetStream(), events.LogConfig{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { log.Close(ctx) })
	s, err := st.JetStream().Stream(ctx, log.Stream())
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.Duplicates; got != 2*time.Minute {
		t.Fatalf("duplicate window after the update: %s, want 2m", got)
	}
	acks, err := log.Append(ctx, ent)
	if err != nil {
		t.Fatal(err)
	}
	if !acks[0].Duplicate {
		t.Fatal("a re-sent id within the window was stored again")
	}
}
