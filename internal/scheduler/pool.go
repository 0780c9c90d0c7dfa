package scheduler

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/telemetry"
	"github.com/nimbus-dev/nimbus/internal/throttle"
)

// ErrBusy means every instance of a function stayed busy until the
// invocation's deadline.
var ErrBusy = errors.New("all instances busy")

// errPoolClosed means the function revision was retired while waiting.
var errPoolClosed = errors.New("function revision retired")

// pool holds the instances of one function revision.
//
// One instance serves up to slots requests at once: the function's
// concurrency capped by what the module allows (runtime.Module
// MaxConcurrency; 1 for wasm), and 1 for single-use instances. An
// invocation holds a token for as long as it holds a slot, so at most
// max*slots requests are in flight.
//
// Invariants (p.mu): live instances (busy + len(idle)) <= max, because an
// instance is created only while fewer are live; inst.inflight <= slots,
// because a slot is taken only from an instance in open or idle, and an
// instance leaves open when it is full. An invocation holding a token
// always finds a slot in the end: with max*slots tokens, if every live
// instance were full and no more could start, it could not hold one; so
// it either takes a slot, starts an instance, or waits for a start or a
// release to wake it.
type pool struct {
	app string
	fn  model.Function
	mod runtime.Module
	now func() time.Time
	// newMetrics makes the function's metric series, at the first
	// instance or invocation (metrics): each labelled series costs memory
	// (about 5 KB for a function's six), which a node holding thousands of
	// deployed but idle functions should not pay.
	newMetrics  func() *telemetry.FunctionMetrics
	metricsOnce sync.Once
	fm          *telemetry.FunctionMetrics

	// The function's flow control (manifest flow:), applied before an
	// instance is taken. A nil limiter has no limits.
	limiter  *throttle.Limiter
	flowKey  throttle.KeySource
	priority int

	max    int           // max instances (the function's max_instances)
	slots  int           // requests one instance serves at once, >= 1
	tokens chan struct{} // one per request in flight; cap max*slots

	mu   sync.Mutex
	idle []*instance // serving nothing; LIFO: the most recently used instance is warmest
	open []*instance // serving, with a free slot (only when slots > 1)
	busy int         // instances serving or starting
	// starting instances and the invocations waiting for a slot of one:
	// an instance that is starting serves its starter and slots-1 more,
	// so a burst waits for those slots before it starts another (as
	// Knative scales to in-flight requests / target concurrency). Without
	// this a burst at zero started one instance per request.
	starting, claims int
	wake             chan struct{} // closed when a slot may have freed; nil while no one waits
	closed           bool
}

// instance is a live instance and its accounting; p.mu guards the fields.
type instance struct {
	runtime.Instance
	inflight int       // requests it serves now
	since    time.Time // when it last became idle
	broken   bool      // a request failed on it: it takes no more and closes when the last returns
}

func newPool(app string, fn model.Function, mod runtime.Module, m func() *telemetry.FunctionMetrics, now func() time.Time) (*pool, error) {
	n := fn.MaxInstances
	if n <= 0 {
		n = 1
	}
	slots := max(1, min(fn.Concurrency, mod.MaxConcurrency()))
	if !mod.Reusable() {
		slots = 1 // a single-use instance serves one request in its life
	}
	p := &pool{app: app, fn: fn, mod: mod, newMetrics: m, now: now, max: n, slots: slots,
		tokens: make(chan struct{}, n*slots), priority: throttle.PriorityOf(fn.Flow)}
	if fn.IsWorkflow() {
		// The workflow engine applies a workflow's flow to its runs,
		// keyed on their input (workflow.CheckFlow); an activation is
		// admitted before it gets here.
		return p, nil
	}
	if policy := throttle.PolicyOf(fn.Flow); !policy.IsZero() {
		lim, err := throttle.NewLimiter(policy, nil)
		if err != nil {
			return nil, fmt.Errorf("function %s: flow: %w", fn.Name, err)
		}
		p.limiter = lim
	}
	if fn.Flow != nil && fn.Flow.Key != "" {
		key, err := throttle.ParseKey(fn.Flow.Key)
		if err != nil {
			return nil, fmt.Errorf("function %s: flow key: %w", fn.Name, err)
		}
		p.flowKey = key
	}
	return p, nil
}

