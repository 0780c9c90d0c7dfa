package workflow

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"time"
)

// Observability of runs.
//
// Traces: a run is one W3C trace whose id is derived from the app and the
// run id (RunTraceID), so every activation, on any node and after any
// restart, is a span in the same trace (its request's traceparent), and
// `nimbus wf show` names it. Every step attempt gets a span id of its own,
// journaled with its duration on its entry (Entry.Span, DurationMS): the
// timeline is the run's trace, one span per step and attempt.
//
// Metrics: the engine reports step attempts and run ends to the
// Observer of its Options; the server exports them to Prometheus.

// Observer receives what the engine measures. Its methods must be quick
// and safe for concurrent use.
type Observer interface {
	// Step is called at the end of every step attempt: outcome is
	// "completed", "retried" or "failed".
	Step(app, workflow, outcome string, d time.Duration)
	// RunEnded is called when a run reaches a final state (state).
	RunEnded(app, workflow, state string)
	// RunStarted is called when a run is created.
	RunStarted(app, workflow string)
}

// RunTraceID is the W3C trace id (32 hex digits) of a run: every
// activation of the run is a span in this trace.
func RunTraceID(app, id string) string {
	sum := sha256.Sum256([]byte("nimbus-run\x00" + app + "\x00" + id))
	sum[0] |= 1 // never the invalid all-zero id
	return hex.EncodeToString(sum[:16])
}

// newSpanID is a random span id (16 hex digits).
func newSpanID() string {
	var b [8]byte
	rand.Read(b[:])
	b[0] |= 1
	return hex.EncodeToString(b[:])
}

// runTraceParent is the traceparent of an activation of a run: a new
// span in the run's trace.
func runTraceParent(app, id string) string {
	return "00-" + RunTraceID(app, id) + "-" + newSpanID() + "-01"
}

// beginAttempt starts the clock and the span of a step attempt.
func (a *activation) beginAttempt(now time.Time) {
	a.attemptStart, a.attemptSpan = now, newSpanID()
}

// endAttempt stamps ent with its attempt's span and duration and tells
// the observer.
func (e *Engine) endAttempt(a *activation, ent *Entry, outcome string) {
	if a.attemptStart.IsZero() {
		return
	}
	d := e.opts.Now().Sub(a.attemptStart)
	ent.Span, ent.DurationMS = a.attemptSpan, max(d.Milliseconds(), 0)
	if e.opts.Observer != nil {
		e.opts.Observer.Step(a.r.app, a.fn.Name, outcome, d)
	}
	a.attemptStart = time.Time{}
}

func (e *Engine) observeEnd(rec *Run) {
	if e.opts.Observer != nil {
		e.opts.Observer.RunEnded(rec.App, rec.Workflow, rec.State)
	}
}
