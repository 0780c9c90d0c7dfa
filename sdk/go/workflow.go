package nimbus

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// Workflow is one activation of a durable workflow run, handed to the
// function registered with RegisterWorkflow. Its code runs from the start
// at every activation: each Step, Sleep, Now, UUID and Random is journaled
// by the host at its position, so on replay it returns what was recorded
// instead of running again. Workflow code must therefore be
// deterministic outside steps: no clocks, randomness, I/O or map
// iteration order deciding what to do next, except through those calls.
type Workflow struct {
	runID  string
	pos    int32
	inStep bool
	key    string
	comps  []compensation // registered by Compensate, in order (saga.go)
}

// RunID returns the run's id.
func (wf *Workflow) RunID() string { return wf.runID }

// IdempotencyKey returns the key of the step running now:
// "<run>/<position>/<name>", the same for every attempt of the step and
// every activation of the run. Send it with external effects (an
// Idempotency-Key header) so that a step run again after a crash has its
// effect once. Outside a step it returns "".
func (wf *Workflow) IdempotencyKey() string {
	if !wf.inStep {
		return ""
	}
	return wf.key
}

// workflowFn is the module's registered workflow, or nil.
var workflowFn atomic.Pointer[func(*Workflow, []byte) ([]byte, error)]

// RegisterWorkflow registers fn as the module's workflow (a function of
// kind: workflow in nimbus.yaml). Call it from init, like Handle. The run's
// input is decoded from JSON into In; the result is encoded to JSON, at
// most 1 MiB of it (wire.MaxResultLen): a larger result fails the run
// (after its compensations) with an error that says so.
func RegisterWorkflow[In, Out any](fn func(wf *Workflow, in In) (Out, error)) {
	f := func(wf *Workflow, input []byte) ([]byte, error) {
		var in In
		if len(input) > 0 {
			if err := json.Unmarshal(input, &in); err != nil {
				return nil, fmt.Errorf("input: %w", err)
			}
		}
		out, err := fn(wf, in)
		if err != nil {
			return nil, err
		}
		b, err := json.Marshal(out)
		if err == nil && len(b) > wire.MaxResultLen {
			err = fmt.Errorf("the run's result is %d bytes, over the limit of %d bytes: pass large data by reference, such as a KV key", len(b), wire.MaxResultLen)
		}
		return b, err
	}
	workflowFn.Store(&f)
}

// unwind is the panic value that leaves the workflow function when the
// host suspends the run (or the run failed for non-determinism, or the
// host failed): runWorkflow recovers it. Do not recover it in workflow
// code (a deferred recover() must re-panic values it does not know).
type unwind struct {
	code int32
	err  error
}

// runWorkflow serves one activation. When the workflow function fails
// (returns an error) or the run is cancelled, the compensations it
// registered run first, in reverse order (saga.go).
func runWorkflow(runID string, input []byte) (resp *wire.Response) {
	p := workflowFn.Load()
	if p == nil {
		return &wire.Response{Status: 500, Error: "no workflow registered: call nimbus.RegisterWorkflow from init"}
	}
	wf := &Workflow{runID: runID}
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		if u, ok := v.(unwind); ok {
			if u.code == wire.CodeSuspend || u.code == wire.CodeNonDeterminism {
				resp = &wire.Response{Status: 200, Header: map[string][]string{wire.HeaderOutcome: {wire.OutcomeSuspended}}}
				return
			}
			resp = &wire.Response{Status: 500, Error: u.err.Error()}
			return
		}
		if up, ok := v.(userPanic); ok {
			resp = &wire.Response{Status: 500, Error: fmt.Sprintf("workflow panicked: %v\n%s", up.v, up.stack)}
			return
		}
		resp = &wire.Response{Status: 500, Error: fmt.Sprintf("workflow panicked: %v\n%s", v, debug.Stack())}
	}()
	out, err := wf.call(*p, input)
	cancelled := errors.Is(err, errCancelled)
	if err != nil {
		if cerr := wf.compensate(); cerr != nil {
			if cancelled {
				err = cerr
			} else {
				err = fmt.Errorf("%w; compensations failed: %w", err, cerr)
			}
		}
	}
	switch {
	case cancelled:
		msg := "cancelled"
		if !errors.Is(err, errCancelled) {
			msg = "cancelled; compensations failed: " + err.Error()
		}
		return &wire.Response{Status: 200, Header: map[string][]string{wire.HeaderOutcome: {wire.OutcomeCancelled}}, Body: []byte(msg)}
	case err != nil:
		return &wire.Response{Status: 200, Header: map[string][]string{wire.HeaderOutcome: {wire.OutcomeFailed}}, Body: []byte(err.Error())}
	}
	return &wire.Response{Status: 200, Header: map[string][]string{wire.HeaderOutcome: {wire.OutcomeCompleted}}, Body: out}
}

