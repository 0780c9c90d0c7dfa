package capability

import (
	"context"
	"errors"
	"time"

	"github.com/nimbus-dev/nimbus/internal/workflow"
)

// WorkflowBackend runs the workflow host calls; *workflow.Engine
// implements it.
type WorkflowBackend interface {
	StepBegin(ctx context.Context, app, invocation string, pos int, name string) (workflow.StepAnswer, error)
	StepEnd(ctx context.Context, app, invocation string, pos int, name string, result []byte, failed bool, retry time.Duration) (bool, error)
	Sleep(ctx context.Context, app, invocation string, pos int, until time.Time) error
	WaitSignal(ctx context.Context, app, invocation string, pos int, name string, timeout time.Duration) (workflow.WaitAnswer, error)
	WaitTopic(ctx context.Context, app, invocation string, pos int, spec []byte, timeout time.Duration) (workflow.WaitAnswer, error)
	Call(ctx context.Context, app, invocation, function string, body []byte, key string) (workflow.CallAnswer, error)
	TookCall(app, invocation string)
	StartChild(ctx context.Context, app, invocation, workflow string, input []byte) (string, error)
	JournalEffects(app, invocation string, pos int) error
}

var _ WorkflowBackend = (*workflow.Engine)(nil)

// Errors of the workflow service, beyond the common ones.
var (
	// ErrSuspended: the run is suspended; the guest must unwind.
	ErrSuspended = errors.New("workflow run suspended")
	// ErrNonDeterminism: the run's code no longer matches its journal;
	// the run failed.
	ErrNonDeterminism = errors.New("workflow non-determinism")
	// ErrNoRun: the call is not made by a workflow run.
	ErrNoRun = errors.New("not a workflow run")
	// ErrCancelled: the run is cancelled; the guest runs its
	// compensations.
	ErrCancelled = errors.New("workflow run cancelled")
)

// Limits of the workflow calls' arguments.
const (
	maxStepName   = 256
	maxStepResult = 1 << 20
)

// WorkflowService is the workflow steps capability: journaled steps and
// durable sleeps of a workflow run. It needs no grant in nimbus.yaml:
// what it checks is that the caller is an activation of a run (the
// engine knows its invocations), which only a function of kind workflow
// gets.
type WorkflowService struct {
	guard   *guard
	backend WorkflowBackend
}

// StepBegin asks whether the step name at pos completed before (its
// recorded outcome) or must run now (its attempt number).
func (s *WorkflowService) StepBegin(ctx context.Context, call *Caller, pos int, name string) (workflow.StepAnswer, error) {
	const op = "wf_step_begin"
	if err := s.args(call, op, pos, name, 0); err != nil {
		return workflow.StepAnswer{}, err
	}
	ans, err := s.backend.StepBegin(ctx, call.App, call.InvocationID, pos, name)
	return ans, s.mapErr(call, op, err)
}

// StepEnd records the outcome of a step's attempt (see
// workflow.Engine.StepEnd); it reports whether to run the next attempt
// now.
func (s *WorkflowService) StepEnd(ctx context.Context, call *Caller, pos int, name string, result []byte, failed bool, retry time.Duration) (bool, error) {
	const op = "wf_step_end"
	if err := s.args(call, op, pos, name, len(result)); err != nil {
		return false, err
	}
	again, err := s.backend.StepEnd(ctx, call.App, call.InvocationID, pos, name, result, failed, retry)
	return again, s.mapErr(call, op, err)
}

// JournalEffects makes the KV writes of the step running at pos
// journaled: buffered until it ends, committed with its outcome, applied
// once (see workflow.Engine.JournalEffects).
func (s *WorkflowService) JournalEffects(call *Caller, pos int) error {
	const op = "wf_step_effects"
	if err := s.args(call, op, pos, "effects", 0); err != nil {
		return err
	}
	return s.mapErr(call, op, s.backend.JournalEffects(call.App, call.InvocationID, pos))
}

// Sleep is a durable timer at pos.
func (s *WorkflowService) Sleep(ctx context.Context, call *Caller, pos int, until time.Time) error {
	const op = "wf_sleep"
	if err := s.args(call, op, pos, "sleep", 0); err != nil {
		return err
	}
	return s.mapErr(call, op, s.backend.Sleep(ctx, call.App, call.InvocationID, pos, until))
}

