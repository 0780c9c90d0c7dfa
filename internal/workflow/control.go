package workflow

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// Control of runs from outside: cancellation, and the compare-and-swap
// update of a run's record that it shares with signals (signals.go).
//
// Cancelling a run journals EntryCancel and moves its record to
// StateCancelling (one unit). The run's next activation replays its
// journal up to the first operation that is not a recorded outcome (a new
// step, sleep or wait, or a sleep not yet over): there the cancellation
// takes effect, recorded as EntryCut at that position, and the host
// answers the guest "cancelled". The SDK then runs the compensations the
// workflow registered, as steps named CompensationPrefix+name from the
// next position on (retried and journaled like any step; they pass the
// gate), and answers the outcome "cancelled". A replay after a crash
// meets the same cut at the same position, so compensations already
// journaled are replayed, not run again.

// More entry types (Entry.Type) and states (Run.State).
const (
	// EntryCancel: cancellation was requested (Error: the reason).
	EntryCancel = "cancel"
	// EntryCut: the cancellation took effect at Pos, instead of the
	// operation Name the code reached there.
	EntryCut = "cut"
	// EntryCancelled: the run ended cancelled, after its compensations.
	EntryCancelled = "cancelled"

	// StateCancelling: cancellation was requested; the run unwinds and
	// runs its compensations.
	StateCancelling = "cancelling"
	// StateCancelled: the run was cancelled (final).
	StateCancelled = "cancelled"
)

// CompensationPrefix starts the step names of compensations (the Go SDK's
// Workflow.Compensate): such steps still run once the run is cancelled.
const CompensationPrefix = wire.CompensationPrefix

// IsCompensation reports whether a step name is a compensation's.
func IsCompensation(name string) bool { return strings.HasPrefix(name, CompensationPrefix) }

// loadControl sets what the journal says of cancellation. cancelled is
// only ever set: Cancel may set it while the journal is read.
func (r *run) loadControl(ents []Entry) {
	r.hasCut = false
	r.paused.Store(pausedIn(ents))
	for _, e := range ents {
		switch e.Type {
		case EntryCancel:
			r.cancelled.Store(true)
		case EntryTerminated:
			r.terminated.Store(true)
		case EntryCut:
			if !r.hasCut {
				r.hasCut, r.cut = true, e.Pos
			}
		}
	}
}

// cancelGate is the first check of a host call at pos for the operation
// name: it answers ErrCancelled where the run's cancellation takes (or
// took, on a replay) effect, and nil everywhere else.
func (e *Engine) cancelGate(ctx context.Context, a *activation, pos int, name string) error {
	r := a.r
	if r.terminated.Load() {
		return a.suspendAt(time.Time{}) // unwind; the run's record is final
	}
	if r.paused.Load() && !e.recorded(r, pos) {
		return e.hold(ctx, a)
	}
	if r.hasCut {
		if pos == r.cut && !IsCompensation(name) {
			a.next = pos + 1
			return ErrCancelled
		}
		return nil
	}
	if !r.cancelled.Load() || IsCompensation(name) {
		return nil
	}
	if e.recorded(r, pos) {
		return nil // replay it
	}
	now := e.opts.Now()
	ent := Entry{Type: EntryCut, Time: now.UTC(), Pos: pos, Name: name}
	if err := e.j.commit(ctx, r.app, r.id, &ent, nil); err != nil {
		return err
	}
	if pos == len(r.steps) {
		r.steps = append(r.steps, ent)
	}
	r.hasCut, r.cut = true, pos
	a.next = pos + 1
	return ErrCancelled
}

// recorded reports whether the operation at pos is a recorded outcome
// (a step, a wait's outcome, a sleep that is over), which a replay
// returns, unlike a new operation or a sleep still running.
func (e *Engine) recorded(r *run, pos int) bool {
	if pos >= len(r.steps) {
		return false
	}
	rec := r.steps[pos]
	return rec.Type != EntrySleep || !rec.WakeAt.After(e.opts.Now())
}

// Cancel requests the cancellation of a run: it stops at its next
// operation, runs its compensations in reverse order and ends cancelled.
// A finished run answers ErrRunFinished, a run already cancelling
// ErrAlreadyCancelling; nothing changes then.
func (e *Engine) Cancel(ctx context.Context, app, id, reason string) (*Run, error) {
	if err := CheckRunID(id); err != nil {
		return nil, err
	}
	if len(reason) > 1024 {
		return nil, fmt.Errorf("%w: a cancellation reason is at most 1024 bytes", ErrInvalid)
	}
	now := e.opts.Now().UTC()
	rec, err := e.update(ctx, app, id, func(rec *Run) (*Entry, error) {
		switch {
		case rec.Done():
			return nil, fmt.Errorf("%w: run %s is %s already; there is nothing to cancel", ErrRunFinished, id, rec.State)
		case rec.State == StateCancelling:
			return nil, fmt.Errorf("%w: run %s (cancellation requested at %s); wait for it to end cancelled", ErrAlreadyCancelling, id, rec.Updated.Format(time.RFC3339))
		}
		rec.State, rec.WakeAt = StateCancelling, time.Time{}
		return &Entry{Type: EntryCancel, Time: now, Error: reason}, nil
	})
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	if r := e.runs[runKey(app, id)]; r != nil {
		r.paused.Store(false) // a cancel ends a pause: compensations run
		r.cancelled.Store(true)
		r.loaded = false // the next activation reads the record and journal again
	}
	e.mu.Unlock()
	e.wake(app, id)
	// Its children are asked now, so that they unwind with it; the run
	// asks again before it ends cancelled (children.go).
	if err := e.cancelChildren(ctx, app, id); err != nil {
		e.logger.Warn("workflow run cancelled; its children were not all asked to cancel yet", "app", app, "run", id, "error", err)
	}
	return rec, nil
}

// update applies change to a run's stored record and commits the entry
// it returns with the changed record, as a compare-and-swap on the
// record: when another write came between, it reads again and retries.
// change returns an error to change nothing.
func (e *Engine) update(ctx context.Context, app, id string, change func(*Run) (*Entry, error)) (*Run, error) {
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	for range 100 {
		rec, seq, err := e.j.recordAt(ctx, app, id)
		if err != nil {
			return nil, err
		}
		ent, err := change(rec)
		if err != nil {
			return nil, err
		}
		rec.Updated = e.opts.Now().UTC()
		ok, err := e.j.commitIf(ctx, app, id, []*Entry{ent}, rec, seq)
		if err != nil {
			return nil, err
		}
		if ok {
			return rec, nil
		}
	}
	return nil, fmt.Errorf("workflow run %s/%s: its record kept changing; try again", app, id)
}