// acquire returns an instance with a slot taken for the caller, and how
// long creating it took when it was created for this call (a cold start;
// 0 when an existing instance serves). Before it blocks for a token (every
// slot of the function taken: max_instances times the concurrency), it
// takes wt's place among the waiters (wt may be nil), and fails at once
// without one; a caller with a token waits only for a slot of an instance
// that is starting or freeing, within the function's capacity.
func (p *pool) acquire(ctx context.Context, wt *waiter) (*instance, time.Duration, error) {
	select {
	case p.tokens <- struct{}{}:
	default:
		if err := wt.enter(); err != nil {
			return nil, 0, err
		}
		select {
		case p.tokens <- struct{}{}:
		case <-ctx.Done():
			return nil, 0, p.busyError(ctx)
		}
	}
	p.mu.Lock()
	for {
		if p.closed {
			p.mu.Unlock()
			<-p.tokens
			return nil, 0, errPoolClosed
		}
		if inst := p.takeLocked(); inst != nil {
			p.mu.Unlock()
			return inst, 0, nil
		}
		if p.claims < p.starting*(p.slots-1) {
			// A slot of an instance that is starting is ours: wait for
			// its start (or failure) rather than start one more.
			p.claims++
			wake := p.wait()
			p.mu.Unlock()
			var done bool
			select {
			case <-wake:
			case <-ctx.Done():
				done = true
			}
			p.mu.Lock()
			p.claims--
			if done {
				p.mu.Unlock()
				<-p.tokens
				return nil, 0, fmt.Errorf("%w: %s/%s: the instance this request waited for was still starting (a slow start: its own request reports why): %w",
					ErrBusy, p.app, p.fn.Name, context.Cause(ctx))
			}
			continue
		}
		if p.busy+len(p.idle) < p.max {
			break
		}
		// Every instance is full, starting or closing: one of them frees a
		// slot (or its place) for us.
		wake := p.wait()
		p.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			<-p.tokens
			return nil, 0, p.busyError(ctx)
		}
		p.mu.Lock()
	}
	p.busy++
	p.starting++
	p.gauge()
	p.mu.Unlock()

	start := time.Now()
	ri, err := p.mod.NewInstance(ctx)
	if err != nil {
		p.mu.Lock()
		p.busy--
		p.starting--
		p.notify() // those waiting for its slots start one of their own
		p.gauge()
		p.mu.Unlock()
		<-p.tokens
		return nil, 0, fmt.Errorf("start instance of %s/%s: %w", p.app, p.fn.Name, err)
	}
	cold := max(time.Since(start), time.Nanosecond)
	p.metrics().ColdStart(cold)
	inst := &instance{Instance: ri, inflight: 1}
	p.mu.Lock()
	p.starting--
	if p.slots > 1 && !p.closed {
		p.open = append(p.open, inst)
	}
	p.notify()
	p.mu.Unlock()
	return inst, cold, nil
}

// tryAcquire is acquire's fast path, which needs no deadline: a slot of
// a live instance when a token and a slot are free at once, else nil (the
// caller then waits in acquire, with a deadline). It is what a warm
// request takes, so it creates no context and no timer.
func (p *pool) tryAcquire() *instance {
	select {
	case p.tokens <- struct{}{}:
	default:
		return nil
	}
	p.mu.Lock()
	var inst *instance
	if !p.closed {
		inst = p.takeLocked()
	}
	p.mu.Unlock()
	if inst == nil {
		<-p.tokens
	}
	return inst
}

// takeLocked takes a slot of an open or idle instance, or returns nil if
// none has one; p.mu is held.
func (p *pool) takeLocked() *instance {
	if n := len(p.open); n > 0 {
		inst := p.open[n-1]
		inst.inflight++
		if inst.inflight == p.slots {
			p.open[n-1] = nil
			p.open = p.open[:n-1]
		}
		return inst
	}
	if n := len(p.idle); n > 0 {
		inst := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		inst.inflight = 1
		if p.slots > 1 {
			p.open = append(p.open, inst)
		}
		p.busy++
		p.gauge()
		return inst
	}
	return nil
}

