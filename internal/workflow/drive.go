package workflow

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/store"
	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// drive runs r until it is finished, suspended, parked or the engine
// stops: one activation after another (replaying from the journal each
// time). One goroutine drives a run at a time (run.active).
func (e *Engine) drive(r *run) {
	defer e.wg.Done()
	backoff := e.opts.ActivationBackoff
	for {
		delay, err := e.step(r)
		if err != nil {
			// A change kept back (StartLazy, StepEnd) may have failed
			// with the commit that carried it: the next activation reads
			// the run as stored.
			e.mu.Lock()
			r.loaded = false
			e.mu.Unlock()
		}
		if err != nil && e.ctx.Err() == nil {
			e.logger.Warn("workflow activation failed; it runs again", "app", r.app, "run", r.id, "in", delay.String(), "error", err)
			if delay == 0 {
				delay = backoff
				backoff = min(2*backoff, maxActivationBackoff)
			}
		} else if err == nil {
			backoff = e.opts.ActivationBackoff
		}
		if delay > 0 && e.ctx.Err() == nil {
			e.timers.add(e.opts.Now().Add(delay), r.app, r.id)
		}
		e.mu.Lock()
		if r.again && e.ctx.Err() == nil {
			r.again = false
			e.mu.Unlock()
			continue
		}
		e.setActiveLocked(r, false)
		if len(r.waiters) == 0 {
			// Nothing holds the run in memory: a sleeping run costs its
			// timer only.
			delete(e.runs, runKey(r.app, r.id))
		} else {
			r.rec, r.loaded, r.steps, r.attempts = nil, false, nil, nil
		}
		e.mu.Unlock()
		return
	}
}

