package guestlog

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nimbus-dev/nimbus/internal/runtime"
)

// markerEvery is how often an app may get a dropped-lines marker: a flood
// of small invocations must not become a flood of markers.
const markerEvery = time.Second

// appState is what the writer keeps per app: its rate budget and the drops
// not yet reported by a marker.
type appState struct {
	name string

	mu         sync.Mutex // guards lines, bytes, last and lastMarker
	lines      float64    // tokens: lines the app may still write now
	bytes      float64    // tokens: bytes the app may still write now
	last       time.Time  // when the buckets were last refilled
	lastMarker time.Time  // when the app's last marker was written

	// unreported counts lines dropped by invocations that got no marker
	// (one was written less than markerEvery before); the app's next
	// marker reports them.
	unreported atomic.Uint64
}

// app returns the state of app, creating it with full buckets.
func (w *Writer) app(name string) *appState {
	w.appsMu.Lock()
	defer w.appsMu.Unlock()
	a := w.apps[name]
	if a == nil {
		a = &appState{
			name:  name,
			lines: w.cfg.AppLinesPerSecond * AppBurstSeconds,
			bytes: w.cfg.AppBytesPerSecond * AppBurstSeconds,
			last:  w.cfg.Now(),
		}
		w.apps[name] = a
	}
	return a
}

// take spends one line of n bytes from the app's buckets, refilled for the
// time since the last take. It spends nothing and reports false when either
// bucket is short.
func (a *appState) take(cfg *Config, n int) bool {
	now := cfg.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if dt := now.Sub(a.last).Seconds(); dt > 0 {
		a.lines = min(a.lines+dt*cfg.AppLinesPerSecond, cfg.AppLinesPerSecond*AppBurstSeconds)
		a.bytes = min(a.bytes+dt*cfg.AppBytesPerSecond, cfg.AppBytesPerSecond*AppBurstSeconds)
		a.last = now
	}
	if a.lines < 1 || a.bytes < float64(n) {
		return false
	}
	a.lines--
	a.bytes -= float64(n)
	return true
}

// markerDue reports whether the app may get a marker now, and if so counts
// it as written.
func (a *appState) markerDue(now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.lastMarker.IsZero() && now.Sub(a.lastMarker) < markerEvery {
		return false
	}
	a.lastMarker = now
	return true
}

// sink is the LogSink of one invocation. It stores lines until the
// invocation's budget is spent, then counts them; lines within that budget
// still need the app's rate budget.
type sink struct {
	w     *Writer
	app   *appState
	entry Entry        // the invocation's fields; Time, Stream, Level and Message unset
	tag   func(*Entry) // tags each line (TaggedSink); nil: none

	lines atomic.Int64 // lines offered, stored or not
	bytes atomic.Int64 // bytes offered (after capLine), stored or not

	overInvocation atomic.Uint64 // dropped since the last Flush: invocation budget
	overRate       atomic.Uint64 // dropped since the last Flush: app rate budget
}

var (
	_ runtime.LogSink    = (*sink)(nil)
	_ runtime.LogFlusher = (*sink)(nil)
)

// Log records one line; it copies line and never blocks.
func (s *sink) Log(stream, level string, line []byte) {
	cfg := &s.w.cfg
	// Once over budget, an invocation stays over: both counters only grow,
	// so a flood costs two atomic adds per line and no copy.
	if s.lines.Add(1) > int64(cfg.InvocationLines) {
		s.overInvocation.Add(1)
		s.w.drop(s.app.name, ReasonInvocationBudget, nil)
		return
	}
	msg := capLine(line)
	if s.bytes.Add(int64(len(msg))) > cfg.InvocationBytes {
		s.overInvocation.Add(1)
		s.w.drop(s.app.name, ReasonInvocationBudget, nil)
		return
	}
	if !s.app.take(cfg, len(msg)) {
		s.overRate.Add(1)
		s.w.drop(s.app.name, ReasonAppRate, nil)
		return
	}
	s.w.enqueue(s.newEntry(stream, level, msg))
}

func (s *sink) newEntry(stream, level, msg string) Entry {
	e := s.entry
	e.Time = time.Now().UTC()
	e.Stream, e.Level, e.Message = stream, level, msg
	if s.tag != nil {
		s.tag(&e)
	}
	return e
}

// MarkerStream is the Stream of the entry a sink writes, at the end of an
// invocation, about the lines it dropped.
const MarkerStream = "nimbus"

// Flush implements runtime.LogFlusher: if lines were dropped since the last
// Flush, it writes one marker entry (Stream "nimbus", Level "warn") saying
// how many and which budget. Markers are outside both budgets but an app
// gets at most one per markerEvery; an invocation that gets none has its
// count carried to the app's next marker (the metric counts every line
// either way).
func (s *sink) Flush() {
	inv, rate := s.overInvocation.Swap(0), s.overRate.Swap(0)
	if inv+rate == 0 {
		return
	}
	if !s.app.markerDue(s.w.cfg.Now()) {
		s.app.unreported.Add(inv + rate)
		return
	}
	earlier := s.app.unreported.Swap(0)
	s.w.enqueue(s.newEntry(MarkerStream, "warn", s.w.markerMessage(inv, rate, earlier)))
}

// markerMessage says how many lines were dropped and why, for example
// "dropped 19000 lines (budget: 1000 lines or 1MiB per invocation)".
func (w *Writer) markerMessage(inv, rate, earlier uint64) string {
	c := &w.cfg
	var why []string
	invBudget := fmt.Sprintf("%d lines or %s per invocation", c.InvocationLines, formatBytes(c.InvocationBytes))
	rateBudget := fmt.Sprintf("%s lines/s or %s/s per app", formatRate(c.AppLinesPerSecond), formatBytes(int64(c.AppBytesPerSecond)))
	switch {
	case inv > 0 && rate > 0:
		why = append(why, fmt.Sprintf("%d over %s", inv, invBudget), fmt.Sprintf("%d over %s", rate, rateBudget))
	case inv > 0:
		why = append(why, invBudget)
	default:
		why = append(why, rateBudget)
	}
	msg := fmt.Sprintf("dropped %d lines (budget: %s)", inv+rate, strings.Join(why, "; "))
	if earlier > 0 {
		msg += fmt.Sprintf("; and %d lines of earlier invocations of the app (at most one marker per second)", earlier)
	}
	return msg
}

// formatBytes writes a byte count the way the manifest does: 1MiB, 512KiB.
func formatBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return strconv.FormatInt(n>>30, 10) + "GiB"
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + "KiB"
	default:
		return strconv.FormatInt(n, 10) + "B"
	}
}

func formatRate(r float64) string { return strconv.FormatFloat(r, 'f', -1, 64) }
