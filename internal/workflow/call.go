package workflow

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// Calling: a run invokes another function of its app, or starts a child
// workflow and awaits it. Both happen inside a step of the calling run
// (the SDK's Call and ChildWorkflow), so what they answer is journaled as
// the step's result and a replay does not call again.
//
// Call invokes the function through the same Invoker as activations (the
// scheduler: pools, flow control and timeouts apply) with the step's
// idempotency key in the Idempotency-Key header: a step run again after a
// crash calls again with the same key.
//
// StartChild starts a run of a workflow of the app whose id is derived
// from the parent's run id and the position of the step that starts it
// (ChildRunID), with Run.Parent set. Starting is idempotent by id, so a
// replay of a step that started the child before its result was
// journaled re-attaches to the same child instead of starting a second.
// The parent awaits the child with a signal wait for ChildSignal(child):
// the child's end is committed in one unit with that signal in the
// parent's journal (and the parent's record moved from waiting to
// running), so the parent learns of it exactly once, even across a
// crash, and a child that ends before the parent waits is buffered like
// any signal.

// Limits of calls.
const (
	// MaxCallBytes caps a call's body and its answer.
	MaxCallBytes = 1 << 20
	// ChildSignalPrefix starts the name of the signal a child's end sends
	// its parent.
	ChildSignalPrefix = "nimbus.child:"
	// HeaderIdempotencyKey carries the calling step's idempotency key.
	HeaderIdempotencyKey = "Idempotency-Key"
	// HeaderCaller carries the calling run's id on a call.
	HeaderCaller = "Nimbus-Workflow-Caller"
)

// ChildSignal is the name of the signal that tells a parent run its
// child run id ended.
func ChildSignal(child string) string { return ChildSignalPrefix + child }

