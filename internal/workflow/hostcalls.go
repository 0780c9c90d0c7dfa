package workflow

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// The backend of the workflow host calls (capability.WorkflowService is
// the runtime-neutral front, internal/runtime/wasm/hostfn the wasm ABI).
// They are called by a run's activation, on the goroutine that drives the
// run (the guest runs inside Invoke), so the run's steps and attempts need
// no lock.

// StepAnswer is what StepBegin answers.
type StepAnswer struct {
	// Replay is set when the step completed before: Result is its result,
	// or its error message when Failed. Do not run it.
	Replay bool
	Result []byte
	Failed bool
	// Attempt is the attempt to run now (from 1), when not Replay.
	Attempt int
}

// replayed answers a recorded step: its result, or the message of the
// error it failed with for good.
func replayed(rec Entry) StepAnswer {
	if rec.Failed {
		return StepAnswer{Replay: true, Result: []byte(rec.Error), Failed: true}
	}
	return StepAnswer{Replay: true, Result: rec.Result}
}

// activation returns the activation of invocation id of app.
func (e *Engine) activation(app, id string) (*activation, error) {
	e.mu.Lock()
	a := e.acts[id]
	e.mu.Unlock()
	if a == nil || a.r.app != app {
		return nil, ErrNoRun
	}
	return a, nil
}

// check is the common start of a host call at pos.
func (e *Engine) check(app, invocation string, pos int) (*activation, error) {
	a, err := e.activation(app, invocation)
	if err != nil {
		return nil, err
	}
	if a.stop != nil {
		return nil, a.stop
	}
	if pos != a.next {
		return nil, fmt.Errorf("%w: position %d, expected %d", ErrBadStep, pos, a.next)
	}
	return a, nil
}

// mismatch fails the activation's run for non-determinism at pos.
func (a *activation) mismatch(pos int, rec Entry, gotKind, got string) error {
	a.stop = &NonDeterminismError{Pos: pos, Recorded: rec.Name, RecordedKind: rec.Type, Got: got, GotKind: gotKind,
		Workflow: a.fn.Name, RunID: a.r.id}
	return a.stop
}

// suspendAt makes every further call of the activation answer
// ErrSuspended, and the run wake at t.
func (a *activation) suspendAt(t time.Time) error {
	a.stop, a.wakeAt = ErrSuspended, t
	return a.stop
}

// StepBegin is called before the step name at pos runs.
func (e *Engine) StepBegin(ctx context.Context, app, invocation string, pos int, name string) (StepAnswer, error) {
	if a, err := e.activation(app, invocation); err == nil && a.stop == nil && pos == a.next-1 && pos < len(a.r.steps) && a.r.steps[pos].Name == name {
		// The same replayed step asked again (its result did not fit the
		// guest's buffer).
		rec := a.r.steps[pos]
		return replayed(rec), nil
	}
	a, err := e.check(app, invocation, pos)
	if err != nil {
		return StepAnswer{}, err
	}
	if err := e.cancelGate(ctx, a, pos, name); err != nil {
		return StepAnswer{}, err
	}
	r := a.r
	if pos < len(r.steps) {
		rec := r.steps[pos]
		if rec.Type != EntryStep || rec.Name != name {
			return StepAnswer{}, a.mismatch(pos, rec, EntryStep, name)
		}
		a.next++
		return replayed(rec), nil
	}
	// A new step. Unwind rather than start it with too little time left:
	// the next activation gets a whole timeout.
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < a.fn.Timeout()/4 {
		return StepAnswer{}, a.suspendAt(e.opts.Now())
	}
	atts := r.attempts[pos]
	if n := len(atts); n > 0 {
		last := atts[n-1]
		if last.Name != name {
			return StepAnswer{}, a.mismatch(pos, Entry{Type: EntryStep, Name: last.Name}, EntryStep, name)
		}
		if err := e.waitUntil(ctx, a, last.WakeAt); err != nil {
			return StepAnswer{}, err
		}
	}
	// The step may act on what the run did so far: the ends of the
	// steps before it, kept back by StepEnd, are durable first (a lazy
	// start alone may stay back: see StartLazy).
	if err := e.j.durable(ctx, r.app, r.id, true); err != nil {
		return StepAnswer{}, err
	}
	a.begun, a.stepName = pos+1, name
	a.fx = nil
	a.beginAttempt(e.opts.Now())
	return StepAnswer{Attempt: len(atts) + 1}, nil
}

