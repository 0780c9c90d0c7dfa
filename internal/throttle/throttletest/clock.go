// Package throttletest provides a fake clock for tests of code that uses
// flow.Limiter (or anything else that takes a flow.Clock): time moves only
// when the test says so, and timers fire synchronously in Advance. It does
// not import flow (flow's own tests use it); *Clock satisfies flow.Clock.
package throttletest

import (
	"sort"
	"sync"
	"time"
)

// Clock is a fake flow.Clock. Its zero value is not usable; call New.
type Clock struct {
	mu     sync.Mutex
	now    time.Time
	seq    uint64
	timers []*timer // unsorted; few at a time
}

type timer struct {
	c   *Clock
	at  time.Time
	seq uint64
	f   func()
}

// New returns a fake clock reading start.
func New(start time.Time) *Clock { return &Clock{now: start} }

// Now returns the fake time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// AfterFunc schedules f to run when Advance moves the clock to or past now+d.
func (c *Clock) AfterFunc(d time.Duration, f func()) interface{ Stop() bool } {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	t := &timer{c: c, at: c.now.Add(d), seq: c.seq, f: f}
	c.timers = append(c.timers, t)
	return t
}

// Stop cancels the timer and reports whether it was still pending.
func (t *timer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	for i, x := range t.c.timers {
		if x == t {
			t.c.timers = append(t.c.timers[:i], t.c.timers[i+1:]...)
			return true
		}
	}
	return false
}

// Advance moves the clock forward by d, firing every timer that comes due,
// in time order, each with the clock reading its due time. Timers scheduled
// by the callbacks fire too if they fall within d. Callbacks run on the
// caller's goroutine, without the clock's lock held.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	end := c.now.Add(d)
	c.mu.Unlock()
	c.AdvanceTo(end)
}

// AdvanceTo moves the clock to end (never backwards), firing due timers.
func (c *Clock) AdvanceTo(end time.Time) {
	for {
		c.mu.Lock()
		t := c.nextLocked()
		if t == nil || t.at.After(end) {
			if end.After(c.now) {
				c.now = end
			}
			c.mu.Unlock()
			return
		}
		c.removeLocked(t)
		if t.at.After(c.now) {
			c.now = t.at
		}
		c.mu.Unlock()
		t.f()
	}
}

// Next reports when the earliest pending timer is due.
func (c *Clock) Next() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.nextLocked()
	if t == nil {
		return time.Time{}, false
	}
	return t.at, true
}

// Step advances to the earliest pending timer and fires it (and any other
// timer due at the same instant). It reports false when no timer is pending.
func (c *Clock) Step() bool {
	at, ok := c.Next()
	if ok {
		c.AdvanceTo(at)
	}
	return ok
}

// Pending reports how many timers are scheduled.
func (c *Clock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

func (c *Clock) nextLocked() *timer {
	if len(c.timers) == 0 {
		return nil
	}
	sort.Slice(c.timers, func(i, j int) bool {
		a, b := c.timers[i], c.timers[j]
		if a.at.Equal(b.at) {
			return a.seq < b.seq
		}
		return a.at.Before(b.at)
	})
	return c.timers[0]
}

func (c *Clock) removeLocked(t *timer) {
	for i, x := range c.timers {
		if x == t {
			c.timers = append(c.timers[:i], c.timers[i+1:]...)
			return
		}
	}
}
