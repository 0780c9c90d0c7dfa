package throttle

import (
	"container/heap"
	"context"
	"fmt"
	"math/bits"
	"sync"
	"time"
)

// Limiter applies one function's Policy to every invocation of it, whatever
// its source. It is safe for concurrent use. A nil *Limiter limits nothing.
//
// Lock order: Limiter.mu is a leaf; it is never held while calling the
// Clock except Now and AfterFunc/Stop (a fake clock runs timer callbacks
// outside its own lock, so they may take Limiter.mu), and never while
// blocking.
type Limiter struct {
	p      Policy
	clock  Clock
	epoch  time.Time
	noop   bool  // nothing to limit
	perKey bool  // key state is kept per key (else all share single)
	timed  bool  // rate or debounce: needs the clock
	gran   int64 // rate slot width, ns
	per    int64 // rate period, ns

	mu         sync.Mutex
	closed     bool
	inflight   int
	waiting    int // queued for a slot
	pending    int // held by debounce
	superseded uint64
	single     keyState
	keys       map[string]*keyState
	peak       int // largest len(keys) since the map was last rebuilt
	free       []*keyState
	ring       ring     // keys whose head waiter could start but for MaxConcurrency
	wakes      wakeHeap // keys waiting for time: rate or debounce
	idle       idleQueue
	timer      Timer
	timerAt    int64 // when timer fires, ns since epoch
	timerGen   uint64

	// onStart, set only by tests, sees every start under mu, and every
	// start handed back (undo) by a waiter whose context ended.
	onStart func(key string, at int64, undo bool)
}

// rateSlots is how many slots a rate period is cut into (see keyState).
const rateSlots = 64

// freeKeys caps the key states kept for reuse.
const freeKeys = 256

// NewLimiter returns a Limiter applying p, timed by clock (nil: the real
// clock).
func NewLimiter(p Policy, clock Clock) (*Limiter, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if clock == nil {
		clock = System()
	}
	l := &Limiter{
		p:      p,
		clock:  clock,
		epoch:  clock.Now(),
		noop:   p.MaxConcurrency == 0 && p.KeyConcurrency == 0 && p.Rate == 0 && p.Debounce == 0,
		perKey: p.KeyConcurrency > 0 || p.Rate > 0 || p.Debounce > 0,
		timed:  p.Rate > 0 || p.Debounce > 0,
		per:    int64(p.Per),
	}
	if p.Rate > 0 {
		l.gran = max(int64(p.Per)/rateSlots, 1)
	}
	l.single.heapIdx = -1
	l.keys = map[string]*keyState{}
	return l, nil
}

// Policy returns the limiter's policy.
func (l *Limiter) Policy() Policy {
	if l == nil {
		return Policy{}
	}
	return l.p
}

// Permit is the right to run one invocation. Call Release exactly once
// when the invocation ends, successfully or not. The zero Permit (what a
// Limiter without limits hands out) releases nothing.
type Permit struct {
	l   *Limiter
	k   *keyState
	gen uint32
}

// Release ends the invocation, letting waiters start.
func (p Permit) Release() {
	if p.l != nil {
		p.l.release(p.k, p.gen)
	}
}

// Acquire waits until an invocation with key (from KeySource; "" is a key
// like any other, shared by invocations without one) and priority (0..9,
// clamped) may start, and returns its Permit.
//
// It returns ErrSuperseded when debounce is on and a later request with the
// same key arrived before the quiet period ended; a *LimitError when ctx
// ended while waiting, or at once when ctx has a deadline and the rate
// limit alone rules out starting before it (RetryAfter says when it could);
// ErrClosed when the limiter was closed. A waiter whose ctx ends leaves no
// trace: a permit granted at the same instant is handed back.
//
// While waiting, the caller's goroutine blocks on a channel; there is no
// other goroutine per waiter.
func (l *Limiter) Acquire(ctx context.Context, key string, priority int) (Permit, error) {
	return l.AcquireOr(ctx, key, priority, nil)
}

