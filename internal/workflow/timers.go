package workflow

import (
	"container/heap"
	"context"
	"sync"
	"time"
)

// timers are the engine's pending wake-ups: one heap entry per sleeping
// run (about 145 bytes with its key: TestMemoryPerSleepingRun), fired by one goroutine. They are not
// the durable copy: a sleeping run's record holds its WakeAt, and
// Provision re-arms every timer from the records at start.
type timers struct {
	now  func() time.Time
	fire func(app, id string)

	mu    sync.Mutex
	h     timerHeap
	kick  chan struct{}
	armed map[string]time.Time // app/id -> earliest armed time (dedupe)
}

type timer struct {
	at      time.Time
	app, id string
}

type timerHeap []timer

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h timerHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)        { *h = append(*h, x.(timer)) }
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	*h = old[:len(old)-1]
	return t
}

func newTimers(now func() time.Time, fire func(app, id string)) *timers {
	return &timers{now: now, fire: fire, kick: make(chan struct{}, 1), armed: map[string]time.Time{}}
}

// add arms a wake-up of app/id at (never before) at.
func (t *timers) add(at time.Time, app, id string) {
	key := runKey(app, id)
	t.mu.Lock()
	if old, ok := t.armed[key]; ok && !at.Before(old) {
		t.mu.Unlock()
		return
	}
	t.armed[key] = at
	heap.Push(&t.h, timer{at: at, app: app, id: id})
	t.mu.Unlock()
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// Len is the number of armed timers.
func (t *timers) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.armed)
}

// popDue removes and returns the timers due at now (at or before it), each
// run once however often it was armed, and the time until the next one.
func (t *timers) popDue(now time.Time) (due []timer, next time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for len(t.h) > 0 && !t.h[0].at.After(now) {
		tm := heap.Pop(&t.h).(timer)
		key := runKey(tm.app, tm.id)
		if at, ok := t.armed[key]; ok && at.Equal(tm.at) {
			delete(t.armed, key)
			due = append(due, tm)
		}
	}
	next = time.Hour
	if len(t.h) > 0 {
		next = min(next, t.h[0].at.Sub(now))
	}
	return due, next
}

// run fires due timers until ctx ends.
func (t *timers) run(ctx context.Context) {
	wait := time.NewTimer(time.Hour)
	defer wait.Stop()
	for {
		due, next := t.popDue(t.now())
		for _, tm := range due {
			t.fire(tm.app, tm.id)
		}
		wait.Reset(next)
		select {
		case <-ctx.Done():
			return
		case <-t.kick:
		case <-wait.C:
		}
	}
}
