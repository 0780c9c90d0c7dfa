package workflow

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"

	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/throttle"
)

// Flow control of runs: a workflow's manifest flow: applies to its runs
// as to any function's invocations (docs/flow.md), with the run as the
// unit:
//
//   - the key is evaluated on the run's input: "input.<field>[.<field>...]"
//     is a field of the input (a JSON object), "event.<attribute>" an
//     attribute of the event a trigger started the run with (the input is
//     the event in CloudEvents' JSON format, so it is the same as
//     input.<attribute>);
//   - max_concurrency and key_concurrency count activations: a run holds a
//     slot while its code runs (its steps, and waits up to ShortWait), not
//     while it sleeps or waits for a signal, a topic or a child, so a run
//     waiting for another run of its key (a child, a signal its sibling
//     sends) cannot deadlock it;
//   - rate counts run starts: a run's first activation takes a slot of the
//     window, its later ones (after a sleep, a wait) do not;
//   - priority orders the runs waiting for a slot, as it orders waiting
//     invocations (all runs of a workflow have its priority).
//
// A run over a limit is not refused: its start is durable (the run is
// recorded before it waits) and it waits for its turn, holding no
// instance; after a restart it waits again. The engine applies the
// workflow's flow itself (the scheduler does not apply a workflow's flow
// to its activations), without a deadline: an activation waits as long as
// its turn takes, where an invocation would be refused after its timeout.
//
// A step's nimbus.Call is an invocation of the callee through the
// scheduler, which applies the callee's flow as for any request.

// flowCtl is the flow control of one workflow (by name: every revision of
// it shares the limits, so a deploy does not double them).
type flowCtl struct {
	flow *model.Flow
	path []string // the key's path in the input; nil: no key
	prio int
	conc *throttle.Limiter // concurrency, per activation; nil: none
	rate *throttle.Limiter // rate, per run start; nil: none

	// A run waiting in conc or rate holds its goroutine (and its state);
	// past the engine's bound (Options.MaxActivePerApp) of such waiters,
	// a run that must wait gives its goroutine up and its id waits here
	// instead, oldest first, until a waiter leaves (hold, next). mu is
	// taken inside the limiters' locks (AcquireOr's beforeWait) and takes
	// no other lock.
	mu      sync.Mutex
	waiting int
	held    []string
	heldIn  map[string]bool
	woken   map[string]bool // taken from held by next, not yet back in admit
}

// errHeld is a run that had to wait for its flow when as many runs as
// the engine's bound were waiting: it waits in flowCtl.held, without a
// goroutine, until one of them leaves.
var errHeld = errors.New("held back: its workflow has as many runs waiting for their flow as the engine's bound")

// enter counts id among fc's waiters, or holds it back and fails with
// errHeld: with max (> 0) waiters already, or while runs are held before
// it (they keep their turn: a run woken from held goes first, and back to
// the head if it must be held again).
func (fc *flowCtl) enter(id string, max int) error {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	woken := fc.woken[id]
	delete(fc.woken, id)
	if max > 0 && (fc.waiting >= max || (len(fc.held) > 0 && !woken)) {
		if !fc.heldIn[id] {
			if fc.heldIn == nil {
				fc.heldIn = map[string]bool{}
			}
			fc.heldIn[id] = true
			if woken {
				fc.held = append([]string{id}, fc.held...)
			} else {
				fc.held = append(fc.held, id)
			}
		}
		return errHeld
	}
	fc.waiting++
	return nil
}

// leave uncounts a waiter.
func (fc *flowCtl) leave() {
	fc.mu.Lock()
	fc.waiting--
	fc.mu.Unlock()
}

// next returns the oldest run held back, if any and if fc is under max
// waiters: the caller wakes it. Every run that leaves admit calls it, so
// that held runs move on even when the runs woken before them did not
// have to wait.
func (fc *flowCtl) next(max int) (string, bool) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if len(fc.held) == 0 || (max > 0 && fc.waiting >= max) {
		return "", false
	}
	id := fc.held[0]
	fc.held[0] = ""
	fc.held = fc.held[1:]
	delete(fc.heldIn, id)
	if fc.woken == nil {
		fc.woken = map[string]bool{}
	}
	fc.woken[id] = true
	return id, true
}

// settle forgets that id was woken from held, and reports whether it was.
func (fc *flowCtl) settle(id string) bool {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	woken := fc.woken[id]
	delete(fc.woken, id)
	return woken
}

