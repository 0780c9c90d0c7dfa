package scheduler

import (
	"context"
	"errors"
	"fmt"
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
// Invariant: live instances (busy + len(idle)) <= cap(tokens). An invocation
// holds a token for as long as it holds an instance; it creates an instance
// only while holding a token and finding no idle one, so live instances never
// exceed the number of tokens.
type pool struct {
	app     string
	fn      model.Function
	mod     runtime.Module
	metrics *telemetry.FunctionMetrics
	now     func() time.Time

	// The function's flow control (manifest flow:), applied before an
	// instance is taken. A nil limiter has no limits.
	limiter  *throttle.Limiter
	flowKey  throttle.KeySource
	priority int

	tokens chan struct{}

	mu     sync.Mutex
	idle   []idleInstance // LIFO: the most recently used instance is warmest
	busy   int
	closed bool
}

type idleInstance struct {
	inst  runtime.Instance
	since time.Time
}

func newPool(app string, fn model.Function, mod runtime.Module, m *telemetry.FunctionMetrics, now func() time.Time) (*pool, error) {
	n := fn.MaxInstances
	if n <= 0 {
		n = 1
	}
	p := &pool{app: app, fn: fn, mod: mod, metrics: m, now: now, tokens: make(chan struct{}, n),
		priority: throttle.PriorityOf(fn.Flow)}
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

// acquire returns an instance for exclusive use, and whether it was created
// for this call (a cold start).
func (p *pool) acquire(ctx context.Context) (runtime.Instance, bool, error) {
	select {
	case p.tokens <- struct{}{}:
	default:
		select {
		case p.tokens <- struct{}{}:
		case <-ctx.Done():
			return nil, false, fmt.Errorf("%w: max_instances %d of %s/%s all busy: %w", ErrBusy, cap(p.tokens), p.app, p.fn.Name, context.Cause(ctx))
		}
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.tokens
		return nil, false, errPoolClosed
	}
	if n := len(p.idle); n > 0 {
		inst := p.idle[n-1].inst
		p.idle[n-1] = idleInstance{}
		p.idle = p.idle[:n-1]
		p.busy++
		p.gauge()
		p.mu.Unlock()
		return inst, false, nil
	}
	p.busy++
	p.gauge()
	p.mu.Unlock()

	start := time.Now()
	inst, err := p.mod.NewInstance(ctx)
	if err != nil {
		p.mu.Lock()
		p.busy--
		p.gauge()
		p.mu.Unlock()
		<-p.tokens
		return nil, false, fmt.Errorf("start instance of %s/%s: %w", p.app, p.fn.Name, err)
	}
	p.metrics.ColdStart(time.Since(start))
	return inst, true, nil
}

// release gives an instance back. A broken instance, or one of a module
// whose instances are single use, is closed instead of kept.
func (p *pool) release(inst runtime.Instance, broken bool) {
	p.mu.Lock()
	p.busy--
	keep := !broken && !p.closed && p.mod.Reusable()
	if keep {
		p.idle = append(p.idle, idleInstance{inst: inst, since: p.now()})
	}
	p.gauge()
	p.mu.Unlock()
	<-p.tokens
	if !keep {
		inst.Close(context.Background())
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
	victims := make([]runtime.Instance, n)
	for i := 0; i < n; i++ {
		victims[i] = p.idle[i].inst
	}
	p.idle = append(p.idle[:0], p.idle[n:]...)
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
	p.idle = nil
	p.gauge()
	p.mu.Unlock()
	for _, it := range idle {
		it.inst.Close(context.Background())
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
func (p *pool) gauge() { p.metrics.Instances(len(p.idle), p.busy) }