// StepEnd records the outcome of the attempt StepBegin allowed. For a
// failure, retry is the delay before the next attempt, or negative when
// the failure is final. It answers again=true when the next attempt must
// run now.
func (e *Engine) StepEnd(ctx context.Context, app, invocation string, pos int, name string, result []byte, failed bool, retry time.Duration) (again bool, _ error) {
	a, err := e.check(app, invocation, pos)
	if err != nil {
		return false, err
	}
	r := a.r
	if pos != len(r.steps) {
		return false, fmt.Errorf("%w: step %q at position %d was replayed, not begun", ErrBadStep, name, pos)
	}
	if !failed && !json.Valid(result) {
		return false, fmt.Errorf("%w: the result of step %q is not JSON", ErrBadStep, name)
	}
	if !failed && len(result) > wire.MaxResultLen {
		// The Go SDK fails such an attempt itself (and retries it); from
		// another guest it is a final failure, never a record too large
		// to commit (a run stuck on it).
		result, failed, retry = []byte(resultTooLarge("result", len(result))), true, -1
	}
	if failed {
		result = []byte(truncate(string(result), MaxErrorBytes))
	}
	now := e.opts.Now().UTC()
	attempt := len(r.attempts[pos]) + 1
	if failed && retry >= 0 {
		ent := Entry{Type: EntryAttempt, Time: now, Pos: pos, Name: name, Attempt: attempt, Error: string(result), WakeAt: now.Add(retry)}
		e.endAttempt(a, &ent, "retried")
		if err := e.j.commit(ctx, r.app, r.id, &ent, nil); err != nil {
			return false, err
		}
		r.attempts[pos] = append(r.attempts[pos], ent)
		if a.fx != nil {
			a.fx.effs = nil // the failed attempt's effects are dropped
		}
		if err := e.waitUntil(ctx, a, ent.WakeAt); err != nil {
			return false, err
		}
		a.beginAttempt(e.opts.Now())
		return true, nil
	}
	ent := Entry{Type: EntryStep, Time: now, Pos: pos, Name: name, Attempt: attempt}
	if failed {
		ent.Error, ent.Failed = string(result), true
		e.endAttempt(a, &ent, "failed")
	} else {
		ent.Result = result
		e.endAttempt(a, &ent, "completed")
		if a.fx != nil && a.fx.pos == pos {
			// Committed with the step, applied before the commit answers.
			ent.Effects = a.fx.effs
		}
	}
	a.fx = nil
	if len(ent.Effects) == 0 {
		// Kept back, not committed now: nothing depends on the step's end
		// before the run's next operation (a step, a sleep, a wait, a
		// child's start, a write outside a journaled step, its end, the
		// end of the activation), which makes it durable first or commits
		// it with its own change (RATIONALE.md "Durable workflows: a
		// change is durable before what depends on it"). A step with
		// effects commits now: they are applied after the commit, before
		// StepEnd answers.
		err = e.j.commitLazy(ctx, r.app, r.id, &ent)
	} else {
		err = e.j.commit(ctx, r.app, r.id, &ent, nil)
	}
	if err != nil {
		return false, err
	}
	r.steps = append(r.steps, ent)
	a.next++
	a.begun = 0
	return false, nil
}

// Sleep is a durable timer at pos: it returns once until (as first
// recorded) has passed, waiting inside the activation when that is at
// most ShortWait away, else suspending the run until then.
func (e *Engine) Sleep(ctx context.Context, app, invocation string, pos int, until time.Time) error {
	a, err := e.check(app, invocation, pos)
	if err != nil {
		return err
	}
	if err := e.cancelGate(ctx, a, pos, "sleep"); err != nil {
		return err
	}
	r := a.r
	var wake time.Time
	if pos < len(r.steps) {
		rec := r.steps[pos]
		if rec.Type != EntrySleep {
			return a.mismatch(pos, rec, EntrySleep, "sleep")
		}
		wake = rec.WakeAt
	} else {
		ent := Entry{Type: EntrySleep, Time: e.opts.Now().UTC(), Pos: pos, Name: "sleep", WakeAt: until.UTC()}
		if err := e.j.commit(ctx, r.app, r.id, &ent, nil); err != nil {
			return err
		}
		r.steps = append(r.steps, ent)
		wake = ent.WakeAt
	}
	if err := e.waitUntil(ctx, a, wake); err != nil {
		return err
	}
	a.next++
	return nil
}

// waitUntil returns once t has passed: at once, after waiting here when t
// is at most ShortWait away, or ErrSuspended (the run wakes at t).
func (e *Engine) waitUntil(ctx context.Context, a *activation, t time.Time) error {
	d := t.Sub(e.opts.Now())
	if d <= 0 {
		return nil
	}
	if d > e.opts.ShortWait {
		return a.suspendAt(t)
	}
	for d > 0 {
		tm := time.NewTimer(d)
		select {
		case <-ctx.Done():
			tm.Stop()
			return ctx.Err()
		case <-tm.C:
		}
		d = t.Sub(e.opts.Now())
	}
	return nil
}
