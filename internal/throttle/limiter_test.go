package throttle

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/throttle/throttletest"
)

var _ Clock = (*throttletest.Clock)(nil)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func newLimiter(t testing.TB, p Policy) (*Limiter, *throttletest.Clock) {
	t.Helper()
	c := throttletest.New(t0)
	l, err := NewLimiter(p, c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return l, c
}

// checkFor polls cond until it holds or the deadline passes.
func checkFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		runtime.Gosched()
		time.Sleep(50 * time.Microsecond)
	}
}

type result struct {
	id     int
	permit Permit
	err    error
}

// async starts Acquire in a goroutine owned by the test; the result arrives
// on the returned channel.
func async(t testing.TB, ctx context.Context, l *Limiter, key string, prio, id int) <-chan result {
	ch := make(chan result, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p, err := l.Acquire(ctx, key, prio)
		ch <- result{id: id, permit: p, err: err}
	}()
	t.Cleanup(func() {
		l.Close() // a failed test leaves no waiter behind
		wg.Wait()
	})
	return ch
}

// asyncQueued starts Acquire and waits until the limiter counts it as
// waiting (or pending), so arrival order is known.
func asyncQueued(t testing.TB, ctx context.Context, l *Limiter, key string, prio, id int) <-chan result {
	t.Helper()
	before := l.Stats()
	ch := async(t, ctx, l, key, prio, id)
	checkFor(t, fmt.Sprintf("request %d to wait", id), func() bool {
		s := l.Stats()
		return uint64(s.Waiting+s.Pending)+s.Superseded > uint64(before.Waiting+before.Pending)+before.Superseded || len(ch) > 0
	})
	return ch
}

func mustAcquire(t testing.TB, l *Limiter, key string) Permit {
	t.Helper()
	p, err := l.Acquire(context.Background(), key, DefaultPriority)
	if err != nil {
		t.Fatalf("Acquire(%q): %v", key, err)
	}
	return p
}

func recv(t testing.TB, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no result")
		return result{}
	}
}

func notReady(t testing.TB, ch <-chan result, what string) {
	t.Helper()
	runtime.Gosched()
	select {
	case r := <-ch:
		t.Fatalf("%s: got a result (err %v), want it still waiting", what, r.err)
	default:
	}
}

func TestZeroPolicyLimitsNothing(t *testing.T) {
	l, _ := newLimiter(t, Policy{})
	var ps []Permit
	for i := 0; i < 1000; i++ {
		ps = append(ps, mustAcquire(t, l, fmt.Sprint(i)))
	}
	for _, p := range ps {
		p.Release()
	}
	if s := l.Stats(); s != (Stats{}) {
		t.Fatalf("stats %+v, want zero", s)
	}
	var nilL *Limiter
	p, err := nilL.Acquire(context.Background(), "k", 0)
	if err != nil {
		t.Fatal(err)
	}
	p.Release()
}

func TestValidate(t *testing.T) {
	for _, p := range []Policy{
		{MaxConcurrency: -1}, {KeyConcurrency: -1}, {Rate: -1}, {Rate: 1}, {Per: time.Second}, {Debounce: -1},
	} {
		if _, err := NewLimiter(p, nil); err == nil {
			t.Errorf("NewLimiter(%+v): no error", p)
		}
	}
}

// TestControlsAlone checks each control on its own: how many of a batch of
// requests start at once, and that the rest start when the limit lifts.
func TestControlsAlone(t *testing.T) {
	tests := []struct {
		name    string
		policy  Policy
		keys    []string // one request each, in order
		started int      // how many start at once
		lift    func(c *throttletest.Clock, held []Permit)
	}{
		{"max concurrency", Policy{MaxConcurrency: 2}, []string{"a", "b", "c", "a"}, 2,
			func(c *throttletest.Clock, held []Permit) { held[0].Release(); held[1].Release() }},
		{"key concurrency", Policy{KeyConcurrency: 1}, []string{"a", "b", "c", "a", "b"}, 3,
			func(c *throttletest.Clock, held []Permit) {
				for _, p := range held {
					p.Release()
				}
			}},
		{"rate", Policy{Rate: 2, Per: time.Second}, []string{"a", "a", "b", "a", "a"}, 3,
			func(c *throttletest.Clock, held []Permit) { c.Advance(time.Second + time.Second/rateSlots) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, c := newLimiter(t, tt.policy)
			var held []Permit
			var waiting []<-chan result
			for i, k := range tt.keys {
				if len(held) < tt.started {
					held = append(held, mustAcquire(t, l, k))
					continue
				}
				waiting = append(waiting, asyncQueued(t, context.Background(), l, k, DefaultPriority, i))
			}
			if s := l.Stats(); s.InFlight != tt.started || s.Waiting != len(tt.keys)-tt.started {
				t.Fatalf("stats %+v, want %d in flight and %d waiting", s, tt.started, len(tt.keys)-tt.started)
			}
			for _, ch := range waiting {
				notReady(t, ch, "before the limit lifts")
			}
			tt.lift(c, held)
			for _, ch := range waiting {
				r := recv(t, ch)
				if r.err != nil {
					t.Fatalf("request %d: %v", r.id, r.err)
				}
				r.permit.Release()
			}
		})
	}
}

