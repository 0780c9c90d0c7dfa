package throttle

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nimbus-dev/nimbus/internal/model"
)

// Request bodies are flow controlled by bytes, at the edge, before any
// invocation exists: a Budget bounds the bytes of request bodies a node
// holds in memory at once (node-wide and per app), and a BodyRate bounds
// how long a body may take to arrive. Both are answered by the edge
// (package apierror): *BudgetError is 503 body_budget with Retry-After,
// *SlowBodyError is 408 body_too_slow.

// Body flow control defaults (the zero BudgetConfig and BodyRate).
const (
	// DefaultBodyBudget is the node-wide budget of request body bytes.
	DefaultBodyBudget int64 = 256 << 20
	// DefaultBodyGrace is how long any body may take, whatever its size.
	DefaultBodyGrace = 10 * time.Second
	// DefaultBodyMinRate is the slowest average rate, in bytes per
	// second, a body may arrive at once its grace has passed.
	DefaultBodyMinRate int64 = 16 << 10
	// SmallBody is the size up to which a body may use a budget's
	// reserve: bodies (or the first SmallBody bytes of a body) this
	// small may fill the whole budget, larger ones only seven eighths of
	// it, so a node full of large bodies still takes small requests.
	SmallBody int64 = 64 << 10
)

// ErrOverBudget is matched (errors.Is) by every *BudgetError.
var ErrOverBudget = errors.New("request bodies: over the node's body budget")

// ErrBodyTooSlow is matched (errors.Is) by every *SlowBodyError.
var ErrBodyTooSlow = errors.New("request body arrived too slowly")

// BudgetConfig sizes a Budget. The zero value of each field is its
// default.
type BudgetConfig struct {
	// Node is the most bytes of request bodies the node holds at once.
	// Optional: default DefaultBodyBudget (256 MiB).
	Node int64
	// App is the most bytes of one app's request bodies held at once.
	// Optional: default Node/2, so one app cannot take every byte.
	App int64
}

// Budget counts the bytes of request bodies a node holds in memory, node
// wide and per app, and refuses a body that would pass either budget
// (a semaphore in bytes that never waits: a refused body is answered at
// once, so the client, not the node, holds it while it waits to retry).
// Bytes past a body's first SmallBody may use only seven eighths of each
// budget; the last eighth is kept for small bodies. A nil *Budget
// refuses nothing. A Budget is safe for concurrent use.
type Budget struct {
	node, app int64 // capacities

	mu   sync.Mutex
	used int64            // node-wide bytes held
	apps map[string]int64 // app -> bytes held; absent when 0
}

// NewBudget returns a Budget sized by c.
func NewBudget(c BudgetConfig) *Budget {
	if c.Node <= 0 {
		c.Node = DefaultBodyBudget
	}
	if c.App <= 0 || c.App > c.Node {
		c.App = c.Node / 2
	}
	return &Budget{node: c.Node, app: c.App, apps: map[string]int64{}}
}

// Limits returns the node-wide and per-app budgets.
func (b *Budget) Limits() (node, app int64) { return b.node, b.app }

// Used returns the bytes held node-wide and by app.
func (b *Budget) Used(app string) (node, appBytes int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used, b.apps[app]
}

// usable is what bytes past a body's first SmallBody may fill of a
// budget of c bytes.
func usable(c int64) int64 { return c - c/8 }

// Hold counts one request body of app against b; the body's bytes are
// added with Grow and given back with Release. b may be nil. A Hold
// belongs to one request and is not safe for concurrent use.
func (b *Budget) Hold(app string) *Hold { return &Hold{b: b, app: app} }

// Hold is the part of a Budget held by one request body.
type Hold struct {
	b   *Budget
	app string
	n   int64
}

// Bytes returns the bytes h holds.
func (h *Hold) Bytes() int64 { return h.n }