// step makes one activation of r, if it is due, and records its outcome.
// It returns the delay after which r must be driven again (0: only when
// something wakes it) and an error when the activation failed.
func (e *Engine) step(r *run) (_ time.Duration, err error) {
	if err := e.load(r); errors.Is(err, ErrRunNotFound) {
		// A lazy start (StartLazy) whose commit failed: the run does not
		// exist, and nobody was told of it.
		e.logger.Warn("workflow run not found: its start was not committed", "app", r.app, "run", r.id)
		e.mu.Lock()
		lost := r.rec
		r.rec = nil
		e.mu.Unlock()
		if lost != nil && !lost.Done() {
			e.unpin(r.app, lost.Revision) // held by its start
		}
		e.finished(r)
		return 0, nil
	} else if err != nil {
		return 0, err
	}
	e.mu.Lock()
	rec := *r.rec
	defer e.passHeld(r, rec.Workflow)
	st := e.apps[r.app]
	var slots chan struct{}
	fn, pinned, ok := st.fnFor(&rec)
	if ok {
		slots = st.slots[fn.Revision]
	}
	if !ok && st != nil {
		st.parked[r.id] = true
	}
	e.mu.Unlock()
	if rec.Done() {
		e.finished(r)
		return 0, nil
	}
	if now := e.opts.Now(); rec.State == StateSleeping && rec.WakeAt.After(now) && !r.cancelled.Load() {
		return rec.WakeAt.Sub(now), nil // never early
	}
	if !ok {
		e.logger.Warn("workflow run waits: its workflow is not in the app's active revision", "app", r.app, "run", r.id, "workflow", rec.Workflow)
		return 0, nil
	}
	if fn.Revision != rec.Revision {
		// Its revision is not held (no Revisions, or it could not be
		// loaded): the run goes on with the active revision; its journal
		// catches changes that do not replay (non-determinism).
		e.logger.Debug("workflow run continues on another revision", "app", r.app, "run", r.id, "started_on", rec.Revision, "now", fn.Revision)
	}
	release, err := e.admit(r, &rec) // the workflow's flow control (flow.go)
	if errors.Is(err, errHeld) {
		return 0, nil // woken when its flow's waiters are under the bound
	}
	if err != nil {
		return 0, err
	}
	defer release()
	if r.terminated.Load() {
		return 0, nil // terminated while it waited for its turn (terminate.go)
	}
	select {
	case slots <- struct{}{}:
	case <-e.ctx.Done():
		return 0, e.ctx.Err()
	}
	defer func() { <-slots }()

	// Whatever the activation kept back (StartLazy, StepEnd) is durable
	// when it ends, however it ends (its end, a suspension or a failure
	// commits with it; a yield or a trap does not).
	defer func() {
		if e.ctx.Err() != nil {
			return // stopping: nothing more is committed, as in a crash
		}
		if derr := e.j.durable(e.ctx, r.app, r.id, false); derr != nil && err == nil {
			err = derr
		}
	}()
	a := &activation{r: r, fn: fn}
	e.mu.Lock()
	e.actN++
	a.id = "wf-" + r.id + "-" + strconv.FormatUint(e.actN, 36)
	e.acts[a.id] = a
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		delete(e.acts, a.id)
		e.mu.Unlock()
	}()
	req := &runtime.Request{
		Method: http.MethodPost, Path: "/", InvocationID: a.id,
		Header:      http.Header{wire.HeaderRun: {r.id}, "Content-Type": {"application/json"}},
		Body:        rec.Input,
		TraceParent: runTraceParent(r.app, r.id),
	}
	if e.opts.Logs != nil {
		req.Log = e.opts.Logs.Sink(r.app, rec.Workflow, fn.Revision, a.id, a.logTag)
	}
	var resp *runtime.Response
	if pinned {
		resp, err = e.opts.Revisions.InvokeRevision(e.ctx, r.app, rec.Workflow, fn.Revision, req)
	} else {
		resp, err = e.inv.Invoke(e.ctx, r.app, rec.Workflow, req)
	}
	if e.ctx.Err() != nil {
		return 0, e.ctx.Err()
	}
	if r.terminated.Load() {
		return 0, nil // its record is final already (terminate.go)
	}
	var nd *NonDeterminismError
	switch {
	case errors.As(a.stop, &nd):
		return 0, e.finish(r, StateFailed, nil, nd.Error())
	case errors.Is(a.stop, ErrSuspended):
		return e.suspend(r, a)
	case errors.Is(err, runtime.ErrResponseTooLarge):
		// Activated again, it would answer the same: a final failure.
		return 0, e.finish(r, StateFailed, nil, fmt.Sprintf("the run's result is over the workflow's max_response_body: %v: pass large data by reference, such as a KV key", err))
	case err != nil:
		return 0, err
	}
	switch resp.Header.Get(wire.HeaderOutcome) {
	case wire.OutcomeCompleted:
		result := json.RawMessage(resp.Body)
		if !json.Valid(result) {
			result, _ = json.Marshal(string(resp.Body)) // an SDK that returns text
		}
		if len(result) > wire.MaxResultLen {
			return 0, e.finish(r, StateFailed, nil, resultTooLarge("the run's result", len(result)))
		}
		return 0, e.finish(r, StateCompleted, result, "")
	case wire.OutcomeFailed:
		return 0, e.finish(r, StateFailed, nil, truncate(string(resp.Body), MaxErrorBytes))
	case wire.OutcomeCancelled:
		return 0, e.finish(r, StateCancelled, nil, truncate(string(resp.Body), MaxErrorBytes))
	}
	return 0, fmt.Errorf("workflow %s answered %d without %s: is it registered with nimbus.RegisterWorkflow?", rec.Workflow, resp.Status, wire.HeaderOutcome)
}

// fnOf is the active workflow function of that name; st may be nil.
func (st *appState) fnOf(workflow string) (model.Function, bool) {
	if st == nil {
		return model.Function{}, false
	}
	fn, ok := st.fns[workflow]
	return fn, ok
}

// load reads r's record and journal if they are not in memory.
func (e *Engine) load(r *run) error {
	e.mu.Lock()
	loaded := r.loaded && r.rec != nil
	e.mu.Unlock()
	if loaded {
		return nil
	}
	// What the run kept back is read with the rest (StartLazy, StepEnd).
	if err := e.j.durable(e.ctx, r.app, r.id, false); err != nil {
		return err
	}
	rec, err := e.j.record(e.ctx, r.app, r.id)
	if err != nil {
		return err
	}
	ents, err := e.j.entries(e.ctx, r.app, r.id)
	if err != nil {
		return err
	}
	steps, attempts := fold(ents)
	e.mu.Lock()
	r.rec, r.loaded, r.steps, r.attempts = rec, true, steps, attempts
	e.mu.Unlock()
	r.loadControl(ents)
	return nil
}