func TestRateSlidingWindow(t *testing.T) {
	l, c := newLimiter(t, Policy{Rate: 3, Per: time.Second})
	var starts []time.Time
	l.onStart = func(string, int64, bool) { starts = append(starts, c.Now()) }
	// Four requests at once: three start, the fourth one period later.
	for i := 0; i < 3; i++ {
		mustAcquire(t, l, "k").Release()
	}
	ch := asyncQueued(t, context.Background(), l, "k", 0, 3)
	c.Advance(time.Second + time.Second/rateSlots - time.Nanosecond)
	notReady(t, ch, "just before the window moves")
	c.Advance(time.Nanosecond)
	r := recv(t, ch)
	if r.err != nil {
		t.Fatal(r.err)
	}
	r.permit.Release()
	if got := starts[3].Sub(starts[0]); got < time.Second || got > time.Second+time.Second/rateSlots {
		t.Fatalf("fourth start %s after the first, want one period (+ at most a slot)", got)
	}
}

func TestRateRefusesPastDeadline(t *testing.T) {
	l, _ := newLimiter(t, Policy{Rate: 1, Per: time.Hour})
	mustAcquire(t, l, "k").Release()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := l.Acquire(ctx, "k", 5)
	var le *LimitError
	if !errors.As(err, &le) || !errors.Is(err, ErrRateLimited) || !errors.Is(err, ErrLimited) {
		t.Fatalf("err %v, want a rate LimitError", err)
	}
	if le.RetryAfter < time.Hour-time.Minute || le.RetryAfter > time.Hour+time.Hour/rateSlots {
		t.Fatalf("RetryAfter %s, want about an hour", le.RetryAfter)
	}
	// Another key is not limited; without a deadline, the caller waits.
	mustAcquire(t, l, "other").Release()
	if s := l.Stats(); s.Waiting != 0 || s.Keys != 2 {
		t.Fatalf("stats %+v", s)
	}
	if reason := Reason(err); reason != "flow_rate" {
		t.Fatalf("Reason = %q, want flow_rate", reason)
	}
}

func TestDebounceRunsTheLastOfABurst(t *testing.T) {
	l, c := newLimiter(t, Policy{Debounce: 2 * time.Second})
	first := asyncQueued(t, context.Background(), l, "a", 5, 1)
	other := asyncQueued(t, context.Background(), l, "b", 5, 9)
	c.Advance(time.Second)
	second := asyncQueued(t, context.Background(), l, "a", 5, 2)
	if r := recv(t, first); !errors.Is(r.err, ErrSuperseded) {
		t.Fatalf("first: %v, want ErrSuperseded", r.err)
	}
	c.Advance(time.Second) // b has been quiet 2s: it runs; a only 1s.
	r := recv(t, other)
	if r.err != nil {
		t.Fatal(r.err)
	}
	r.permit.Release()
	third := asyncQueued(t, context.Background(), l, "a", 5, 3)
	if r := recv(t, second); !errors.Is(r.err, ErrSuperseded) {
		t.Fatalf("second: %v, want ErrSuperseded", r.err)
	}
	c.Advance(2*time.Second - time.Nanosecond)
	notReady(t, third, "before the quiet period ends")
	c.Advance(time.Nanosecond)
	r = recv(t, third)
	if r.err != nil {
		t.Fatal(r.err)
	}
	// A request after the burst ended starts a new burst; it does not
	// supersede the one already running.
	fourth := asyncQueued(t, context.Background(), l, "a", 5, 4)
	r.permit.Release()
	c.Advance(2 * time.Second)
	if r := recv(t, fourth); r.err != nil {
		t.Fatal(r.err)
	} else {
		r.permit.Release()
	}
	if reason := Reason(ErrSuperseded); reason != ReasonSuperseded {
		t.Fatalf("Reason(ErrSuperseded) = %q", reason)
	}
	checkFor(t, "keys to be dropped", func() bool { return l.Stats() == Stats{Superseded: 2} })
}