// errCancelled is what wf.call returns when the host cancelled the run.
var errCancelled = errors.New("nimbus: workflow run cancelled")

// userPanic carries a panic of workflow code out of wf.call with the
// stack where it happened.
type userPanic struct {
	v     any
	stack []byte
}

// call runs the workflow function; a cancellation (the host answered
// CodeCancelled) returns errCancelled.
func (wf *Workflow) call(f func(*Workflow, []byte) ([]byte, error), input []byte) (out []byte, err error) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		if u, ok := v.(unwind); ok {
			if u.code == wire.CodeCancelled {
				out, err = nil, errCancelled
				return
			}
			panic(u)
		}
		panic(userPanic{v, debug.Stack()})
	}()
	return f(wf, input)
}

// StepOption configures a Step.
type StepOption interface{ applyStep(*stepConfig) }

type stepConfig struct {
	retry     Retry
	immediate bool
}

type effectsMode bool

func (m effectsMode) applyStep(c *stepConfig) { c.immediate = bool(m) }

// ImmediateEffects makes the step's KV writes (Put, Delete) and publishes
// happen at once, when the step's code makes them, instead of with the
// step's result (the default: see Step). They are then not atomic with
// the step: a step run again after a crash makes them again (key them by
// wf.IdempotencyKey(), or make them compare-and-swaps), and those of a
// failed attempt stay. Use it for what needs the write's outcome while the
// step runs: a compare-and-swap (IfRevision), Put's revision, a publish's
// duplicate flag, or a count of the step's executions.
func ImmediateEffects() StepOption { return effectsMode(true) }

// JournaledEffects asks for what every step does unless it is given
// ImmediateEffects: its KV writes and publishes are committed with its
// result (see Step).
//
// Deprecated: journaled effects are the default; drop the option.
func JournaledEffects() StepOption { return effectsMode(false) }

// Retry is a step's retry policy. The zero value of each field is its
// default.
type Retry struct {
	// MaxAttempts is how many times the step runs before its error is
	// final. Default 3; 1 runs it once.
	MaxAttempts int
	// Backoff is the delay before the second attempt; each further one
	// doubles it, up to MaxBackoff. Default 1s. A delay past a second (the
	// host's short wait) suspends the run: it holds no instance meanwhile.
	Backoff time.Duration
	// MaxBackoff caps the delay. Default 1m.
	MaxBackoff time.Duration
	// NonRetryable errors (matched with errors.Is) end the step at once.
	// An error wrapped with NonRetryable does too.
	NonRetryable []error
}

func (r Retry) applyStep(c *stepConfig) { c.retry = r }

type nonRetryable struct{ err error }

func (e nonRetryable) Error() string { return e.err.Error() }
func (e nonRetryable) Unwrap() error { return e.err }

// NonRetryable marks err as final: the step is not attempted again.
func NonRetryable(err error) error { return nonRetryable{err} }

// StepError is the error of a step that failed for good, as recorded: on
// replay its message is all that is left of the original error.
type StepError struct {
	Step    string
	Message string
}

func (e *StepError) Error() string { return "step " + e.Step + ": " + e.Message }

