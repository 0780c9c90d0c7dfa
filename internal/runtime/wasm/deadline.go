package wasm

import (
	"context"
	"sync"
	"time"
)

// deadlineContext is a call's context: its parent with the function's
// timeout, like context.WithDeadline, except that it arms no timer until
// something waits on Done. The fuel check reads the deadline itself
// (callDone), and most calls end before anything waits: a host call that
// blocks (a KV read, a fetch) asks for Done and gets a real timer then.
// context.WithTimeout on every call cost about 4% of a node's CPU under
// load (the timer's insertion and removal), for a timer that almost never
// fires.
type deadlineContext struct {
	context.Context // the parent
	deadline        time.Time

	mu       sync.Mutex
	armed    context.Context // context.WithDeadline(parent, deadline), once Done was asked
	cancel   context.CancelFunc
	released bool // the call ended: Err is Canceled, as after a cancel
}

// withDeadline returns parent with deadline d and what releases it (as
// the cancel of context.WithDeadline; call it when the call ends).
func withDeadline(parent context.Context, d time.Time) (*deadlineContext, func()) {
	c := &deadlineContext{Context: parent, deadline: d}
	return c, c.release
}

func (c *deadlineContext) Deadline() (time.Time, bool) {
	if d, ok := c.Context.Deadline(); ok && d.Before(c.deadline) {
		return d, true
	}
	return c.deadline, true
}

// Done arms the deadline: from now on the context is a real
// context.WithDeadline of the parent.
func (c *deadlineContext) Done() <-chan struct{} { return c.arm().Done() }

// Err is the parent's error, or DeadlineExceeded once the deadline has
// passed, whether or not anything armed it.
func (c *deadlineContext) Err() error {
	c.mu.Lock()
	released := c.released
	c.mu.Unlock()
	if released {
		return context.Canceled
	}
	if a := c.armedCtx(); a != nil {
		if err := a.Err(); err != nil {
			return err
		}
	}
	if err := c.Context.Err(); err != nil {
		return err
	}
	if !time.Now().Before(c.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

// Value is the armed context's once armed (so that context.Cause sees its
// own cancellation), the parent's before.
func (c *deadlineContext) Value(key any) any {
	if a := c.armedCtx(); a != nil {
		return a.Value(key)
	}
	return c.Context.Value(key)
}

func (c *deadlineContext) armedCtx() context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.armed
}

func (c *deadlineContext) arm() context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.armed == nil {
		c.armed, c.cancel = context.WithDeadline(c.Context, c.deadline)
	}
	return c.armed
}

func (c *deadlineContext) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.released = true
	if c.cancel != nil {
		c.cancel()
	}
}