// Grow adds n bytes to h, or returns a *BudgetError and adds nothing when
// the node's or the app's budget cannot take them.
func (h *Hold) Grow(n int64) error {
	b := h.b
	if b == nil || n <= 0 {
		h.n += max(n, 0)
		return nil
	}
	total := h.n + n
	nodeCap, appCap := b.node, b.app
	if total > SmallBody {
		nodeCap, appCap = usable(nodeCap), usable(appCap)
	}
	if total > appCap { // (the app's budget is never larger than the node's)
		return &BudgetError{App: h.app, Scope: ScopeApp, Limit: b.app, Body: total}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+n > nodeCap {
		return &BudgetError{App: h.app, Scope: ScopeNode, Limit: b.node, Body: total, Fits: true}
	}
	a := b.apps[h.app]
	if a+n > appCap {
		return &BudgetError{App: h.app, Scope: ScopeApp, Limit: b.app, Body: total, Fits: true}
	}
	b.used += n
	b.apps[h.app] = a + n
	h.n = total
	return nil
}

// Release gives back every byte h holds. It may be called more than once.
func (h *Hold) Release() {
	b := h.b
	if b == nil || h.n == 0 {
		h.n = 0
		return
	}
	b.mu.Lock()
	b.used -= h.n
	if a := b.apps[h.app] - h.n; a > 0 {
		b.apps[h.app] = a
	} else {
		delete(b.apps, h.app)
	}
	b.mu.Unlock()
	h.n = 0
}

// Scopes of a BudgetError.
const (
	ScopeNode = "node" // the node-wide budget
	ScopeApp  = "app"  // the app's budget
)

// BudgetError refuses a request body that would pass a body budget. It
// matches ErrOverBudget.
type BudgetError struct {
	// App is the body's app.
	App string
	// Scope is the budget that is full: ScopeNode or ScopeApp.
	Scope string
	// Limit is that budget, in bytes.
	Limit int64
	// Body is the bytes the body would have held.
	Body int64
	// Fits is false when the body would not fit even in an empty
	// budget: retrying cannot help, a larger budget can.
	Fits bool
}

func (e *BudgetError) Error() string {
	what := "the node's"
	if e.Scope == ScopeApp {
		what = fmt.Sprintf("app %q's", e.App)
	}
	size := model.FormatBytes(uint64(max(e.Body, 0)))
	limit := model.FormatBytes(uint64(max(e.Limit, 0)))
	if !e.Fits {
		return fmt.Sprintf("request body of %s does not fit in %s budget for request bodies (%s, of which bodies over %s may use seven eighths); raise the node's body budget (nimbus up --body-budget)",
			size, what, limit, model.FormatBytes(uint64(SmallBody)))
	}
	return fmt.Sprintf("%s budget for request bodies held in memory (%s) is full; retry later", what, limit)
}

// Is matches ErrOverBudget.
func (e *BudgetError) Is(target error) bool { return target == ErrOverBudget }

// BodyRate is how fast a request body must arrive: within Grace, plus the
// time its bytes take at MinRate. After n bytes, the next must arrive by
// start + Grace + n/MinRate; a client that keeps to MinRate on average is
// never cut, one that trickles is cut about Grace after it falls behind.
// The zero value of each field is its default.
type BodyRate struct {
	// Grace is how long any body may take, whatever its size.
	// Optional: default DefaultBodyGrace (10s).
	Grace time.Duration
	// MinRate is the slowest average rate past Grace, in bytes per
	// second. Optional: default DefaultBodyMinRate (16 KiB/s); negative
	// turns the rate off (no deadline at all).
	MinRate int64
}

// WithDefaults returns r with its zero fields set to their defaults.
func (r BodyRate) WithDefaults() BodyRate {
	if r.Grace <= 0 {
		r.Grace = DefaultBodyGrace
	}
	if r.MinRate == 0 {
		r.MinRate = DefaultBodyMinRate
	}
	return r
}

// Off reports whether r sets no deadline.
func (r BodyRate) Off() bool { return r.MinRate < 0 }

// Deadline is when a body that started at start and has n bytes must
// have sent more (or ended). r must have its defaults set.
func (r BodyRate) Deadline(start time.Time, n int64) time.Time {
	return start.Add(r.Grace + time.Duration(float64(n)/float64(r.MinRate)*float64(time.Second)))
}

// SlowBodyError cuts a request body that fell behind its BodyRate. It
// matches ErrBodyTooSlow and unwraps to the read's own error.
type SlowBodyError struct {
	// Read is the bytes that had arrived.
	Read int64
	// Elapsed is how long the body had been read.
	Elapsed time.Duration
	// Rate is the rate it fell behind.
	Rate BodyRate
	// Err is the read's error (a deadline exceeded).
	Err error
}

func (e *SlowBodyError) Error() string {
	return fmt.Sprintf("request body too slow: %s arrived in %s, under the minimum of %s/s after %s; send the body faster or in smaller requests",
		model.FormatBytes(uint64(max(e.Read, 0))), e.Elapsed.Round(time.Millisecond), model.FormatBytes(uint64(e.Rate.MinRate)), e.Rate.Grace)
}

// Is matches ErrBodyTooSlow.
func (e *SlowBodyError) Is(target error) bool { return target == ErrBodyTooSlow }

// Unwrap returns the read's error.
func (e *SlowBodyError) Unwrap() error { return e.Err }