// ResultTooLargeError is the error of a step attempt whose result encodes
// to more than Limit bytes of JSON (1 MiB): like any error of an attempt,
// it is retried by the step's Retry policy. Store large data elsewhere (a
// KV key) and return its key.
type ResultTooLargeError struct {
	Size, Limit int
}

func (e *ResultTooLargeError) Error() string {
	return fmt.Sprintf("result is %d bytes, over the limit of %d bytes: pass large data by reference, such as a KV key", e.Size, e.Limit)
}

// Step runs fn as the durable step name of wf, once: its result (or its
// final error) is recorded before Step returns, and every later
// activation of the run gets the recorded outcome without running fn. A
// failed attempt is retried by the step's Retry policy (default 3
// attempts). T must survive a JSON round trip, and its JSON is at most 1
// MiB: a larger result fails the attempt with a *ResultTooLargeError. Steps must not be nested.
//
// The KV writes (Put, Delete) and publishes fn makes are journaled: held
// by the host while the step runs and committed with its result, so after
// a crash either the step and its effects are on disk or neither is; they
// are applied once, before Step returns. Inside fn, Put answers revision
// 0, Get sees the step's own writes, Publish answers "not a duplicate", a
// compare-and-swap (IfRevision) is ErrBadArgument, and a failed attempt's
// writes are dropped (docs/workflows.md). ImmediateEffects opts a step
// out.
func Step[T any](wf *Workflow, name string, fn func() (T, error), opts ...StepOption) (T, error) {
	var zero T
	cfg := stepConfig{}
	for _, o := range opts {
		o.applyStep(&cfg)
	}
	if wf.inStep {
		panic("nimbus: Step " + name + " called inside another step; steps must not be nested")
	}
	pos := wf.pos
	buf := make([]byte, 4096)
	var out [wire.StepBeginOutSize]byte
	var code int32
	for {
		code = hostStepBegin(pos, name, buf, &out)
		if code != wire.CodeTooLarge {
			break
		}
		buf = make([]byte, binary.LittleEndian.Uint32(out[0:4]))
	}
	switch code {
	case wire.CodeOK:
		wf.pos++
		n := binary.LittleEndian.Uint32(out[0:4])
		if binary.LittleEndian.Uint32(out[4:8])&wire.StepFailed != 0 {
			return zero, &StepError{Step: name, Message: string(buf[:n])}
		}
		var v T
		if err := json.Unmarshal(buf[:n], &v); err != nil {
			panic(unwind{code: wire.CodeInternal, err: fmt.Errorf("nimbus: step %s: recorded result does not decode into %T: %w", name, v, err)})
		}
		return v, nil
	case wire.CodeRunStep:
	default:
		wf.hostUnwind(pos, "wf_step_begin", code)
	}
	if !cfg.immediate {
		if code := hostStepEffects(pos); code != wire.CodeOK {
			wf.hostUnwind(pos, "wf_step_effects", code)
		}
	}
	attempt := int(binary.LittleEndian.Uint32(out[8:12]))
	for {
		v, err := runAttempt(wf, pos, name, fn)
		if err == nil {
			b, merr := json.Marshal(v)
			if merr != nil {
				err = NonRetryable(fmt.Errorf("result does not encode to JSON: %w", merr))
			} else if len(b) > wire.MaxResultLen {
				err = &ResultTooLargeError{Size: len(b), Limit: wire.MaxResultLen}
			} else {
				if code := hostStepEnd(pos, name, b, 0, wire.NoRetry); code != wire.CodeOK {
					wf.hostUnwind(pos, "wf_step_end", code)
				}
				wf.pos++
				return v, nil
			}
		}
		retry := cfg.retry.next(attempt, err)
		flags := wire.StepFailed
		if retry < 0 {
			flags |= wire.StepNonRetryable
		}
		switch code := hostStepEnd(pos, name, []byte(err.Error()), int32(flags), retry); code {
		case wire.CodeOK:
			wf.pos++
			return zero, &StepError{Step: name, Message: err.Error()}
		case wire.CodeRunStep:
			attempt++
		default:
			wf.hostUnwind(pos, "wf_step_end", code)
		}
	}
}