// WaitSignal is the durable wait at pos for the signal name (see
// workflow.Engine.WaitSignal).
func (s *WorkflowService) WaitSignal(ctx context.Context, call *Caller, pos int, name string, timeout time.Duration) (workflow.WaitAnswer, error) {
	const op = "wf_wait"
	if err := s.args(call, op, pos, name, 0); err != nil {
		return workflow.WaitAnswer{}, err
	}
	ans, err := s.backend.WaitSignal(ctx, call.App, call.InvocationID, pos, name, timeout)
	return ans, s.mapErr(call, op, err)
}

// WaitTopic is the durable wait at pos for the first event of a topic
// matching a filter (spec: see workflow.ParseTopicWait). It needs the
// grant "subscribe:<topic>": an event stream of the app is data like a
// bucket, so reading it is granted per topic, as publishing is.
func (s *WorkflowService) WaitTopic(ctx context.Context, call *Caller, pos int, spec []byte, timeout time.Duration) (workflow.WaitAnswer, error) {
	const op = "wf_wait_topic"
	if err := s.args(call, op, pos, "topic", len(spec)); err != nil {
		return workflow.WaitAnswer{}, err
	}
	topic, err := workflow.ParseTopicWait(spec)
	if err != nil {
		return workflow.WaitAnswer{}, fail(op, ErrBadArgument, err)
	}
	if err := s.guard.check(call, op, subscribeGrant(topic)); err != nil {
		return workflow.WaitAnswer{}, err
	}
	ans, err := s.backend.WaitTopic(ctx, call.App, call.InvocationID, pos, spec, timeout)
	return ans, s.mapErr(call, op, err)
}

// Call invokes function of the caller's app from inside a step of a run
// (see workflow.Engine.Call). The caller calls TookCall once it took the
// answer.
func (s *WorkflowService) Call(ctx context.Context, call *Caller, function string, body []byte, key string) (workflow.CallAnswer, error) {
	const op = "wf_call"
	if err := s.args(call, op, 0, function, len(body)); err != nil {
		return workflow.CallAnswer{}, err
	}
	ans, cause := s.backend.Call(ctx, call.App, call.InvocationID, function, body, key)
	err := s.mapErr(call, op, cause)
	if errors.Is(err, ErrUnavailable) {
		// The guest learns the code only; the run's log (tagged with the
		// step) says why: the callee's flow control refused it, it timed
		// out, trapped.
		call.log("warn", cause.Error())
	}
	return ans, err
}

// TookCall forgets the kept answer of the caller's last Call.
func (s *WorkflowService) TookCall(call *Caller) {
	if call != nil && s.backend != nil {
		s.backend.TookCall(call.App, call.InvocationID)
	}
}

// StartChild starts a child run of workflow from inside a step of a run
// and answers its id (see workflow.Engine.StartChild).
func (s *WorkflowService) StartChild(ctx context.Context, call *Caller, workflowName string, input []byte) (string, error) {
	const op = "wf_start_child"
	if err := s.args(call, op, 0, workflowName, len(input)); err != nil {
		return "", err
	}
	id, err := s.backend.StartChild(ctx, call.App, call.InvocationID, workflowName, input)
	return id, s.mapErr(call, op, err)
}

// args checks a call's arguments and that there is a backend.
func (s *WorkflowService) args(call *Caller, op string, pos int, name string, size int) error {
	switch {
	case call == nil:
		return fail(op, ErrNoRun, nil)
	case pos < 0 || name == "" || len(name) > maxStepName:
		return fail(op, ErrBadArgument, errors.New("a step needs a position and a name of 1 to 256 bytes"))
	case size > maxStepResult:
		return fail(op, ErrTooLarge, errors.New("a step's result is at most 1MiB"))
	case s.backend == nil:
		return fail(op, ErrUnavailable, nil)
	}
	return nil
}

// mapErr classifies the engine's errors.
func (s *WorkflowService) mapErr(call *Caller, op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, workflow.ErrSuspended):
		return fail(op, ErrSuspended, err)
	case errors.Is(err, workflow.ErrNonDeterminism):
		call.log("error", err.Error())
		return fail(op, ErrNonDeterminism, err)
	case errors.Is(err, workflow.ErrNoRun):
		return fail(op, ErrNoRun, err)
	case errors.Is(err, workflow.ErrCancelled):
		return fail(op, ErrCancelled, err)
	case errors.Is(err, workflow.ErrBadStep), errors.Is(err, workflow.ErrInvalid), errors.Is(err, workflow.ErrRunConflict):
		return fail(op, ErrBadArgument, err)
	case errors.Is(err, workflow.ErrFunctionNotFound), errors.Is(err, workflow.ErrWorkflowNotFound):
		return fail(op, ErrNotFound, err)
	}
	s.guard.failed(call, "workflow host call failed", op, err)
	return fail(op, ErrUnavailable, err)
}