// ChildRunID is the id of the child run started by the step at pos of
// run parent: "<parent>-<pos>", or when that is over MaxRunIDLen, a
// prefix of parent with a hash of the whole.
func ChildRunID(parent string, pos int) string {
	id := parent + "-" + strconv.Itoa(pos)
	if len(id) <= MaxRunIDLen {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	h := hex.EncodeToString(sum[:12])
	return id[:MaxRunIDLen-len(h)-1] + "-" + h
}

// ChildOutcome is the payload of a child's end signal.
type ChildOutcome struct {
	RunID  string          `json:"run_id"`
	State  string          `json:"state"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// CallAnswer is what Call answers: the function's HTTP status and body.
type CallAnswer struct {
	Status int
	Body   []byte
}

// inStep returns the activation of invocation when it is inside a new
// step (a position not recorded yet), and that position.
func (e *Engine) inStep(app, invocation, op string) (*activation, int, error) {
	a, err := e.activation(app, invocation)
	if err != nil {
		return nil, 0, err
	}
	if a.stop != nil {
		return nil, 0, a.stop
	}
	if a.begun != a.next+1 || a.next != len(a.r.steps) {
		return nil, 0, fmt.Errorf("%w: %s outside a step: call it inside a step's function", ErrBadStep, op)
	}
	return a, a.next, nil
}

// Call invokes function of the calling run's app with body (POST /, the
// Idempotency-Key header set to key) and answers its status and body.
// A workflow is refused (start it with StartChild). An answer that did
// not fit the guest's buffer is kept: the next Call of the activation at
// the same position for the same function answers it without calling
// again.
func (e *Engine) Call(ctx context.Context, app, invocation, function string, body []byte, key string) (CallAnswer, error) {
	a, pos, err := e.inStep(app, invocation, "a call")
	if err != nil {
		return CallAnswer{}, err
	}
	if p := a.pending; p != nil && p.pos == pos && p.function == function {
		a.pending = nil
		return p.ans, nil
	}
	e.mu.Lock()
	_, isWF := e.apps[app].fnOf(function)
	e.mu.Unlock()
	if isWF {
		return CallAnswer{}, fmt.Errorf("%w: %s is a workflow: start it as a child workflow (nimbus.ChildWorkflow), not a call", ErrInvalid, function)
	}
	if len(body) > MaxCallBytes {
		return CallAnswer{}, fmt.Errorf("%w: a call's body is at most %d bytes", ErrInvalid, MaxCallBytes)
	}
	req := &runtime.Request{
		Method: http.MethodPost, Path: "/",
		Header: http.Header{"Content-Type": {"application/json"}, HeaderCaller: {a.r.id}},
		Body:   body,
	}
	if key != "" {
		req.Header.Set(HeaderIdempotencyKey, key)
	}
	resp, err := e.inv.Invoke(ctx, app, function, req)
	if err != nil {
		return CallAnswer{}, fmt.Errorf("call %s/%s: %w", app, function, err)
	}
	ans := CallAnswer{Status: resp.Status, Body: resp.Body}
	if ans.Status == 0 {
		ans.Status = http.StatusOK
	}
	a.pending = &pendingCall{pos: pos, function: function, ans: ans}
	return ans, nil
}

// TookCall forgets the kept answer of the activation's last Call (the
// guest's buffer held it).
func (e *Engine) TookCall(app, invocation string) {
	if a, err := e.activation(app, invocation); err == nil {
		a.pending = nil
	}
}

// pendingCall is a Call's answer kept for the guest's second ask.
type pendingCall struct {
	pos      int
	function string
	ans      CallAnswer
}

// StartChild starts a run of workflow with input as the child of the
// calling run, at the position of the step that calls it, and answers
// its id. Starting it again (a replay) answers the same id and starts
// nothing.
func (e *Engine) StartChild(ctx context.Context, app, invocation, workflow string, input []byte) (string, error) {
	a, pos, err := e.inStep(app, invocation, "a child workflow start")
	if err != nil {
		return "", err
	}
	return e.startChild(ctx, app, a, pos, workflow, input)
}

// startChild is StartChild once its checks passed: a's step at pos
// starts it.
func (e *Engine) startChild(ctx context.Context, app string, a *activation, pos int, workflow string, input []byte) (string, error) {
	// The child's record names its parent: the parent's start is
	// durable first (StartLazy).
	if err := e.j.durable(ctx, app, a.r.id, false); err != nil {
		return "", err
	}
	id := ChildRunID(a.r.id, pos)
	detached := strings.HasPrefix(a.stepName, wire.DetachedStepPrefix)
	run, _, err := e.start(ctx, app, workflow, id, input, a.r.id, detached, false)
	if err != nil {
		return "", err
	}
	if run.Parent != a.r.id {
		return "", fmt.Errorf("%w: run %s exists and is not a child of run %s", ErrRunConflict, id, a.r.id)
	}
	if detached {
		return id, nil
	}
	// A termination of the parent from now on finds the child here (its
	// journal names it only once this step ends); one that came before
	// is seen below, and the child goes with its parent.
	e.mu.Lock()
	if !slices.Contains(a.r.children, id) {
		a.r.children = append(a.r.children, id)
	}
	e.mu.Unlock()
	if a.r.terminated.Load() {
		if _, err := e.Terminate(ctx, app, id, "its parent run "+a.r.id+" was terminated"); err != nil && !errors.Is(err, ErrRunFinished) {
			return "", err
		}
	}
	return id, nil
}

// commitEnd commits a run's final record: with, for a child, its end
// signal to its parent (see the top of this file), in one unit.
func (e *Engine) commitEnd(ctx context.Context, rec *Run) error {
	if rec.Parent == "" {
		return e.j.commit(ctx, rec.App, rec.ID, nil, rec)
	}
	return e.tellParent(ctx, rec, true)
}

// tellParent sends a child's end signal to its parent, with the child's
// final record when withRecord (else that is committed already: a
// termination).
func (e *Engine) tellParent(ctx context.Context, rec *Run, withRecord bool) error {
	alone := func() error {
		if !withRecord {
			return nil
		}
		return e.j.commit(ctx, rec.App, rec.ID, nil, rec)
	}
	payload, err := json.Marshal(ChildOutcome{RunID: rec.ID, State: rec.State, Result: rec.Result, Error: rec.Error})
	if err != nil {
		return err
	}
	for range 100 {
		parent, seq, err := e.j.recordAt(ctx, rec.App, rec.Parent)
		if errors.Is(err, ErrRunNotFound) {
			return alone()
		}
		if err != nil {
			return err
		}
		if parent.Done() {
			return alone() // no one awaits it
		}
		now := e.opts.Now().UTC()
		if parent.State == StateWaiting {
			parent.State, parent.WakeAt = StateRunning, time.Time{}
		}
		parent.Updated = now
		child := rec
		if !withRecord {
			child = nil
		}
		ok, err := e.commitChildEnd(ctx, child, parent, seq, &Entry{Type: EntrySignal, Time: now, Name: ChildSignal(rec.ID), Result: payload})
		if err != nil {
			return err
		}
		if ok {
			e.mu.Lock()
			if r := e.runs[runKey(rec.App, rec.Parent)]; r != nil {
				r.loaded = false
			}
			e.mu.Unlock()
			e.wake(rec.App, rec.Parent)
			return nil
		}
	}
	return fmt.Errorf("workflow run %s/%s: its parent's record kept changing", rec.App, rec.ID)
}

// commitChildEnd commits the child's final record (unless nil; not over
// a final one), the signal entry in the parent's journal and the
// parent's record if it is still at version ver, as one change; false
// when the parent's record moved.
func (e *Engine) commitChildEnd(ctx context.Context, child, parent *Run, ver uint64, sig *Entry) (bool, error) {
	a, err := e.j.appFor(parent.App)
	if err != nil {
		return false, err
	}
	var parts []part
	if child != nil {
		cp := *child
		parts = append(parts, part{run: child.ID, rec: &cp, c: cond{kind: condNotFinal}})
	}
	pp := *parent
	parts = append(parts, part{run: parent.ID, ents: []Entry{*sig}, rec: &pp, c: cond{kind: condVersion, ver: ver}})
	ok, err := a.submitParts(ctx, parts, false)
	if err != nil {
		return false, fmt.Errorf("workflow run %s/%s: tell parent %s of a child's end: %w", parent.App, parent.ID, sig.Name, err)
	}
	return ok, nil
}

// isReservedSignal reports whether a signal name is the engine's own
// (sent by a child's end), which the API does not send.
func isReservedSignal(name string) bool {
	return strings.HasPrefix(name, ChildSignalPrefix) || strings.HasPrefix(name, TopicSignalPrefix)
}