// runAttempt runs fn once as the step at pos; a panic is the attempt's
// error.
func runAttempt[T any](wf *Workflow, pos int32, name string, fn func() (T, error)) (v T, err error) {
	wf.inStep, wf.key = true, stepKey(wf.runID, pos, name)
	defer func() {
		wf.inStep = false
		if p := recover(); p != nil {
			if u, ok := p.(unwind); ok {
				panic(u)
			}
			err = fmt.Errorf("step %s panicked: %v", name, p)
		}
	}()
	return fn()
}

// next is the delay in milliseconds before attempt+1 after err, or
// wire.NoRetry.
func (r Retry) next(attempt int, err error) int64 {
	max := r.MaxAttempts
	if max <= 0 {
		max = 3
	}
	var nr nonRetryable
	if attempt >= max || errors.As(err, &nr) {
		return wire.NoRetry
	}
	for _, e := range r.NonRetryable {
		if errors.Is(err, e) {
			return wire.NoRetry
		}
	}
	b, mb := r.Backoff, r.MaxBackoff
	if b <= 0 {
		b = time.Second
	}
	if mb <= 0 {
		mb = time.Minute
	}
	d := b
	for i := 1; i < attempt && d < mb; i++ {
		d *= 2
	}
	return min(d, mb).Milliseconds()
}

// hostUnwind leaves the workflow function after a host call at pos
// answered code: a suspension, a non-determinism, a cancellation (the
// compensations run from pos+1), or a host failure (the activation fails
// and runs again).
func (wf *Workflow) hostUnwind(pos int32, fn string, code int32) {
	if code == wire.CodeCancelled {
		wf.pos = pos + 1
	}
	panic(unwind{code: code, err: fmt.Errorf("nimbus: %s: %w", fn, codeError(fn, "workflow", code))})
}

// Sleep pauses the run for d, durably: the run holds no instance while it
// sleeps past a second, survives restarts, and never wakes early. The
// wake time is recorded by the first activation that reaches it.
func (wf *Workflow) Sleep(d time.Duration) { wf.SleepUntil(time.Now().Add(d)) }

// SleepUntil pauses the run until t (see Sleep).
func (wf *Workflow) SleepUntil(t time.Time) {
	if wf.inStep {
		panic("nimbus: Sleep inside a step; sleep between steps")
	}
	if code := hostSleep(wf.pos, t.UnixMilli()); code != wire.CodeOK {
		wf.hostUnwind(wf.pos, "wf_sleep", code)
	}
	wf.pos++
}

// noEffects is the option of the SDK's own steps that make no KV write or
// publish: it spares them the host call that journals effects.
var noEffects = ImmediateEffects()

// Now returns the current time, journaled: every replay of this point
// gets the same time.
func (wf *Workflow) Now() time.Time {
	n, _ := Step(wf, "nimbus.now", func() (int64, error) { return time.Now().UnixNano(), nil }, noEffects)
	return time.Unix(0, n)
}

// UUID returns a random (version 4) UUID, journaled.
func (wf *Workflow) UUID() string {
	s, _ := Step(wf, "nimbus.uuid", func() (string, error) {
		var b [16]byte
		rand.Read(b[:])
		b[6] = b[6]&0x0f | 0x40
		b[8] = b[8]&0x3f | 0x80
		h := hex.EncodeToString(b[:])
		return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], nil
	}, noEffects)
	return s
}

// Random returns a random number, journaled.
func (wf *Workflow) Random() uint64 {
	n, _ := Step(wf, "nimbus.random", func() (uint64, error) {
		var b [8]byte
		rand.Read(b[:])
		return binary.LittleEndian.Uint64(b[:]), nil
	}, noEffects)
	return n
}

func stepKey(runID string, pos int32, name string) string {
	return runID + "/" + strconv.Itoa(int(pos)) + "/" + name
}
