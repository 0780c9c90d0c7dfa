package workflow

import (
	"errors"
	"fmt"

	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// Errors of the workflow engine. The API maps them to HTTP
// (internal/apierror); the capability service maps the host-call ones to
// guest status codes.
var (
	// ErrInvalid: a start's arguments are malformed (run id, input).
	ErrInvalid = errors.New("invalid workflow request")
	// ErrWorkflowNotFound: the app has no active workflow of that name.
	ErrWorkflowNotFound = errors.New("workflow not found")
	// ErrFunctionNotFound: a call to a function the app does not have
	// (the Invoker wraps its own not-found error with it).
	ErrFunctionNotFound = errors.New("function not found")
	// ErrRunNotFound: the app has no run of that id.
	ErrRunNotFound = errors.New("workflow run not found")
	// ErrStartNotStored: a run started lazily (StartLazy: its start rides
	// with its first commit) whose first commit failed: the run does not
	// exist (Wait answers ErrRunNotFound; the caller that started it
	// knows better and answers this).
	ErrStartNotStored = errors.New("workflow run start not stored")
	// ErrRunConflict: a run id is taken by a run of another workflow.
	ErrRunConflict = errors.New("workflow run id is taken")
	// ErrNoRun: a host call that is not made by a run's activation.
	ErrNoRun = errors.New("not called by a workflow run")
	// ErrSuspended: the activation is suspended (a long sleep or retry
	// backoff, or its time is running out); the guest must unwind.
	ErrSuspended = errors.New("workflow run suspended")
	// ErrBadStep: a host call out of sequence (a position that skips one,
	// a step ended that was not begun).
	ErrBadStep = errors.New("workflow call out of sequence")
	// ErrNonDeterminism: the code no longer matches the journal (a
	// *NonDeterminismError).
	ErrNonDeterminism = errors.New("workflow non-determinism")
	// ErrClosed: the engine is closed.
	ErrClosed = errors.New("workflow engine closed")
	// ErrRunFinished: a signal or a cancellation for a run that has
	// finished (completed, failed or cancelled).
	ErrRunFinished = errors.New("workflow run is finished")
	// ErrAlreadyCancelling: a cancellation of a run whose cancellation
	// was requested already.
	ErrAlreadyCancelling = errors.New("workflow run is already being cancelled")
	// ErrRunPaused: a pause of a paused run.
	ErrRunPaused = errors.New("workflow run is paused already")
	// ErrRunNotPaused: a resume of a run that is not paused.
	ErrRunNotPaused = errors.New("workflow run is not paused")
	// ErrNotRetryable: a retry of a run that is not failed, or whose
	// compensations ran (retry.go).
	ErrNotRetryable = errors.New("workflow run cannot be retried")
	// ErrCancelled: the host call's operation does not happen because the
	// run is cancelled; the guest runs its compensations (control.go).
	ErrCancelled = errors.New("workflow run cancelled")
)

// NonDeterminismError is a run whose code reached position Pos with a step
// (or sleep) other than the one its journal recorded there. The run fails
// with it: doing something else than what was recorded could repeat or
// skip effects.
type NonDeterminismError struct {
	Pos             int
	Recorded, Got   string // step names ("sleep" for a sleep)
	RecordedKind    string // EntryStep or EntrySleep
	GotKind         string
	Workflow, RunID string
}

func (e *NonDeterminismError) Error() string {
	return fmt.Sprintf("non-determinism in workflow %s run %s at position %d: the journal has %s %q there, the code now reaches %s %q; "+
		"the code changed incompatibly while the run was in flight (steps reordered, renamed, added or removed before this point): "+
		"start a new run, and keep changes to in-flight workflows after their last recorded step",
		e.Workflow, e.RunID, e.Pos, e.RecordedKind, e.Recorded, e.GotKind, e.Got)
}

// Is makes a NonDeterminismError match ErrNonDeterminism.
func (e *NonDeterminismError) Is(target error) bool { return target == ErrNonDeterminism }

// MaxErrorBytes caps the error message recorded for a failed step
// attempt or run; a longer one is cut, so that it always fits the record.
const MaxErrorBytes = 64 << 10

// resultTooLarge is the error of a result (what: "result", "the run's
// result") of n bytes, over wire.MaxResultLen. The Go SDK's messages say
// the same.
func resultTooLarge(what string, n int) string {
	return fmt.Sprintf("%s is %d bytes, over the limit of %d bytes: pass large data by reference, such as a KV key", what, n, wire.MaxResultLen)
}
