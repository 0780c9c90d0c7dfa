package throttle

import (
	"errors"
	"fmt"
	"sync"
)

// DefaultMaxWaiting is the node-wide number of edge invocations (HTTP
// routes, `nimbus invoke`) that may wait at once for an instance or a flow
// control permit. Each holds its connection, its head and a goroutine
// (about 30 KiB with small headers) for up to its function's timeout.
const DefaultMaxWaiting = 4096

// ErrTooManyWaiting is matched (errors.Is) by every *WaitError.
var ErrTooManyWaiting = errors.New("too many requests already wait for an instance")

// Waiting counts the edge invocations that wait, node-wide and per app,
// and refuses one more past either bound (a semaphore that never waits:
// the refused client is answered at once and holds nothing of the node
// while it backs off). Without it, traffic faster than a function serves
// piles up waiters at the arrival rate times the function's timeout, each
// holding memory until it times out. A nil *Waiting refuses nothing. It is
// safe for concurrent use.
type Waiting struct {
	node, app int // bounds

	mu   sync.Mutex
	n    int            // waiting node-wide
	apps map[string]int // app -> waiting; absent when 0
}

// NewWaiting returns a Waiting of at most node waiters, and half of them
// per app so that one app cannot take every place. node <= 0 means
// DefaultMaxWaiting.
func NewWaiting(node int) *Waiting {
	if node <= 0 {
		node = DefaultMaxWaiting
	}
	return &Waiting{node: node, app: max(node/2, 1), apps: map[string]int{}}
}

// Limits returns the node-wide and per-app bounds.
func (w *Waiting) Limits() (node, app int) { return w.node, w.app }

// Count returns the invocations waiting node-wide and for app.
func (w *Waiting) Count(app string) (node, appWaiting int) {
	if w == nil {
		return 0, 0
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.n, w.apps[app]
}

// Enter counts one more waiter of app, or returns a *WaitError and counts
// nothing when the node or the app is at its bound. Each nil return is
// matched by one Leave.
func (w *Waiting) Enter(app string) error {
	if w == nil {
		return nil
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.n >= w.node {
		return &WaitError{App: app, Scope: ScopeNode, Limit: w.node}
	}
	a := w.apps[app]
	if a >= w.app {
		return &WaitError{App: app, Scope: ScopeApp, Limit: w.app}
	}
	w.n++
	w.apps[app] = a + 1
	return nil
}

// Leave ends a wait Enter counted.
func (w *Waiting) Leave(app string) {
	if w == nil {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.n--
	if a := w.apps[app] - 1; a > 0 {
		w.apps[app] = a
	} else {
		delete(w.apps, app)
	}
}

// WaitError refuses an edge invocation that would wait while the node or
// its app already has as many waiting as it allows. It matches
// ErrTooManyWaiting.
type WaitError struct {
	App   string
	Scope string // ScopeNode or ScopeApp
	Limit int    // that bound
}

func (e *WaitError) Error() string {
	if e.Scope == ScopeApp {
		return fmt.Sprintf("app %q has as many requests waiting for an instance as it may (%d: half of the node's --max-waiting); retry later", e.App, e.Limit)
	}
	return fmt.Sprintf("the node has as many requests waiting for an instance as it may (%d: nimbus up --max-waiting); retry later", e.Limit)
}

// Is matches ErrTooManyWaiting.
func (e *WaitError) Is(target error) bool { return target == ErrTooManyWaiting }