// TestCombined checks controls together: the last of a debounced burst
// still queues for the key's concurrency and rate.
func TestCombined(t *testing.T) {
	l, c := newLimiter(t, Policy{MaxConcurrency: 3, KeyConcurrency: 1, Rate: 2, Per: time.Minute, Debounce: time.Second})
	var starts []string
	l.onStart = func(k string, _ int64, _ bool) { starts = append(starts, k) }
	run := func(key string) <-chan result { return asyncQueued(t, context.Background(), l, key, 5, 0) }
	a1 := run("a")
	c.Advance(time.Second)
	p := recv(t, a1).permit // a in flight
	a2 := run("a")
	c.Advance(time.Second) // a2 quiet, but a is at its key concurrency
	notReady(t, a2, "key concurrency")
	if s := l.Stats(); s.Waiting != 1 || s.Pending != 0 {
		t.Fatalf("stats %+v", s)
	}
	p.Release()
	r := recv(t, a2)
	r.permit.Release()
	a3 := run("a")
	c.Advance(time.Second) // quiet, free, but 2 starts of a within the minute
	notReady(t, a3, "rate")
	c.Advance(time.Minute)
	recv(t, a3).permit.Release()
	if fmt.Sprint(starts) != "[a a a]" {
		t.Fatalf("starts %v", starts)
	}
}

func TestPriorityOrder(t *testing.T) {
	l, _ := newLimiter(t, Policy{MaxConcurrency: 1})
	hold := mustAcquire(t, l, "")
	prios := []int{1, 5, 9, 5, 0, 12, -3}
	out := make(chan result, len(prios))
	var chans []<-chan result
	for i, p := range prios {
		chans = append(chans, asyncQueued(t, context.Background(), l, "", p, i))
	}
	var wg sync.WaitGroup
	for _, ch := range chans {
		wg.Add(1)
		go func() { defer wg.Done(); out <- recv(t, ch) }()
	}
	var order []int
	hold.Release()
	for range prios {
		r := <-out
		order = append(order, r.id)
		r.permit.Release()
	}
	wg.Wait()
	// 12 clamps to 9 and -3 to 0; ties go in arrival order.
	if got, want := fmt.Sprint(order), "[2 5 1 3 0 4 6]"; got != want {
		t.Fatalf("start order %s, want %s", got, want)
	}
}

// TestFairnessBetweenKeys: a key with a long queue does not hold back a key
// that arrived later.
func TestFairnessBetweenKeys(t *testing.T) {
	l, _ := newLimiter(t, Policy{MaxConcurrency: 1, KeyConcurrency: 5})
	hold := mustAcquire(t, l, "x")
	var chans []<-chan result
	for i := 0; i < 4; i++ {
		chans = append(chans, asyncQueued(t, context.Background(), l, "busy", 5, i))
	}
	chans = append(chans, asyncQueued(t, context.Background(), l, "quiet", 5, 100))
	hold.Release()
	var order []int
	for len(order) < len(chans) {
		for _, ch := range chans {
			select {
			case r := <-ch:
				order = append(order, r.id)
				r.permit.Release()
			default:
			}
		}
		runtime.Gosched()
	}
	if order[1] != 100 {
		t.Fatalf("order %v: the quiet key should start second", order)
	}
}