// AcquireOr is Acquire that calls beforeWait, when not nil, once it knows
// the invocation has to wait (not when it may start at once), and returns
// its error without waiting if it fails: how a caller bounds the waiters
// it lets in without counting those that never wait.
func (l *Limiter) AcquireOr(ctx context.Context, key string, priority int, beforeWait func() error) (Permit, error) {
	if l == nil || l.noop {
		return Permit{}, nil
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return Permit{}, ErrClosed
	}
	var now int64
	if l.timed {
		now = l.now()
		l.sweepLocked(now)
	}
	k := l.keyLocked(key)
	if l.p.Debounce == 0 && k.head == nil && l.canStartLocked(k, now) {
		l.startLocked(k, now)
		p := Permit{l: l, k: k, gen: k.gen}
		l.mu.Unlock()
		return p, nil
	}
	if beforeWait != nil {
		if err := beforeWait(); err != nil {
			l.maybeIdleLocked(k, now)
			l.mu.Unlock()
			return Permit{}, err
		}
	}
	return l.wait(ctx, k, clampPriority(priority), now)
}

// wait is Acquire's slow path; l.mu is held and released here.
func (l *Limiter) wait(ctx context.Context, k *keyState, prio int8, now int64) (Permit, error) {
	if err := ctx.Err(); err != nil {
		le := l.blockedLocked(k, now)
		le.Err = context.Cause(ctx)
		l.maybeIdleLocked(k, now)
		l.mu.Unlock()
		return Permit{}, le
	}
	w := &waiter{ready: make(chan struct{}, 1), prio: prio, slot: -1}
	if l.p.Debounce > 0 {
		if old := k.pending; old != nil {
			old.state = stSuperseded
			old.ready <- struct{}{}
			l.pending--
			l.superseded++
		}
		w.state = stPending
		k.pending = w
		k.debounceAt = now + int64(l.p.Debounce)
		l.pending++
	} else {
		if l.p.Rate > 0 {
			if dl, ok := ctx.Deadline(); ok {
				if at := k.startsAt(l, now, k.ahead(prio)); at > now && time.Until(dl) < time.Duration(at-now) {
					l.maybeIdleLocked(k, now)
					l.mu.Unlock()
					return Permit{}, &LimitError{Limit: LimitRate, Key: k.name, RetryAfter: time.Duration(at - now)}
				}
			}
		}
		w.state = stQueued
		k.enqueue(w)
		l.waiting++
	}
	l.updateLocked(k, now)
	l.pumpLocked(now)
	l.armLocked(now)
	l.mu.Unlock()

	select {
	case <-w.ready:
		return l.result(w, k)
	case <-ctx.Done():
	}
	l.mu.Lock()
	if l.timed {
		now = l.now()
	}
	var le *LimitError
	switch w.state {
	case stGranted:
		// Granted as ctx ended: hand the permit back, rate slot included.
		le = &LimitError{Limit: LimitConcurrency, Key: k.name}
		k.inflight--
		l.inflight--
		if w.slot >= 0 {
			k.refund(w.slot)
		}
		if l.onStart != nil {
			l.onStart(k.name, w.at, true)
		}
	case stQueued:
		le = l.blockedLocked(k, now)
		k.unlink(w)
		l.waiting--
	case stPending:
		le = &LimitError{Limit: LimitDebounce, Key: k.name}
		k.pending = nil
		l.pending--
	default: // superseded or closed before ctx ended
		l.mu.Unlock()
		return l.result(w, k)
	}
	le.Err = context.Cause(ctx)
	l.updateLocked(k, now)
	l.pumpLocked(now)
	l.maybeIdleLocked(k, now)
	l.armLocked(now)
	l.mu.Unlock()
	return Permit{}, le
}

// result reads the outcome of a signalled waiter. The state was written
// before the signal (or under l.mu), so reading it needs no lock.
func (l *Limiter) result(w *waiter, k *keyState) (Permit, error) {
	switch w.state {
	case stGranted:
		return Permit{l: l, k: k, gen: w.gen}, nil
	case stSuperseded:
		return Permit{}, ErrSuperseded
	}
	return Permit{}, ErrClosed
}

func (l *Limiter) release(k *keyState, gen uint32) {
	l.mu.Lock()
	if k.gen != gen || k.inflight <= 0 {
		l.mu.Unlock()
		panic(fmt.Sprintf("flow: Permit of key %q released twice", k.name))
	}
	k.inflight--
	l.inflight--
	var now int64
	if l.timed {
		now = l.now()
	}
	if k.head != nil {
		l.updateLocked(k, now)
	}
	if l.ring.mask != 0 {
		l.pumpLocked(now)
	}
	l.maybeIdleLocked(k, now)
	if l.timed {
		l.sweepLocked(now)
		l.armLocked(now)
	}
	l.mu.Unlock()
}