// passHeld, at the end of an activation attempt of r, wakes the next run
// held back for r's workflow if r was woken from there and never reached
// admit (it had finished or was terminated meanwhile): admit's exit is
// what moves the held runs on, and r took a turn from them.
func (e *Engine) passHeld(r *run, workflow string) {
	fc := e.flowOf(r.app, workflow)
	if fc == nil || !fc.settle(r.id) {
		return
	}
	if id, ok := fc.next(e.opts.MaxActivePerApp); ok {
		e.wake(r.app, id)
	}
}

// takeHeld empties the runs held back (fc is being replaced: they must
// be woken to go to the new one).
func (fc *flowCtl) takeHeld() []string {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	ids := fc.held
	fc.held, fc.heldIn, fc.woken = nil, nil, nil
	return ids
}

// heldCount is how many runs are held back.
func (fc *flowCtl) heldCount() int {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return len(fc.held)
}

// CheckFlow reports what is wrong with a workflow's flow, if anything.
func CheckFlow(f *model.Flow) error {
	if f == nil {
		return nil
	}
	var errs []error
	if f.DebounceMS > 0 {
		errs = append(errs, errors.New("debounce does not apply to a workflow: every start is a durable run; remove it (use key_concurrency: 1 to run one run of a key at a time)"))
	}
	if f.Key != "" {
		if _, err := FlowKeyPath(f.Key); err != nil {
			errs = append(errs, err)
		}
	}
	if err := throttle.PolicyOf(f).Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// FlowKeyPath parses a workflow's flow key, "input.<field>[.<field>...]"
// or "event.<attribute>", into its path in the run's input.
func FlowKeyPath(key string) ([]string, error) {
	var rest string
	switch {
	case strings.HasPrefix(key, "input."):
		rest = key[len("input."):]
	case strings.HasPrefix(key, "event."):
		rest = key[len("event."):]
		if strings.Contains(rest, ".") {
			return nil, fmt.Errorf("flow key %q: an event attribute has no dots: use event.<attribute> or input.<field>.<field>", key)
		}
	default:
		return nil, fmt.Errorf("flow key %q: a workflow's runs are keyed on their input: use input.<field> (a field of the run's JSON input, such as input.customer or input.data.tenant) or event.<attribute> (runs started by a trigger)", key)
	}
	path := strings.Split(rest, ".")
	for _, p := range path {
		if p == "" {
			return nil, fmt.Errorf("flow key %q: empty field name: use input.<field>, such as input.customer", key)
		}
	}
	return path, nil
}

// newFlowCtl returns the flow control of fn; nil when it has none.
func newFlowCtl(fn model.Function) (*flowCtl, error) {
	f := fn.Flow
	if f == nil {
		return nil, nil
	}
	if err := CheckFlow(f); err != nil {
		return nil, fmt.Errorf("workflow %s: flow: %w", fn.Name, err)
	}
	fc := &flowCtl{flow: f, prio: throttle.PriorityOf(f)}
	if f.Key != "" {
		fc.path, _ = FlowKeyPath(f.Key)
	}
	p := throttle.PolicyOf(f)
	if p.MaxConcurrency > 0 || p.KeyConcurrency > 0 {
		l, err := throttle.NewLimiter(throttle.Policy{MaxConcurrency: p.MaxConcurrency, KeyConcurrency: p.KeyConcurrency}, nil)
		if err != nil {
			return nil, err
		}
		fc.conc = l
	}
	if p.Rate > 0 {
		l, err := throttle.NewLimiter(throttle.Policy{Rate: p.Rate, Per: p.Per}, nil)
		if err != nil {
			return nil, err
		}
		fc.rate = l
	}
	return fc, nil
}

func (fc *flowCtl) close() {
	if fc != nil {
		fc.conc.Close()
		fc.rate.Close()
	}
}

// same reports whether fc applies fn's flow already.
func (fc *flowCtl) same(fn model.Function) bool {
	if fc == nil {
		return fn.Flow == nil
	}
	return reflect.DeepEqual(fc.flow, fn.Flow)
}

// key is the flow key of a run with input: the value at fc.path, a
// string as is, anything else as its JSON text; "" when the input has
// none.
func (fc *flowCtl) key(input []byte) string {
	if fc.path == nil {
		return ""
	}
	cur := json.RawMessage(input)
	for _, name := range fc.path {
		var obj map[string]json.RawMessage
		if json.Unmarshal(cur, &obj) != nil {
			return ""
		}
		v, ok := obj[name]
		if !ok {
			return ""
		}
		cur = v
	}
	var s string
	if json.Unmarshal(cur, &s) == nil {
		return s
	}
	var buf bytes.Buffer
	if json.Compact(&buf, cur) != nil || buf.String() == "null" {
		return ""
	}
	return buf.String()
}

// setFlowsLocked makes st's flow controls those of fns: a workflow whose
// flow did not change keeps its limiters (and who holds and waits for
// them); a changed one gets new limiters, and the runs waiting for the old
// ones move to them. A flow the engine cannot apply is logged and left
// out: Validate refuses it at deploy, but a revision stored before (a
// header key was allowed then) must still provision at start.
func (e *Engine) setFlowsLocked(app string, st *appState, fns map[string]model.Function) {
	for name, fc := range st.flows {
		if fn, ok := fns[name]; !ok || !fc.same(fn) {
			delete(st.flows, name)
			fc.close()
			if fns != nil { // (nil: the app is retired, its runs deleted)
				for _, id := range fc.takeHeld() {
					e.wakeLocked(app, id)
				}
			}
		}
	}
	for name, fn := range fns {
		if _, ok := st.flows[name]; ok || fn.Flow == nil {
			continue
		}
		fc, err := newFlowCtl(fn)
		if err != nil {
			e.logger.Warn("workflow flow control not applied", "workflow", name, "error", err)
			continue
		}
		st.flows[name] = fc
	}
}

// flowOf is the flow control of app's workflow; nil for none.
func (e *Engine) flowOf(app, workflow string) *flowCtl {
	e.mu.Lock()
	defer e.mu.Unlock()
	if st := e.apps[app]; st != nil {
		return st.flows[workflow]
	}
	return nil
}

// admit waits until the run may be activated under its workflow's flow
// control, and returns what releases its slot when the activation ends.
// A limiter closed meanwhile (the flow changed with a deploy) sends it to
// the new one.
//
// While it waits, the run holds its goroutine. With the engine's bound
// (Options.MaxActivePerApp) of its workflow's runs already waiting, it
// does not wait: admit fails with errHeld, the run's id is held in the
// flow control without a goroutine, and it is woken when a waiter leaves
// (so a backlog of due runs of a rate-limited workflow, after a restart
// or from its triggers, costs an id each, not a goroutine and its state).
func (e *Engine) admit(r *run, rec *Run) (release func(), err error) {
	r.queued.Store(true)
	defer r.queued.Store(false)
	counted := false // in the app's runs queued for their flow (atBoundLocked)
	var last *flowCtl
	defer func() {
		if counted {
			e.setFlowQueued(r, false)
		}
		if last != nil {
			if !errors.Is(err, errHeld) {
				last.settle(r.id)
			}
			if id, ok := last.next(e.opts.MaxActivePerApp); ok {
				e.wake(r.app, id)
			}
		}
	}()
	for {
		fc := e.flowOf(r.app, rec.Workflow)
		if fc == nil {
			return func() {}, nil
		}
		last = fc
		if !counted {
			e.setFlowQueued(r, true)
			counted = true
		}
		key := fc.key(rec.Input)
		if fc.rate != nil && !r.admitted && len(r.steps) == 0 && len(r.attempts) == 0 {
			p, err := fc.acquire(fc.rate, e.ctx, key, r.id, e.opts.MaxActivePerApp)
			if errors.Is(err, throttle.ErrClosed) {
				continue
			}
			if err != nil {
				return nil, err
			}
			p.Release() // the start is counted in the window; nothing is held
			r.admitted = true
		}
		p, err := fc.acquire(fc.conc, e.ctx, key, r.id, e.opts.MaxActivePerApp)
		if errors.Is(err, throttle.ErrClosed) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return p.Release, nil
	}
}

// acquire takes a permit of l for run id, counted among fc's waiters
// while it waits, or held back (errHeld) past max of them.
func (fc *flowCtl) acquire(l *throttle.Limiter, ctx context.Context, key, id string, max int) (throttle.Permit, error) {
	entered := false
	p, err := l.AcquireOr(ctx, key, fc.prio, func() error {
		if err := fc.enter(id, max); err != nil {
			return err
		}
		entered = true
		return nil
	})
	if entered {
		fc.leave()
	}
	return p, err
}

// FlowStats are the numbers of a workflow's flow control on this node.
type FlowStats struct {
	// Active is the activations holding a concurrency slot.
	Active int
	// Queued is the runs waiting for their turn: for a concurrency slot,
	// or for the rate window (a start).
	Queued int
	// Held is the runs that must wait too but found Queued at the
	// engine's bound of active runs: held back as a run id, without a
	// goroutine, until a queued one leaves.
	Held int
}

// FlowStats returns the state of app's workflow's flow control; zero when
// it has none.
func (e *Engine) FlowStats(app, workflow string) FlowStats {
	fc := e.flowOf(app, workflow)
	if fc == nil {
		return FlowStats{}
	}
	c, r := fc.conc.Stats(), fc.rate.Stats()
	return FlowStats{Active: c.InFlight, Queued: c.Waiting + r.Waiting, Held: fc.heldCount()}
}