func (p *pool) busyError(ctx context.Context) error {
	if p.slots > 1 {
		return fmt.Errorf("%w: max_instances %d (each serving %d at once) of %s/%s all busy: %w", ErrBusy, p.max, p.slots, p.app, p.fn.Name, context.Cause(ctx))
	}
	return fmt.Errorf("%w: max_instances %d of %s/%s all busy: %w", ErrBusy, p.max, p.app, p.fn.Name, context.Cause(ctx))
}

// wait returns the channel the next notify closes; p.mu is held.
func (p *pool) wait() <-chan struct{} {
	if p.wake == nil {
		p.wake = make(chan struct{})
	}
	return p.wake
}

// notify wakes the invocations waiting for a slot; p.mu is held.
func (p *pool) notify() {
	if p.wake != nil {
		close(p.wake)
		p.wake = nil
	}
}

// release gives a slot back. A broken instance, or one of a module whose
// instances are single use, is closed once its last request returns
// instead of kept.
func (p *pool) release(inst *instance, broken bool) {
	p.mu.Lock()
	full := inst.inflight == p.slots
	inst.inflight--
	if broken && !inst.broken {
		inst.broken = true
		p.unopen(inst)
	}
	closeIt := false
	switch {
	case inst.inflight == 0:
		p.unopen(inst)
		if inst.broken || p.closed || !p.mod.Reusable() {
			// It stays counted in busy until it is closed, so a new
			// instance never starts while it is still live: max_instances
			// bounds live instances, not only serving ones.
			closeIt = true
		} else {
			p.busy--
			inst.since = p.now()
			p.idle = append(p.idle, inst)
		}
	case full && !inst.broken && !p.closed:
		p.open = append(p.open, inst)
	}
	p.notify()
	p.gauge()
	p.mu.Unlock()
	if closeIt {
		inst.Close(context.Background())
		p.mu.Lock()
		p.busy--
		p.notify()
		p.gauge()
		p.mu.Unlock()
	}
	<-p.tokens
}

// unopen removes inst from p.open if it is there; p.mu is held.
func (p *pool) unopen(inst *instance) {
	if i := slices.Index(p.open, inst); i >= 0 {
		p.open = slices.Delete(p.open, i, i+1)
	}
}

// reap closes instances idle since before cutoff and reports how many.
func (p *pool) reap(cutoff time.Time) int {
	p.mu.Lock()
	// idle is ordered by release time, oldest first.
	n := 0
	for n < len(p.idle) && p.idle[n].since.Before(cutoff) {
		n++
	}
	if n == 0 {
		// Nothing changed: no gauge update either, so the periodic reap
		// does not make the metric series of a function that never ran
		// (they cost about 5 KB of heap per idle function).
		p.mu.Unlock()
		return 0
	}
	victims := slices.Clone(p.idle[:n])
	p.idle = slices.Delete(p.idle, 0, n)
	p.gauge()
	p.mu.Unlock()
	for _, inst := range victims {
		inst.Close(context.Background())
	}
	return n
}

// close retires the pool: idle instances are closed now, busy ones when
// they are released, and the module once nothing uses it.
func (p *pool) close(wg *sync.WaitGroup) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	if p.limiter != nil {
		p.limiter.Close() // waiters get throttle.ErrClosed and move to the new revision
	}
	idle := p.idle
	p.idle, p.open = nil, nil
	p.notify() // waiters see closed and move to the new revision
	p.gauge()
	p.mu.Unlock()
	for _, inst := range idle {
		inst.Close(context.Background())
	}
	// In-flight requests hold tokens; take them all to wait for them, then
	// close the module. Done in the background so retiring never blocks a
	// deploy on a slow request; each request is bounded by its timeout.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < cap(p.tokens); i++ {
			p.tokens <- struct{}{}
		}
		p.mod.Close(context.Background())
	}()
}

// counts reports idle and busy instances.
func (p *pool) counts() (idle, busy int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle), p.busy
}

// gauge updates the instance gauges; p.mu is held.
func (p *pool) gauge() { p.metrics().Instances(len(p.idle), p.busy) }

// metrics returns the function's metric series, making them on first use.
func (p *pool) metrics() *telemetry.FunctionMetrics {
	p.metricsOnce.Do(func() { p.fm, p.newMetrics = p.newMetrics(), nil })
	return p.fm
}