// Stats is a snapshot of a Limiter.
type Stats struct {
	InFlight int // permits held
	Waiting  int // invocations waiting for a slot
	Pending  int // invocations held by debounce, waiting for quiet
	Keys     int // keys with state: in flight, waiting, or inside a rate window
	// Superseded counts the requests debounce has superseded, ever.
	Superseded uint64
}

// Stats reports the limiter's state, after dropping keys that have become
// idle.
func (l *Limiter) Stats() Stats {
	if l == nil {
		return Stats{}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.timed {
		l.sweepLocked(l.now())
	}
	return Stats{InFlight: l.inflight, Waiting: l.waiting, Pending: l.pending, Keys: len(l.keys), Superseded: l.superseded}
}

// Close fails every waiting and pending invocation with ErrClosed, and
// every later Acquire. Permits already granted may still be released.
func (l *Limiter) Close() {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.closed = true
	closeKey := func(k *keyState) {
		for w := k.head; w != nil; w = k.head {
			k.unlink(w)
			w.state = stClosed
			w.ready <- struct{}{}
		}
		if w := k.pending; w != nil {
			k.pending = nil
			w.state = stClosed
			w.ready <- struct{}{}
		}
		if k.inRing {
			l.ring.remove(k)
		}
	}
	closeKey(&l.single)
	for _, k := range l.keys {
		closeKey(k)
	}
	l.waiting, l.pending = 0, 0
	l.wakes = l.wakes[:0]
	if l.timer != nil {
		l.timer.Stop()
		l.timer = nil
		l.timerGen++
	}
}

func (l *Limiter) now() int64 { return int64(l.clock.Now().Sub(l.epoch)) }

// keyLocked returns the state of key, creating it.
func (l *Limiter) keyLocked(key string) *keyState {
	if !l.perKey {
		return &l.single
	}
	if k := l.keys[key]; k != nil {
		return k
	}
	var k *keyState
	if n := len(l.free); n > 0 {
		k = l.free[n-1]
		l.free = l.free[:n-1]
	} else {
		k = &keyState{heapIdx: -1}
	}
	k.name = key
	k.mapped = true
	l.keys[key] = k
	l.peak = max(l.peak, len(l.keys))
	return k
}

// canStartLocked reports whether an invocation of k may start now, all
// limits considered.
func (l *Limiter) canStartLocked(k *keyState, now int64) bool {
	return (l.p.MaxConcurrency == 0 || l.inflight < l.p.MaxConcurrency) && l.keyReadyLocked(k, now)
}

// keyReadyLocked reports whether k's own limits (concurrency, rate) let one
// more invocation start now.
func (l *Limiter) keyReadyLocked(k *keyState, now int64) bool {
	if l.p.KeyConcurrency > 0 && k.inflight >= l.p.KeyConcurrency {
		return false
	}
	return l.p.Rate == 0 || k.startsAt(l, now, 0) <= now
}

func (l *Limiter) startLocked(k *keyState, now int64) int64 {
	k.inflight++
	l.inflight++
	if l.onStart != nil {
		l.onStart(k.name, now, false)
	}
	if l.p.Rate > 0 {
		return k.record(l, now)
	}
	return -1
}

// blockedLocked says what holds back an invocation of k now.
func (l *Limiter) blockedLocked(k *keyState, now int64) *LimitError {
	switch {
	case l.p.Debounce > 0 && k.pending != nil:
		return &LimitError{Limit: LimitDebounce, Key: k.name}
	case l.p.KeyConcurrency > 0 && k.inflight >= l.p.KeyConcurrency:
		return &LimitError{Limit: LimitKeyConcurrency, Key: k.name}
	case l.p.Rate > 0:
		if at := k.startsAt(l, now, 0); at > now {
			return &LimitError{Limit: LimitRate, Key: k.name, RetryAfter: time.Duration(at - now)}
		}
	}
	return &LimitError{Limit: LimitConcurrency, Key: k.name}
}

// updateLocked re-files k after anything about it changed: in the ring if
// its head waiter could start but for MaxConcurrency, in the wake heap if
// it waits for time (its rate window, or the end of a debounce period).
func (l *Limiter) updateLocked(k *keyState, now int64) {
	want := int64(-1)
	runnable := false
	if k.head != nil && (l.p.KeyConcurrency == 0 || k.inflight < l.p.KeyConcurrency) {
		if l.p.Rate > 0 {
			if at := k.startsAt(l, now, 0); at > now {
				want = at
			} else {
				runnable = true
			}
		} else {
			runnable = true
		}
	}
	if k.pending != nil && (want < 0 || k.debounceAt < want) {
		want = k.debounceAt
	}
	if k.inRing && (!runnable || k.level != k.head.prio) {
		l.ring.remove(k)
	}
	if runnable && !k.inRing {
		l.ring.push(k, k.head.prio)
	}
	switch {
	case want < 0:
		if k.heapIdx >= 0 {
			heap.Remove(&l.wakes, k.heapIdx)
		}
	case k.heapIdx < 0:
		k.wakeAt = want
		heap.Push(&l.wakes, k)
	case k.wakeAt != want:
		k.wakeAt = want
		heap.Fix(&l.wakes, k.heapIdx)
	}
}

// pumpLocked starts waiters while the function has room: the highest
// priority first, and among keys whose head waiters share a priority,
// round robin, so a busy key cannot starve a quiet one.
func (l *Limiter) pumpLocked(now int64) {
	for l.p.MaxConcurrency == 0 || l.inflight < l.p.MaxConcurrency {
		k := l.ring.popBest()
		if k == nil {
			return
		}
		w := k.head
		k.unlink(w)
		l.waiting--
		w.slot, w.at = l.startLocked(k, now), now
		w.gen = k.gen
		w.state = stGranted
		w.ready <- struct{}{}
		l.updateLocked(k, now)
	}
}

// onTimer runs when the earliest wake-up is due. A timer replaced since
// it was armed (gen differs) does nothing: its replacement fires.
func (l *Limiter) onTimer(gen uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || gen != l.timerGen {
		return
	}
	l.timer, l.timerAt = nil, 0
	now := l.now()
	for len(l.wakes) > 0 && l.wakes[0].wakeAt <= now {
		k := heap.Pop(&l.wakes).(*keyState)
		if w := k.pending; w != nil && now >= k.debounceAt {
			// Quiet long enough: the burst's last request goes on to
			// queue for the other limits.
			k.pending = nil
			l.pending--
			w.state = stQueued
			k.enqueue(w)
			l.waiting++
		}
		l.updateLocked(k, now)
	}
	l.pumpLocked(now)
	l.sweepLocked(now)
	l.armLocked(now)
}

// armLocked makes sure the timer fires at the earliest wake-up or key
// expiry, if any.
func (l *Limiter) armLocked(now int64) {
	target := int64(-1)
	if len(l.wakes) > 0 {
		target = l.wakes[0].wakeAt
	}
	if e, ok := l.idle.front(); ok && (target < 0 || e.dropAt < target) {
		target = e.dropAt
	}
	if l.closed || target < 0 || l.timer != nil && l.timerAt <= target {
		// Nothing to wait for, or the armed timer fires first and re-arms.
		return
	}
	if l.timer != nil {
		l.timer.Stop()
	}
	l.timerGen++
	gen := l.timerGen
	l.timerAt = target
	l.timer = l.clock.AfterFunc(time.Duration(max(target-now, 0)), func() { l.onTimer(gen) })
}

// maybeIdleLocked drops k when nothing refers to it any more, or queues it
// to be dropped once its rate window is empty.
func (l *Limiter) maybeIdleLocked(k *keyState, now int64) {
	if !k.mapped || k.inflight > 0 || k.head != nil || k.pending != nil {
		return
	}
	if l.p.Rate > 0 {
		k.prune(l, now)
		if k.count > 0 {
			k.dropAt = k.expiry(l, k.slots[len(k.slots)-1].s)
			if !k.inIdle {
				k.inIdle = true
				l.idle.push(idleEntry{k: k, gen: k.gen, dropAt: k.dropAt})
			}
			return
		}
	}
	l.dropLocked(k)
}

func (l *Limiter) dropLocked(k *keyState) {
	delete(l.keys, k.name)
	if k.heapIdx >= 0 {
		heap.Remove(&l.wakes, k.heapIdx)
	}
	k.reset()
	if len(l.free) < freeKeys {
		l.free = append(l.free, k)
	}
	// Go maps never give memory back; rebuild a map that has shrunk to a
	// quarter of its peak, so a burst of distinct keys does not pin memory.
	if l.peak >= 1024 && len(l.keys) <= l.peak/4 {
		m := make(map[string]*keyState, len(l.keys))
		for name, k := range l.keys {
			m[name] = k
		}
		l.keys, l.peak = m, len(m)
	}
}

// sweepLocked drops keys whose rate window has emptied. Entries are in
// roughly expiry order; one that is not due yet stops the sweep, so every
// idle key is dropped at most one period after it went idle.
func (l *Limiter) sweepLocked(now int64) {
	for rounds := l.idle.len(); rounds > 0; rounds-- {
		e, ok := l.idle.front()
		if !ok {
			return
		}
		k := e.k
		if k.gen != e.gen || !k.mapped {
			l.idle.pop() // the key was dropped, perhaps reused
			continue
		}
		if k.inflight > 0 || k.head != nil || k.pending != nil {
			l.idle.pop() // busy again; re-queued when idle
			k.inIdle = false
			continue
		}
		if e.dropAt > now {
			return
		}
		k.prune(l, now)
		if k.count == 0 {
			l.idle.pop()
			l.dropLocked(k)
			continue
		}
		// Used again and idle again since queued: go to the back.
		l.idle.pop()
		k.dropAt = k.expiry(l, k.slots[len(k.slots)-1].s)
		l.idle.push(idleEntry{k: k, gen: k.gen, dropAt: k.dropAt})
	}
}

// keyState is what a Limiter knows of one key.
//
// Rate: starts are counted in slots of Per/64; a slot's starts count
// against the key until the slot's end plus Per. Counting a start from the
// end of its slot rather than its instant makes the limit conservative (at
// most Rate starts in any window of length Per, exactly) at the cost of a
// start coming up to Per/64 later than a per-start log would allow, and
// bounds memory to 65 slots per key whatever the rate.
type keyState struct {
	name     string
	gen      uint32 // bumped on reuse, so stale Permits and entries are caught
	mapped   bool
	inflight int

	head, tail *waiter // queued, by priority (highest first), then arrival

	inRing       bool
	level        int8
	rprev, rnext *keyState

	heapIdx int
	wakeAt  int64

	pending    *waiter // debounce: the last request of the current burst
	debounceAt int64

	slots []rateSlot // live slots, oldest first, from sh
	sh    int
	count int // starts in live slots

	inIdle bool
	dropAt int64
}

type rateSlot struct {
	s int64 // slot number: start time / gran
	n int32
}

func (k *keyState) reset() {
	*k = keyState{gen: k.gen + 1, heapIdx: -1, slots: k.slots[:0]}
}

func (k *keyState) expiry(l *Limiter, s int64) int64 { return (s+1)*l.gran + l.per }

func (k *keyState) prune(l *Limiter, now int64) {
	for k.sh < len(k.slots) && k.expiry(l, k.slots[k.sh].s) <= now {
		k.count -= int(k.slots[k.sh].n)
		k.sh++
	}
	if k.sh == len(k.slots) {
		k.slots, k.sh = k.slots[:0], 0
	} else if k.sh > 32 {
		n := copy(k.slots, k.slots[k.sh:])
		k.slots, k.sh = k.slots[:n], 0
	}
}

// startsAt returns the earliest time the rate limit lets a start happen
// with ahead other starts before it: exact for ahead 0, a lower bound
// otherwise.
func (k *keyState) startsAt(l *Limiter, now int64, ahead int) int64 {
	k.prune(l, now)
	need := k.count - l.p.Rate + ahead + 1 // starts that must leave the window first
	if need <= 0 {
		return now
	}
	seen := 0
	for _, sl := range k.slots[k.sh:] {
		seen += int(sl.n)
		if seen >= need {
			return k.expiry(l, sl.s)
		}
	}
	// Starts not recorded yet must leave the window too: they start no
	// earlier than now, and each further Rate of them a period later.
	m := need - k.count
	return now + int64(1+(m-1)/l.p.Rate)*l.per
}

// record counts a start at now and returns its slot.
func (k *keyState) record(l *Limiter, now int64) int64 {
	s := now / l.gran
	if n := len(k.slots); n > k.sh && k.slots[n-1].s == s {
		k.slots[n-1].n++
	} else {
		k.slots = append(k.slots, rateSlot{s: s, n: 1})
	}
	k.count++
	return s
}

// refund uncounts a start recorded in slot s, if it still counts.
func (k *keyState) refund(s int64) {
	for i := len(k.slots) - 1; i >= k.sh; i-- {
		if k.slots[i].s == s {
			if k.slots[i].n > 0 {
				k.slots[i].n--
				k.count--
			}
			return
		}
	}
}

// ahead counts queued waiters that would start before one of priority p
// (a lower bound, capped: it is only used to refuse early).
func (k *keyState) ahead(p int8) int {
	n := 0
	for w := k.head; w != nil && w.prio >= p && n < 64; w = w.next {
		n++
	}
	return n
}

// enqueue files w after every waiter of its priority or higher.
func (k *keyState) enqueue(w *waiter) {
	at := k.tail
	for at != nil && at.prio < w.prio {
		at = at.prev
	}
	w.prev = at
	if at == nil {
		w.next = k.head
		k.head = w
	} else {
		w.next = at.next
		at.next = w
	}
	if w.next == nil {
		k.tail = w
	} else {
		w.next.prev = w
	}
}

func (k *keyState) unlink(w *waiter) {
	if w.prev == nil {
		k.head = w.next
	} else {
		w.prev.next = w.next
	}
	if w.next == nil {
		k.tail = w.prev
	} else {
		w.next.prev = w.prev
	}
	w.prev, w.next = nil, nil
}

type waitState uint8

const (
	stQueued waitState = iota
	stPending
	stGranted
	stSuperseded
	stClosed
)

type waiter struct {
	ready      chan struct{} // buffered 1: signalled once, under Limiter.mu
	state      waitState
	prio       int8
	gen        uint32
	slot       int64 // rate slot counted at grant, -1 none
	at         int64 // when granted
	prev, next *waiter
}

// ring holds the keys whose head waiter could start but for the function's
// MaxConcurrency, one FIFO per priority of that head.
type ring struct {
	head, tail [levels]*keyState
	mask       uint16 // bit p set: level p is not empty
}

func (r *ring) push(k *keyState, level int8) {
	k.inRing, k.level = true, level
	k.rnext, k.rprev = nil, r.tail[level]
	if r.tail[level] != nil {
		r.tail[level].rnext = k
	} else {
		r.head[level] = k
	}
	r.tail[level] = k
	r.mask |= 1 << level
}

func (r *ring) remove(k *keyState) {
	lv := k.level
	if k.rprev == nil {
		r.head[lv] = k.rnext
	} else {
		k.rprev.rnext = k.rnext
	}
	if k.rnext == nil {
		r.tail[lv] = k.rprev
	} else {
		k.rnext.rprev = k.rprev
	}
	k.rprev, k.rnext, k.inRing = nil, nil, false
	if r.head[lv] == nil {
		r.mask &^= 1 << lv
	}
}

func (r *ring) popBest() *keyState {
	if r.mask == 0 {
		return nil
	}
	k := r.head[bits.Len16(r.mask)-1]
	r.remove(k)
	return k
}

// wakeHeap orders keys by wakeAt (container/heap).
type wakeHeap []*keyState

func (h wakeHeap) Len() int           { return len(h) }
func (h wakeHeap) Less(i, j int) bool { return h[i].wakeAt < h[j].wakeAt }
func (h wakeHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx, h[j].heapIdx = i, j
}
func (h *wakeHeap) Push(x any) {
	k := x.(*keyState)
	k.heapIdx = len(*h)
	*h = append(*h, k)
}
func (h *wakeHeap) Pop() any {
	old := *h
	k := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	k.heapIdx = -1
	return k
}

// idleQueue is a FIFO of keys waiting for their rate window to empty.
type idleQueue struct {
	q []idleEntry
	h int
}

type idleEntry struct {
	k      *keyState
	gen    uint32
	dropAt int64
}

func (q *idleQueue) len() int { return len(q.q) - q.h }

func (q *idleQueue) front() (idleEntry, bool) {
	if q.h == len(q.q) {
		return idleEntry{}, false
	}
	return q.q[q.h], true
}

func (q *idleQueue) push(e idleEntry) { q.q = append(q.q, e) }

func (q *idleQueue) pop() {
	q.q[q.h] = idleEntry{}
	q.h++
	switch {
	case q.h == len(q.q):
		q.q, q.h = q.q[:0], 0
		if cap(q.q) > 4096 {
			q.q = nil // let a drained burst's backing array go
		}
	case q.h > 1024 && q.h > len(q.q)/2:
		n := copy(q.q, q.q[q.h:])
		clear(q.q[n:])
		q.q, q.h = q.q[:n], 0
	}
}
