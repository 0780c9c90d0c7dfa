package workflow

import (
	"context"
	"fmt"
	"time"
)

// Pausing: a paused run starts nothing new. Pause journals EntryPause and
// moves the record to StatePaused (a compare-and-swap, like every control
// change); a restart does not wake a paused run. An activation in flight
// finishes the step it runs; at its next operation that is not a
// recorded outcome, the gate (cancelGate) holds the run: it ends the
// activation and the run stays in memory as nothing but its record.
// Resume journals EntryResume, moves the record to running and wakes the
// run, which replays to where it stopped and goes on (a sleep or a wait
// suspends it again as usual). A cancel ends a pause.

// More entry types (Entry.Type) and a state (Run.State).
const (
	// EntryPause: the run was paused (Error: the reason).
	EntryPause = "pause"
	// EntryResume: the run was resumed.
	EntryResume = "resume"

	// StatePaused: paused; it starts no new step until resumed.
	StatePaused = "paused"
)

// pausedIn reports whether a journal's last pause, resume or cancel is a
// pause.
func pausedIn(ents []Entry) bool {
	paused := false
	for _, e := range ents {
		switch e.Type {
		case EntryPause:
			paused = true
		case EntryResume, EntryCancel:
			paused = false
		}
	}
	return paused
}

// hold ends a paused run's activation: its record says paused, and only
// Resume (or Cancel) wakes it.
func (e *Engine) hold(ctx context.Context, a *activation) error {
	r := a.r
	for range 100 {
		rec, seq, err := e.j.recordAt(ctx, r.app, r.id)
		if err != nil {
			return err
		}
		ents, err := e.j.entries(ctx, r.app, r.id)
		if err != nil {
			return err
		}
		if !pausedIn(ents) {
			r.paused.Store(false)
			return nil // resumed meanwhile
		}
		if rec.State != StatePaused {
			rec.State, rec.WakeAt, rec.Updated = StatePaused, time.Time{}, e.opts.Now().UTC()
			ok, err := e.j.commitIf(ctx, r.app, r.id, nil, rec, seq)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
		}
		e.setRecord(r, rec)
		a.waiting = true // no timer: Resume wakes it
		return a.suspendAt(time.Time{})
	}
	return fmt.Errorf("workflow run %s/%s: hold for pause: its record kept changing", r.app, r.id)
}

// Pause pauses a run: it starts no new step (a step running now
// finishes) until Resume. A finished run answers ErrRunFinished, a run
// being cancelled ErrAlreadyCancelling, a paused one ErrRunPaused.
func (e *Engine) Pause(ctx context.Context, app, id, reason string) (*Run, error) {
	if err := CheckRunID(id); err != nil {
		return nil, err
	}
	if len(reason) > 1024 {
		return nil, fmt.Errorf("%w: a pause reason is at most 1024 bytes", ErrInvalid)
	}
	rec, err := e.update(ctx, app, id, func(rec *Run) (*Entry, error) {
		if err := e.controllable(rec, "pause"); err != nil {
			return nil, err
		}
		ents, err := e.j.entries(ctx, app, id)
		if err != nil {
			return nil, err
		}
		if pausedIn(ents) {
			return nil, fmt.Errorf("%w: run %s; resume it with `nimbus wf resume %s %s`", ErrRunPaused, id, app, id)
		}
		rec.State = StatePaused
		return &Entry{Type: EntryPause, Time: e.opts.Now().UTC(), Error: reason}, nil
	})
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	if r := e.runs[runKey(app, id)]; r != nil {
		r.paused.Store(true)
		r.loaded = false
	}
	e.mu.Unlock()
	return rec, nil
}

// Resume resumes a paused run. A run that is not paused answers
// ErrRunNotPaused, a finished one ErrRunFinished.
func (e *Engine) Resume(ctx context.Context, app, id string) (*Run, error) {
	if err := CheckRunID(id); err != nil {
		return nil, err
	}
	rec, err := e.update(ctx, app, id, func(rec *Run) (*Entry, error) {
		if err := e.controllable(rec, "resume"); err != nil {
			return nil, err
		}
		ents, err := e.j.entries(ctx, app, id)
		if err != nil {
			return nil, err
		}
		if !pausedIn(ents) {
			return nil, fmt.Errorf("%w: run %s is %s", ErrRunNotPaused, id, rec.State)
		}
		rec.State, rec.WakeAt = StateRunning, time.Time{}
		return &Entry{Type: EntryResume, Time: e.opts.Now().UTC()}, nil
	})
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	if r := e.runs[runKey(app, id)]; r != nil {
		r.paused.Store(false)
		r.loaded = false
	}
	e.mu.Unlock()
	e.wake(app, id)
	return rec, nil
}

// controllable refuses to pause or resume a finished or cancelling run.
func (e *Engine) controllable(rec *Run, verb string) error {
	switch {
	case rec.Done():
		return fmt.Errorf("%w: run %s is %s already; there is nothing to %s", ErrRunFinished, rec.ID, rec.State, verb)
	case rec.State == StateCancelling:
		return fmt.Errorf("%w: run %s; it cannot %s", ErrAlreadyCancelling, rec.ID, verb)
	}
	return nil
}