func TestCancelLeavesNoTrace(t *testing.T) {
	tests := []struct {
		name   string
		policy Policy
		setup  func(l *Limiter) // makes the next "k" request wait
		limit  string
	}{
		{"concurrency", Policy{MaxConcurrency: 1}, func(l *Limiter) { mustAcquire(t, l, "k") }, LimitConcurrency},
		{"key concurrency", Policy{KeyConcurrency: 1}, func(l *Limiter) { mustAcquire(t, l, "k") }, LimitKeyConcurrency},
		{"rate", Policy{Rate: 1, Per: time.Hour}, func(l *Limiter) { mustAcquire(t, l, "k").Release() }, LimitRate},
		{"debounce", Policy{Debounce: time.Hour}, func(*Limiter) {}, LimitDebounce},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, _ := newLimiter(t, tt.policy)
			tt.setup(l)
			before := l.Stats()
			ctx, cancel := context.WithCancel(context.Background())
			ch := asyncQueued(t, ctx, l, "k", 5, 0)
			cancel()
			r := recv(t, ch)
			var le *LimitError
			if !errors.As(r.err, &le) || le.Limit != tt.limit || !errors.Is(r.err, context.Canceled) {
				t.Fatalf("err %v, want a %s LimitError wrapping context.Canceled", r.err, tt.limit)
			}
			if s := l.Stats(); s != before {
				t.Fatalf("stats %+v after cancel, want %+v", s, before)
			}
		})
	}
}

// TestCancelRacingGrant cancels waiters while permits are handed to them:
// whichever wins, the in-flight count ends where it started.
func TestCancelRacingGrant(t *testing.T) {
	l, _ := newLimiter(t, Policy{MaxConcurrency: 1})
	for i := 0; i < 200; i++ {
		hold := mustAcquire(t, l, "")
		ctx, cancel := context.WithCancel(context.Background())
		ch := asyncQueued(t, ctx, l, "", 5, i)
		go cancel()
		hold.Release()
		if r := recv(t, ch); r.err == nil {
			r.permit.Release()
		}
		cancel()
		if s := l.Stats(); s.InFlight != 0 || s.Waiting != 0 {
			t.Fatalf("round %d: stats %+v", i, s)
		}
	}
}

func TestClose(t *testing.T) {
	l, _ := newLimiter(t, Policy{MaxConcurrency: 1, Debounce: time.Hour})
	a := asyncQueued(t, context.Background(), l, "a", 5, 0)
	l.Close()
	if r := recv(t, a); !errors.Is(r.err, ErrClosed) {
		t.Fatalf("err %v, want ErrClosed", r.err)
	}
	if _, err := l.Acquire(context.Background(), "a", 5); !errors.Is(err, ErrClosed) {
		t.Fatalf("err %v, want ErrClosed", err)
	}
}

func TestDoubleReleasePanics(t *testing.T) {
	l, _ := newLimiter(t, Policy{KeyConcurrency: 1})
	p := mustAcquire(t, l, "k")
	p.Release()
	defer func() {
		if recover() == nil {
			t.Fatal("second Release did not panic")
		}
	}()
	p.Release()
}

// TestManyKeysMemoryBound: 100k distinct keys come and go; the limiter
// forgets them all once their rate windows are over, and gives the memory
// back.
func TestManyKeysMemoryBound(t *testing.T) {
	const n = 100_000
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	l, c := newLimiter(t, Policy{KeyConcurrency: 2, Rate: 10, Per: time.Second})
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("tenant-%06d", i)
	}
	base := heap()
	for _, k := range keys {
		mustAcquire(t, l, k).Release()
	}
	if s := l.Stats(); s.Keys != n {
		t.Fatalf("%d keys inside their rate window, want %d", s.Keys, n)
	}
	peak := heap()
	c.Advance(time.Second + time.Second/rateSlots) // the timer sweeps
	l.mu.Lock()
	keysLeft, free := len(l.keys), len(l.free)
	l.mu.Unlock()
	if keysLeft != 0 || free > freeKeys {
		t.Fatalf("%d keys, %d free states after the window", keysLeft, free)
	}
	after := heap()
	t.Logf("heap: base %d, peak %d (+%d B/key), after %d", base, peak, (peak-base)/n, after)
	if after > base && after-base > (peak-base)/4 {
		t.Fatalf("heap %d after the keys went, %d at peak, %d before: memory not given back", after, peak, base)
	}
	// Without a rate, keys go as soon as they are idle.
	l2, _ := newLimiter(t, Policy{KeyConcurrency: 1})
	for _, k := range keys[:1000] {
		mustAcquire(t, l2, k).Release()
	}
	if s := l2.Stats(); s.Keys != 0 {
		t.Fatalf("%d keys left", s.Keys)
	}
	runtime.KeepAlive(keys)
}

