package process

import (
	"context"
	"sync"
	"time"
)

// sandboxPool keeps a few sandboxes made ahead of time, each with its
// helper started and its view built but the function's directory, so that
// a cold start claims one instead of paying for the network namespace,
// the cgroup moves, the clone and the helper's start (about two thirds of
// a sandboxed cold start). A pooled sandbox is empty: nothing of any
// function is in it until it is claimed, and it is claimed once, by one
// process of one function, and released with that process; sandboxes are
// never reused or shared.
type sandboxPool struct {
	rt   *Runtime
	size int

	mu      sync.Mutex
	ready   []*sandbox
	running bool // the filling goroutine was started
	closed  bool
	wake    chan struct{} // buffered 1: fill
	done    chan struct{} // closed when the filling goroutine returns
}

func newSandboxPool(rt *Runtime, size int) *sandboxPool {
	return &sandboxPool{rt: rt, size: size, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// start fills the pool, once: at the first sandboxed function loaded, so
// that a node without one keeps no idle helpers.
func (p *sandboxPool) start() {
	if p.size <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.running || p.closed {
		return
	}
	p.running = true
	go p.fill()
	p.wake <- struct{}{}
}

// take returns a pooled sandbox whose helper still waits, or nil.
func (p *sandboxPool) take() *sandbox {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.ready) > 0 {
		sb := p.ready[0]
		p.ready = p.ready[1:]
		if sb.alive() {
			return sb
		}
		p.rt.logger.Warn("process runtime: a sandbox made ahead of time exited unused", "output", sb.stderr.lastPending())
		go sb.release()
	}
	return nil
}

// refill asks the filling goroutine to top the pool up.
func (p *sandboxPool) refill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || !p.running {
		return
	}
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// fill makes sandboxes while the pool is short. A sandbox that cannot be
// made is logged and retried after a second: a start that finds the pool
// empty makes its own and reports the same error to its caller.
func (p *sandboxPool) fill() {
	defer close(p.done)
	for range p.wake {
		for {
			p.mu.Lock()
			closed, short := p.closed, len(p.ready) < p.size
			p.mu.Unlock()
			if closed {
				return
			}
			if !short {
				break
			}
			sb, err := p.rt.makeSandbox()
			if err != nil {
				p.rt.logger.Warn("process runtime: cannot make a sandbox ahead of time; retrying in 1s", "error", err)
				time.Sleep(time.Second)
				continue
			}
			p.mu.Lock()
			if p.closed {
				p.mu.Unlock()
				sb.release()
				return
			}
			p.ready = append(p.ready, sb)
			p.mu.Unlock()
		}
	}
}

// full waits until the pool holds its size of sandboxes, or ctx ends.
func (p *sandboxPool) full(ctx context.Context) error {
	for {
		p.mu.Lock()
		n := len(p.ready)
		p.mu.Unlock()
		if n >= p.size {
			return nil
		}
		t := time.NewTimer(time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// close releases the pooled sandboxes and stops filling.
func (p *sandboxPool) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	ready := p.ready
	p.ready = nil
	running := p.running
	p.mu.Unlock()
	if running {
		close(p.wake)
		<-p.done
	}
	for _, sb := range ready {
		sb.release()
	}
}
