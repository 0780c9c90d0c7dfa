package nimbus

import (
	"encoding/binary"
	"encoding/json"
	"fmt"

	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// CallError is the answer of a called function that is not a success
// (an HTTP status of 300 or more).
type CallError struct {
	Function string
	Status   int
	Body     string
}

func (e *CallError) Error() string {
	return fmt.Sprintf("call %s: status %d: %s", e.Function, e.Status, e.Body)
}

// Call invokes function, another function of the app (its name in
// nimbus.yaml), as the durable step "nimbus.call:<function>": a POST
// whose body is input encoded as JSON and whose Idempotency-Key header is
// the step's idempotency key, so a call made again after a crash can be
// recognised by the callee. The answer's body is decoded into Out and
// journaled: a replay does not call again. An answer of status 4xx fails
// the step for good (a *CallError); a 5xx, or a call that could not be
// made (a timeout, a trap), is retried by the step's Retry policy
// (default 3 attempts). A workflow is not called: start it with
// ChildWorkflow.
func Call[Out any](wf *Workflow, function string, input any, opts ...StepOption) (Out, error) {
	return Step(wf, wire.CallStepPrefix+function, func() (Out, error) {
		var zero Out
		body, err := json.Marshal(input)
		if err != nil {
			return zero, NonRetryable(fmt.Errorf("nimbus: call %s: input does not encode to JSON: %w", function, err))
		}
		buf := make([]byte, 4096)
		var out [wire.CallOutSize]byte
		code := hostCall(function, body, wf.IdempotencyKey(), buf, &out)
		if code == wire.CodeTooLarge {
			buf = make([]byte, binary.LittleEndian.Uint32(out[0:4]))
			code = hostCall(function, body, wf.IdempotencyKey(), buf, &out)
		}
		if err := callCode("call "+function, code); err != nil {
			return zero, err
		}
		status, n := int(binary.LittleEndian.Uint32(out[4:8])), binary.LittleEndian.Uint32(out[0:4])
		switch {
		case status >= 500:
			return zero, &CallError{Function: function, Status: status, Body: string(buf[:n])}
		case status >= 300:
			return zero, NonRetryable(&CallError{Function: function, Status: status, Body: string(buf[:n])})
		}
		var v Out
		if err := json.Unmarshal(buf[:n], &v); err != nil {
			return zero, NonRetryable(fmt.Errorf("nimbus: call %s: answer does not decode into %T: %w", function, v, err))
		}
		return v, nil
	}, append([]StepOption{ImmediateEffects()}, opts...)...) // the step makes no KV write or publish: no need to journal them
}

// callCode turns the code of wf_call or wf_start_child into the step's
// error: final for a bad argument or an unknown target, retried for the
// rest; a suspension or a cancellation unwinds the workflow.
func callCode(what string, code int32) error {
	switch code {
	case wire.CodeOK:
		return nil
	case wire.CodeSuspend, wire.CodeNonDeterminism, wire.CodeCancelled, wire.CodeNoRun:
		panic(unwind{code: code, err: fmt.Errorf("nimbus: %s: %w", what, codeError(what, "workflow", code))})
	case wire.CodeNotFound:
		return NonRetryable(fmt.Errorf("nimbus: %s: %w: the app has no such function (declare it in nimbus.yaml)", what, ErrNotFound))
	case wire.CodeBadArgument:
		return NonRetryable(fmt.Errorf("nimbus: %s: %w (a workflow is started with ChildWorkflow, not called; the input must be JSON)", what, ErrBadArgument))
	}
	return codeError(what, "workflow", code)
}

// ChildError is the end of a child run that did not complete.
type ChildError struct {
	Workflow, RunID string
	// State is "failed", "cancelled" or "terminated".
	State   string
	Message string
}

func (e *ChildError) Error() string {
	return fmt.Sprintf("child workflow %s (run %s) %s: %s", e.Workflow, e.RunID, e.State, e.Message)
}

// childOutcome is the payload of a child's end signal.
type childOutcome struct {
	RunID  string          `json:"run_id"`
	State  string          `json:"state"`
	Result json.RawMessage `json:"result"`
	Error  string          `json:"error"`
}

// ChildWorkflow starts workflow (a workflow of the app) with input as a
// child run and waits durably for its end. The start is the step
// "nimbus.child:<workflow>"; the child's run id is derived from this
// run's id and the step's position ("<run>-<pos>"), so a replay
// re-attaches to the same child instead of starting a second one. The
// wait holds no instance; the child's end reaches this run even across
// a crash. A child that does not complete answers a *ChildError.
//
// The child goes with its parent: cancelling the parent run requests the
// cancellation of the child if it is still running (it runs its
// compensations and ends cancelled), and terminating the parent
// terminates it. Give the option Detached to let the child run on.
func ChildWorkflow[Out any](wf *Workflow, workflow string, input any, opts ...StepOption) (Out, error) {
	var zero Out
	prefix := wire.ChildStepPrefix
	for _, o := range opts {
		if _, ok := o.(detached); ok {
			prefix = wire.DetachedStepPrefix
		}
	}
	id, err := Step(wf, prefix+workflow, func() (string, error) {
		in, err := json.Marshal(input)
		if err != nil {
			return "", NonRetryable(fmt.Errorf("nimbus: child workflow %s: input does not encode to JSON: %w", workflow, err))
		}
		var out [wire.StartChildOutSize]byte
		buf := make([]byte, 256)
		code := hostStartChild(workflow, in, buf, &out)
		if code == wire.CodeTooLarge {
			buf = make([]byte, binary.LittleEndian.Uint32(out[0:4]))
			code = hostStartChild(workflow, in, buf, &out)
		}
		if code == wire.CodeNotFound {
			return "", NonRetryable(fmt.Errorf("nimbus: child workflow %s: %w: the app has no workflow of that name (a function with kind: workflow)", workflow, ErrNotFound))
		}
		if err := callCode("child workflow "+workflow, code); err != nil {
			return "", err
		}
		return string(buf[:binary.LittleEndian.Uint32(out[0:4])]), nil
	}, append([]StepOption{ImmediateEffects()}, opts...)...)
	if err != nil {
		return zero, err
	}
	end, err := WaitForEvent[childOutcome](wf, wire.ChildSignalPrefix+id, 0)
	if err != nil {
		return zero, err
	}
	if end.State != "completed" {
		return zero, &ChildError{Workflow: workflow, RunID: id, State: end.State, Message: end.Error}
	}
	var v Out
	if err := json.Unmarshal(end.Result, &v); err != nil {
		return zero, fmt.Errorf("nimbus: child workflow %s (run %s): result does not decode into %T: %w", workflow, id, v, err)
	}
	return v, nil
}

type detached struct{}

func (detached) applyStep(*stepConfig) {}

// Detached is an option of ChildWorkflow: the child keeps running when
// its parent run is cancelled or terminated (Temporal's parent close
// policy ABANDON). Its start is then the step
// "nimbus.detached:<workflow>" instead of "nimbus.child:<workflow>", so
// adding or removing the option under runs in flight is a change of
// their steps (non-determinism). Step ignores it.
func Detached() StepOption { return detached{} }
