package nimbus

import (
	"errors"
	"time"

	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// compensation is one registered undo action.
type compensation struct {
	name string
	fn   func() error
	opts []StepOption
}

// DefaultCompensationRetry is the retry policy of a compensation
// registered without one: an undo is worth insisting on.
var DefaultCompensationRetry = Retry{MaxAttempts: 10, Backoff: time.Second, MaxBackoff: time.Minute}

// Compensate registers fn as the undo of what the workflow did so far
// (register it right after the step it undoes succeeds). If the workflow
// function returns an error (a step failed for good, or any other), or
// the run is cancelled, the compensations registered run before the run
// ends, in reverse order of registration, each once: each is a step
// named "nimbus.compensate:"+name, journaled and retried
// (DefaultCompensationRetry unless opts give a Retry), with its KV writes
// and publishes committed with it like any step's, so a crash during
// compensation resumes it and a compensation that completed never runs
// again. A compensation that fails for good does not stop the others;
// the run's error lists it. Inside fn, wf.IdempotencyKey() is the
// compensation's own key.
//
// Compensate is workflow code: it must be called outside steps, and the
// same way on every replay.
func (wf *Workflow) Compensate(name string, fn func() error, opts ...StepOption) {
	if wf.inStep {
		panic("nimbus: Compensate " + name + " called inside a step; register it after the step returns")
	}
	// The default first: a Retry in opts replaces it.
	opts = append([]StepOption{DefaultCompensationRetry}, opts...)
	wf.comps = append(wf.comps, compensation{name: name, fn: fn, opts: opts})
}

// compensate runs the registered compensations in reverse order, and
// forgets them.
func (wf *Workflow) compensate() error {
	comps := wf.comps
	wf.comps = nil
	var errs []error
	for i := len(comps) - 1; i >= 0; i-- {
		c := comps[i]
		_, err := Step(wf, wire.CompensationPrefix+c.name, func() (struct{}, error) {
			return struct{}{}, c.fn()
		}, c.opts...)
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