// fold turns a journal into the final entries by position and the failed
// attempts by position.
func fold(ents []Entry) ([]Entry, map[int][]Entry) {
	var steps []Entry
	attempts := map[int][]Entry{}
	for _, e := range ents {
		switch e.Type {
		case EntryStep, EntrySleep, EntryWait, EntryCut:
			if e.Pos == len(steps) {
				steps = append(steps, e)
			}
		case EntryAttempt:
			attempts[e.Pos] = append(attempts[e.Pos], e)
		case EntryRetry:
			steps = applyRetry(steps, attempts, e.Pos)
		}
	}
	return steps, attempts
}

// finish records the run's end: its final record, one message (the
// timeline shows it as the last entry).
func (e *Engine) finish(r *run, state string, result []byte, msg string) error {
	now := e.opts.Now().UTC()
	e.mu.Lock()
	rec := *r.rec
	steps := len(r.steps)
	e.mu.Unlock()
	rec.State, rec.Result, rec.Error, rec.Updated, rec.Steps, rec.WakeAt = state, result, msg, now, steps, time.Time{}
	if state == StateCancelled {
		// Asked when it was cancelled; again here, before its end is
		// committed, for a crash in between or a child started since
		// (children.go).
		if err := e.cancelChildren(e.ctx, r.app, r.id); err != nil {
			return fmt.Errorf("cancel the children of run %s: %w", r.id, err)
		}
	}
	err := e.commitEnd(e.ctx, &rec)
	if errors.Is(err, store.ErrWriteTooLarge) && rec.Result != nil {
		// The result fits MaxResultLen but not with the input in the
		// record (and, for a child, its copy to the parent): the run
		// fails rather than stay stuck on a commit that cannot be made.
		rec.State, rec.Result = StateFailed, nil
		rec.Error = fmt.Sprintf("the run's result (%d bytes) and its input (%d bytes) are more than a run's record holds (about %d bytes): pass large data by reference, such as a KV key",
			len(result), len(rec.Input), e.j.c.MaxWriteBytes())
		err = e.commitEnd(e.ctx, &rec)
	}
	if errors.Is(err, errFinal) {
		return e.ended(r)
	} else if err != nil {
		return err
	}
	e.mu.Lock()
	r.rec = &rec
	e.mu.Unlock()
	e.observeEnd(&rec)
	if !r.terminated.Load() { // a termination released it
		e.unpin(r.app, rec.Revision)
	}
	e.finished(r)
	return nil
}

// finished wakes whoever waits for r.
func (e *Engine) finished(r *run) {
	e.mu.Lock()
	ws := r.waiters
	r.waiters = nil
	e.mu.Unlock()
	for _, ch := range ws {
		close(ch)
	}
}

// suspend records a suspended activation: the run sleeps until a.wakeAt
// (its sleep or attempt entry is in the journal already). A yield (the
// activation ran out of time) is activated again at once.
func (e *Engine) suspend(r *run, a *activation) (time.Duration, error) {
	now := e.opts.Now()
	if a.waiting {
		return waitDelay(a, now), nil // the wait wrote the record (signals.go)
	}
	if !a.wakeAt.After(now) || r.cancelled.Load() {
		e.mu.Lock()
		r.again = true
		e.mu.Unlock()
		return 0, nil
	}
	e.mu.Lock()
	rec := *r.rec
	rec.Steps = len(r.steps)
	e.mu.Unlock()
	rec.State, rec.WakeAt, rec.Updated = StateSleeping, a.wakeAt.UTC(), now.UTC()
	if err := e.j.commit(e.ctx, r.app, r.id, nil, &rec); errors.Is(err, errFinal) {
		return 0, e.ended(r)
	} else if err != nil {
		return 0, err
	}
	e.mu.Lock()
	r.rec = &rec
	e.mu.Unlock()
	return a.wakeAt.Sub(now), nil
}

// ended is finish and suspend when the run's record is final already (it
// was terminated meanwhile): the stored record stays, and is the run's.
func (e *Engine) ended(r *run) error {
	rec, err := e.j.record(e.ctx, r.app, r.id)
	if err != nil {
		return err
	}
	e.setRecord(r, rec)
	e.finished(r)
	return nil
}