// TestHammer runs many goroutines over many keys with every limit on, the
// fake clock moving underneath, and checks the invariants at every start.
func TestHammer(t *testing.T) {
	const (
		workers  = 32
		perWork  = 150
		keys     = 7
		maxConc  = 4
		keyConc  = 2
		rate     = 5
		per      = 100 * time.Millisecond
		prioSeed = 3
	)
	l, c := newLimiter(t, Policy{MaxConcurrency: maxConc, KeyConcurrency: keyConc, Rate: rate, Per: per})
	var failed atomic.Value
	fail := func(format string, args ...any) { failed.CompareAndSwap(nil, fmt.Sprintf(format, args...)) }
	startsMu := sync.Mutex{}
	starts := map[string][]int64{}
	l.onStart = func(k string, at int64, undo bool) { // under l.mu
		startsMu.Lock()
		defer startsMu.Unlock()
		if !undo {
			starts[k] = append(starts[k], at)
			return
		}
		ts := starts[k]
		for i := len(ts) - 1; i >= 0; i-- {
			if ts[i] == at {
				starts[k] = append(ts[:i], ts[i+1:]...)
				return
			}
		}
		fail("undo of a start that was not recorded")
	}
	var inflight atomic.Int32
	var perKey [keys]atomic.Int32
	var wg sync.WaitGroup
	var done atomic.Int32
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer done.Add(1)
			for i := 0; i < perWork; i++ {
				ki := (w*31 + i*7) % keys
				ctx := context.Background()
				var cancel context.CancelFunc = func() {}
				if i%10 == 9 {
					ctx, cancel = context.WithCancel(ctx)
					if i%20 == 19 {
						cancel() // some give up at once, some while waiting
					} else {
						go cancel()
					}
				}
				p, err := l.Acquire(ctx, fmt.Sprint("k", ki), (w+i)%prioSeed*3)
				cancel()
				if err != nil {
					if !errors.Is(err, context.Canceled) {
						fail("Acquire: %v", err)
					}
					continue
				}
				if n := inflight.Add(1); n > maxConc {
					fail("%d in flight, max %d", n, maxConc)
				}
				if n := perKey[ki].Add(1); n > keyConc {
					fail("key %d: %d in flight, max %d", ki, n, keyConc)
				}
				runtime.Gosched()
				perKey[ki].Add(-1)
				inflight.Add(-1)
				p.Release()
			}
		}()
	}
	// The clock moves by a fraction of a period whenever every worker is
	// blocked or done.
	for done.Load() < workers {
		c.Advance(per / 16)
		runtime.Gosched()
	}
	wg.Wait()
	if f := failed.Load(); f != nil {
		t.Fatal(f)
	}
	total := 0
	for k, ts := range starts {
		total += len(ts)
		sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
		for i := 0; i+rate < len(ts); i++ {
			if ts[i+rate]-ts[i] < int64(per) {
				t.Fatalf("key %s: %d starts within %s", k, rate+1, time.Duration(ts[i+rate]-ts[i]))
			}
		}
	}
	if total < workers*perWork*8/10 {
		t.Fatalf("only %d starts", total)
	}
	c.Advance(2 * per)
	if s := l.Stats(); s != (Stats{}) {
		t.Fatalf("stats after the hammer %+v, want zero", s)
	}
}

// TestDebounceHammer: bursts of concurrent requests on many keys; each
// burst runs exactly once, and the others are superseded.
func TestDebounceHammer(t *testing.T) {
	const keys, burst, rounds = 20, 10, 5
	l, c := newLimiter(t, Policy{Debounce: time.Second, MaxConcurrency: 3})
	for round := 0; round < rounds; round++ {
		var ran, superseded atomic.Int32
		var wg sync.WaitGroup
		for k := 0; k < keys; k++ {
			for i := 0; i < burst; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					p, err := l.Acquire(context.Background(), fmt.Sprint("k", k), 5)
					switch {
					case errors.Is(err, ErrSuperseded):
						superseded.Add(1)
					case err != nil:
						t.Error(err)
					default:
						ran.Add(1)
						p.Release()
					}
				}()
			}
		}
		checkFor(t, "the bursts to settle", func() bool {
			return l.Stats().Pending == keys && superseded.Load() == keys*(burst-1)
		})
		c.Advance(time.Second)
		wg.Wait()
		if ran.Load() != keys {
			t.Fatalf("round %d: %d runs for %d bursts", round, ran.Load(), keys)
		}
	}
}
