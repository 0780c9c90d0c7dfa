package wire

// Durable workflows (ABI version 1). See the package documentation,
// section "Workflows", for the protocol; these are its names and numbers.

// Import names of the workflow host functions.
const (
	FuncStepBegin = "wf_step_begin"
	FuncStepEnd   = "wf_step_end"
	FuncSleep     = "wf_sleep"
	FuncWait      = "wf_wait"
	// FuncWaitTopic waits for an event of a topic (see the package
	// documentation, "Waiting for a topic event").
	FuncWaitTopic = "wf_wait_topic"
	// FuncStepEffects makes the running step's KV writes journaled.
	FuncStepEffects = "wf_step_effects"
	// FuncCall and FuncStartChild are made inside a step (see the package
	// documentation, "Calling").
	FuncCall       = "wf_call"
	FuncStartChild = "wf_start_child"
)

// CallOutSize is the size of wf_call's out area: length u32, HTTP status
// u32.
const CallOutSize = 8

// StartChildOutSize is the size of wf_start_child's out area: the child
// run id's length u32.
const StartChildOutSize = 4

// Step and signal names of calls (the Go SDK's Call and ChildWorkflow).
const (
	// CallStepPrefix starts the name of a step that calls a function:
	// "nimbus.call:<function>".
	CallStepPrefix = "nimbus.call:"
	// ChildStepPrefix starts the name of a step that starts a child
	// workflow: "nimbus.child:<workflow>"; the child's end is the signal
	// ChildSignalPrefix+<child run id>.
	ChildStepPrefix   = "nimbus.child:"
	ChildSignalPrefix = "nimbus.child:"
	// DetachedStepPrefix starts the name of a step that starts a
	// detached child: "nimbus.detached:<workflow>". A detached child
	// keeps running when its parent is cancelled or terminated; any other
	// child is cancelled or terminated with it.
	DetachedStepPrefix = "nimbus.detached:"
)

// MaxCallLen caps a call's body, its answer, and a child's input.
const MaxCallLen = 1 << 20

// MaxResultLen caps the JSON of a step's result and of a run's result:
// the host fails a step (for good) or a run whose result is larger. The
// Go SDK checks it first, so an oversized step result is a failed attempt
// retried by the step's policy.
const MaxResultLen = 1 << 20

// Status codes of the workflow host functions, beyond the common ones.
const (
	// CodeRunStep: the step has no recorded outcome; run its closure now.
	CodeRunStep int32 = 20
	// CodeSuspend: the run is suspended (a long sleep, a retry backoff, or
	// the activation's time is running out); the guest must unwind its
	// workflow function without calling the host again, and answer.
	CodeSuspend int32 = 21
	// CodeNonDeterminism: the workflow's code no longer matches its
	// journal; the run has failed. The guest unwinds as for CodeSuspend.
	CodeNonDeterminism int32 = 22
	// CodeNoRun: the call is not made by a workflow run's activation.
	CodeNoRun int32 = 23
	// CodeCancelled: the run is cancelled; the operation at pos did not
	// happen. The guest runs its compensations as steps from pos+1 on
	// (names starting with CompensationPrefix), then answers
	// OutcomeCancelled.
	CodeCancelled int32 = 24
)

// Workflow activation headers. The host marks a request that activates a
// run with HeaderRun; the guest answers with HeaderOutcome.
const (
	// HeaderRun carries the run id on an activation request. Its body is
	// the run's input.
	HeaderRun = "Nimbus-Workflow-Run"
	// HeaderOutcome is the guest's answer: OutcomeCompleted (the body is
	// the result), OutcomeFailed (the body is the error message) or
	// OutcomeSuspended (the body is empty).
	HeaderOutcome = "Nimbus-Workflow-Outcome"
)

// Values of HeaderOutcome.
const (
	OutcomeCompleted = "completed"
	OutcomeFailed    = "failed"
	OutcomeSuspended = "suspended"
	// OutcomeCancelled: the run was cancelled and has run its
	// compensations; the body is a message (their failures, if any).
	OutcomeCancelled = "cancelled"
)

// CompensationPrefix starts the names of compensation steps: once a run
// is cancelled, only steps with such names still run.
const CompensationPrefix = "nimbus.compensate:"

// WaitOutSize is the size of wf_wait's out area: length u32, flags u32.
const WaitOutSize = 8

// WaitTimedOut (wf_wait out flags): the wait timed out; there is no
// payload.
const WaitTimedOut uint32 = 1

// StepBeginOutSize is the size of wf_step_begin's out area: length u32,
// flags u32, attempt u32, reserved u32.
const StepBeginOutSize = 16

// Flags of the workflow host functions.
const (
	// StepFailed (wf_step_begin out flags, wf_step_end flags): the step's
	// outcome is an error; the bytes are its message.
	StepFailed uint32 = 1
	// StepNonRetryable (wf_step_end flags): the error must not be retried.
	StepNonRetryable uint32 = 2
)

// Limits of the workflow host functions' arguments.
const (
	// StepMaxNameLen caps a step name.
	StepMaxNameLen = 256
	// StepMaxResultLen caps a step's result or error message.
	StepMaxResultLen = 1 << 20
)

// NoRetry is wf_step_end's retry_ms for a failure that is final.
const NoRetry int64 = -1

// TopicSignalPrefix starts the name of the signal that carries a topic
// event to the wait at a position: "nimbus.topic:<pos>". The engine sends
// it; the wait's outcome is journaled under that name.
const TopicSignalPrefix = "nimbus.topic:"

// MaxTopicSpecLen caps wf_wait_topic's spec (JSON).
const MaxTopicSpecLen = 16 << 10
