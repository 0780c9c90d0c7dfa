package workflow

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// Terminating: a run ends at once, in state terminated, without running
// its compensations or any more of its code. Terminate writes the final
// record with EntryTerminated (a compare-and-swap); an activation in
// flight is answered "suspended" at its next host call and its outcome
// is discarded. A step running then may still record its result (after
// the final record: the timeline shows it). Use Cancel to undo what the
// run did; Terminate is for a run that must stop now (it loops, it is
// stuck on a broken dependency).

// More entry types (Entry.Type) and a state (Run.State).
const (
	// EntryTerminated: the run was terminated (Error: the reason).
	EntryTerminated = "terminated"
	// StateTerminated: the run was terminated (final).
	StateTerminated = "terminated"
)

// Terminate ends a run now, without compensations. A finished run
// answers ErrRunFinished.
func (e *Engine) Terminate(ctx context.Context, app, id, reason string) (*Run, error) {
	if err := CheckRunID(id); err != nil {
		return nil, err
	}
	if len(reason) > 1024 {
		return nil, fmt.Errorf("%w: a termination reason is at most 1024 bytes", ErrInvalid)
	}
	// Its children are terminated after it (children.go): its final
	// record says so until they are, for a start after a crash to finish.
	ents, err := e.j.entries(ctx, app, id)
	if err != nil {
		return nil, err
	}
	children := childIDs(id, ents)
	now := e.opts.Now().UTC()
	rec, err := e.update(ctx, app, id, func(rec *Run) (*Entry, error) {
		if rec.Done() {
			return nil, fmt.Errorf("%w: run %s is %s already; there is nothing to terminate", ErrRunFinished, id, rec.State)
		}
		// A running run's step may have started a child its journal does
		// not name yet (inFlightChild): terminateChildren looks there too.
		rec.ChildrenPending = len(children) > 0 || rec.State == StateRunning || rec.State == StateCancelling
		rec.ParentPending = rec.Parent != ""
		rec.State, rec.WakeAt, rec.Error = StateTerminated, time.Time{}, "terminated"
		if reason != "" {
			rec.Error += ": " + reason
		}
		return &Entry{Type: EntryTerminated, Time: now, Error: reason}, nil
	})
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	var started []string // children of steps in flight (StartChild)
	if r := e.runs[runKey(app, id)]; r != nil {
		r.terminated.Store(true)
		r.loaded = false
		started = slices.Clone(r.children)
	}
	e.mu.Unlock()
	e.observeEnd(rec)
	e.unpin(app, rec.Revision)
	e.wake(app, id) // wakes whoever waits for its end
	if rec.Parent != "" {
		// Not in the termination's unit: the record says ParentPending
		// until the parent is told, and a start after a crash in between
		// tells it (children.go).
		if err := e.tellParent(ctx, rec, false); err != nil {
			e.logger.Warn("workflow child terminated; its parent was not told (the next start of the node tells it)", "app", app, "run", id, "parent", rec.Parent, "error", err)
		} else if err := e.clearFlag(ctx, app, id, func(rec *Run) *bool { return &rec.ParentPending }); err != nil {
			e.logger.Warn("workflow child terminated and its parent told; its record still says parent_pending", "app", app, "run", id, "error", err)
		} else {
			rec.ParentPending = false
		}
	}
	if rec.ChildrenPending {
		if err := e.terminateChildren(ctx, app, id); err != nil {
			e.logger.Warn("workflow run terminated; its children were not all terminated (the next start of the node does it)", "app", app, "run", id, "error", err)
		} else {
			rec.ChildrenPending = false
		}
	}
	if extra := slices.DeleteFunc(started, func(c string) bool { return slices.Contains(children, c) }); len(extra) > 0 {
		// Started by a step that had not ended: not in the journal read
		// above. After a crash before this, the next start finds such a
		// child at the run's first open position (ChildrenPending,
		// inFlightChild).
		if err := e.closeChildren(ctx, app, id, extra, true); err != nil {
			e.logger.Warn("workflow run terminated; a child its running step started was not terminated", "app", app, "run", id, "error", err)
		}
	}
	return rec, nil
}
