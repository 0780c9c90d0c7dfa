package workflow

import (
	"context"
	"fmt"
	"time"

	"github.com/nimbus-dev/nimbus/internal/model"
)

// Retrying a failed run from its failed step.
//
// Retry journals EntryRetry at the position of the run's last failed
// step (not a compensation) and moves the record from failed back to
// running, in one unit (a compare-and-swap on the record, like every
// control change). The journal stays append-only: fold, meeting
// EntryRetry, forgets every outcome and attempt at that position and
// after, so the next activation replays the steps before it from the
// journal (they do not run again) and runs the failed step afresh, with
// its whole retry policy and the same idempotency key. A run whose
// failure came from no step (the workflow function returned an error of
// its own) is retried from the end of its journal: its code runs again
// from there.
//
// A run whose compensations ran (or began) is refused: continuing after
// the failed step without what they undid could do worse than failing.

// EntryRetry (Entry.Type): a retry of the failed run from Pos (the
// failed step Name); Error is the failure it retries.
const EntryRetry = "retry"

// Retry makes a failed run go on from its failed step: the steps before
// it keep their recorded results, the failed step runs again. It answers
// the run's record, running again. A run that is not failed, or that ran
// compensations, answers ErrNotRetryable; nothing changes then.
func (e *Engine) Retry(ctx context.Context, app, id string) (*Run, error) {
	if err := CheckRunID(id); err != nil {
		return nil, err
	}
	// The run goes on with the active revision of its workflow (deploy
	// the fix, then retry), which it holds from now on (versions.go).
	var fn model.Function
	var active bool
	held := false
	defer func() {
		if held {
			e.unpin(app, fn.Revision)
		}
	}()
	rec, err := e.update(ctx, app, id, func(rec *Run) (*Entry, error) {
		if !held {
			e.mu.Lock()
			fn, active = e.apps[app].fnOf(rec.Workflow)
			e.mu.Unlock()
			if active {
				if err := e.pin(ctx, app, fn, 1); err != nil {
					return nil, err
				}
				held = true
			}
		}
		if active {
			rec.Revision = fn.Revision
		}
		if rec.State != StateFailed {
			return nil, fmt.Errorf("%w: run %s is %s; only a failed run can be retried (start a new run instead)", ErrNotRetryable, id, rec.State)
		}
		ents, err := e.j.entries(ctx, app, id)
		if err != nil {
			return nil, err
		}
		pos, name, err := retryPoint(id, ents)
		if err != nil {
			return nil, err
		}
		prev := rec.Error
		rec.State, rec.Error, rec.Result, rec.WakeAt, rec.Steps = StateRunning, "", nil, time.Time{}, pos
		return &Entry{Type: EntryRetry, Time: e.opts.Now().UTC(), Pos: pos, Name: name, Error: prev}, nil
	})
	if err != nil {
		return nil, err
	}
	held = false // the run keeps it until its end
	e.mu.Lock()
	if r := e.runs[runKey(app, id)]; r != nil {
		r.loaded = false // the next activation folds the journal again
		if r.rec != nil {
			cp := *rec
			r.rec = &cp
		}
	}
	e.mu.Unlock()
	e.wake(app, id)
	return rec, nil
}

// retryPoint is where a retry of a failed run with journal ents goes on:
// the position of its last failed step that is not a compensation (and
// the step's name), else the end of its journal. It refuses a run whose
// compensations left an entry after that point.
func retryPoint(id string, ents []Entry) (int, string, error) {
	steps, attempts := fold(ents)
	pos, name := len(steps), ""
	for i := len(steps) - 1; i >= 0; i-- {
		if s := steps[i]; s.Type == EntryStep && s.Failed && !IsCompensation(s.Name) {
			pos, name = i, s.Name
			break
		}
	}
	for i := pos; i < len(steps); i++ {
		if IsCompensation(steps[i].Name) {
			return 0, "", compensatedError(id, steps[i].Name)
		}
	}
	for p, atts := range attempts {
		if p >= pos && len(atts) > 0 && IsCompensation(atts[0].Name) {
			return 0, "", compensatedError(id, atts[0].Name)
		}
	}
	return pos, name, nil
}

func compensatedError(id, step string) error {
	return fmt.Errorf("%w: run %s ran its compensation %q after it failed; going on without what it undid could do harm: start a new run",
		ErrNotRetryable, id, step[len(CompensationPrefix):])
}

// applyRetry makes steps and attempts forget every position from pos on
// (fold's handling of EntryRetry).
func applyRetry(steps []Entry, attempts map[int][]Entry, pos int) []Entry {
	if pos < len(steps) {
		steps = steps[:pos]
	}
	for p := range attempts {
		if p >= pos {
			delete(attempts, p)
		}
	}
	return steps
}
