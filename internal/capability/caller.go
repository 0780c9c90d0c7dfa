package capability

import (
	"context"
	"sync"
)

// LogSink receives an invocation's log lines; runtime.LogSink satisfies it.
type LogSink interface {
	// Log records one line. stream is "log" for the services' lines;
	// level is "debug", "info", "warn" or "error".
	Log(stream, level string, line []byte)
}

// Caller is who calls a service: one invocation of one function. The
// runtime creates one per guest call (a request, or an instance's
// initialization) and hands it to every service call the guest makes. It
// is safe for concurrent use.
type Caller struct {
	App          string
	Function     string
	InvocationID string
	// TraceParent is the invocation's W3C traceparent ("" when none):
	// events the function publishes without one carry a child of it.
	TraceParent string
	// Grants are the function's capabilities.
	Grants Grants
	// Sink receives the invocation's log lines. Optional: nil discards.
	Sink LogSink

	mu     sync.Mutex
	once   map[string]bool
	counts map[string]int
	kept   map[uint32]any
	nextID uint32
}

// count adds one to the invocation's counter key and returns the new
// value: per-invocation limits (fetches per invocation) count with it.
func (c *Caller) count(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.counts == nil {
		c.counts = map[string]int{}
	}
	c.counts[key]++
	return c.counts[key]
}

// Keep holds v for the rest of the invocation and returns a handle to it
// (never 0). An adapter whose result the guest reads in a second call (a
// fetch's response) keeps it here: it goes away with the invocation.
func (c *Caller) Keep(v any) uint32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.kept == nil {
		c.kept = map[uint32]any{}
	}
	c.nextID++
	if c.nextID == 0 {
		c.nextID = 1
	}
	c.kept[c.nextID] = v
	return c.nextID
}

// Peek returns what Keep holds under handle h.
func (c *Caller) Peek(h uint32) (any, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.kept[h]
	return v, ok
}

// Drop releases handle h.
func (c *Caller) Drop(h uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.kept, h)
}

// log writes one line to the invocation's log.
func (c *Caller) log(level, line string) {
	if c.Sink != nil {
		c.Sink.Log("log", level, []byte(line))
	}
}

// first reports whether this is the first time key is seen in this
// invocation: warnings are written once per key, so a function in a loop
// does not flood its log.
func (c *Caller) first(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.once[key] {
		return false
	}
	if c.once == nil {
		c.once = map[string]bool{}
	}
	c.once[key] = true
	return true
}

type callerKey struct{}

// WithCaller returns ctx carrying c. The wasm runtime passes it to the
// guest call, so that host functions find their caller with CallerFrom.
func WithCaller(ctx context.Context, c *Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// CallerFrom returns the Caller in ctx, or nil. Services deny every call of
// a nil Caller.
func CallerFrom(ctx context.Context) *Caller {
	c, _ := ctx.Value(callerKey{}).(*Caller)
	return c
}
