package workflow

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/store"
)

// Invoker runs one activation of a workflow function; the scheduler
// implements it.
type Invoker interface {
	Invoke(ctx context.Context, app, function string, req *runtime.Request) (*runtime.Response, error)
}

// Defaults of Options.
const (
	// DefaultShortWait: sleeps and retry backoffs up to this long wait
	// inside the activation (holding its instance); longer ones suspend.
	DefaultShortWait = time.Second
	// DefaultActivationBackoff is the first delay after a failed
	// activation (a trap, a timeout); it doubles up to a minute.
	DefaultActivationBackoff = time.Second
	maxActivationBackoff     = time.Minute
)

// Options configure New. The zero value of each field is its default.
type Options struct {
	// Logger: default slog.Default().
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// ShortWait: default DefaultShortWait.
	ShortWait time.Duration
	// ActivationBackoff: default DefaultActivationBackoff.
	ActivationBackoff time.Duration
	// Observer receives step latencies and run ends (observe.go).
	// Optional.
	Observer Observer
	// Revisions keeps runs on the revision they started on
	// (versions.go). Default none: runs go on with the active revision.
	Revisions Revisions
	// Topics is what topic waits read (topics.go). Default none: a topic
	// wait fails as invalid.
	Topics Topics
	// Effects applies the KV writes of journaled steps (effects.go).
	// Optional: without it they are logged and dropped.
	Effects EffectApplier
	// Logs gives each activation its log sink, whose lines carry the run
	// and the step running (logtag.go). Optional: without it the
	// invoker's sink (untagged) applies.
	Logs LogSinks
	// MaxActivePerApp bounds an app's active runs (a goroutine drives
	// each: running, or queued for an instance or its flow): past it
	// StartAllowed refuses a client's start, StartWait holds a trigger's,
	// and the engine's own wakes wait as queued ids (atBoundLocked, which
	// leaves out the runs queued for their flow). Default
	// DefaultMaxActivePerApp; negative: no bound.
	MaxActivePerApp int
}

// DefaultMaxActivePerApp is Options.MaxActivePerApp's default. An active
// run waiting for an instance costs its goroutine, its state and its
// pending invocation, ~40 KB measured (4096 of them: 160 MB of heap);
// 2048 queue a few seconds of activations at what one node runs.
const DefaultMaxActivePerApp = 2048

// Engine is the workflow engine of a node: a component (Validate,
// Provision, Retire, Close) that drives the runs of every app's workflows,
// and the backend of the workflow host calls. Safe for concurrent use.
type Engine struct {
	j      *journal
	inv    Invoker
	opts   Options
	logger *slog.Logger

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // drive and timer goroutines

	// mu guards everything below, and every run's rec, active, again,
	// waiters. It is never held across a commit or an invocation.
	mu     sync.Mutex
	closed bool
	apps   map[string]*appState
	runs   map[string]*run        // app/id -> runs in memory: active, or waited on
	acts   map[string]*activation // activation (invocation) id -> its activation
	timers *timers
	actN   uint64
	// active counts each app's active runs (run.active); below is
	// closed when an app's count falls under the bound, for StartWait.
	active map[string]int
	below  map[string]chan struct{}
	// flowQueued counts each app's active runs in admit (flow.go);
	// deferred holds the wakes that wait for the app to get under its
	// bound (atBoundLocked).
	flowQueued map[string]int
	deferred   map[string]*deferQueue

	follows followers // readers of topics with waiting runs (topics.go)
}

// appState is what the engine knows of one app.
type appState struct {
	fns   map[string]model.Function // workflow functions of the active revision
	slots map[string]chan struct{}  // per function revision: activations at once
	// parked are runs whose workflow is not in the active revision; a
	// Provision that brings it back wakes them.
	parked map[string]bool
	// pinned: function revision -> its function, for every revision
	// held for runs in flight (versions.go).
	pinned map[string]model.Function
	// flows: workflow name -> its flow control (flow.go), for the
	// workflows of the active revision that have one.
	flows map[string]*flowCtl
}

// run is a run in memory. rec, active, again and waiters are guarded by
// Engine.mu; steps and attempts belong to the goroutine driving it.
type run struct {
	app, id string
	rec     *Run // nil until loaded
	active  bool // a drive goroutine owns the run
	again   bool // woken while active: drive once more
	waiters []chan struct{}

	loaded   bool
	steps    []Entry         // final entries by position (EntryStep, EntrySleep, EntryWait, EntryCut)
	attempts map[int][]Entry // failed attempts by position

	// cancelled is set once the run's journal has EntryCancel (control.go);
	// cut is the position where the cancellation took effect, once hasCut.
	cancelled atomic.Bool
	hasCut    bool
	cut       int
	// paused: the journal's last pause/resume/cancel is a pause.
	paused atomic.Bool
	// terminated: the run was terminated (terminate.go).
	terminated atomic.Bool
	// children: the children (not detached) that StartChild started for
	// this run in this process, which its journal may not name yet (the
	// step that started one has not ended); guarded by Engine.mu.
	children []string
	// admitted: the run's start took its slot of the workflow's rate
	// window (flow.go); its driving goroutine's.
	admitted bool
	// queued: the run waits for its turn under its workflow's flow
	// control (flow.go).
	queued atomic.Bool
}

// activation is one invocation of a run's workflow function.
type activation struct {
	id     string
	r      *run
	fn     model.Function
	next   int       // the next position the code may use
	stop   error     // once set, every host call answers it
	wakeAt time.Time // when suspended: when to activate again
	// waiting: suspended by a signal wait, which wrote the run's record
	// (signals.go); wakeAt is its deadline, zero for none.
	waiting bool
	// pending is the answer of a Call the guest has not taken (call.go).
	pending *pendingCall
	// begun is 1 + the position of the step running now, 0 for none;
	// stepName is its name.
	begun    int
	stepName string
	// attemptStart and attemptSpan time the step attempt running now
	// (observe.go).
	attemptStart time.Time
	attemptSpan  string
	// fx holds the effects of the journaled step running now (effects.go).
	fx *stepEffects
}

// New returns an engine committing through c and activating runs through
// inv. It runs nothing until an app is provisioned.
func New(c *store.Committer, inv Invoker, opts Options) *Engine {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ShortWait <= 0 {
		opts.ShortWait = DefaultShortWait
	}
	if opts.ActivationBackoff <= 0 {
		opts.ActivationBackoff = DefaultActivationBackoff
	}
	if opts.MaxActivePerApp == 0 {
		opts.MaxActivePerApp = DefaultMaxActivePerApp
	}
	ctx, cancel := context.WithCancel(context.Background())
	logger := opts.Logger.With("component", "workflow")
	e := &Engine{
		j:      newJournal(ctx, c, logger),
		inv:    inv,
		opts:   opts,
		logger: logger,
		ctx:    ctx,
		cancel: cancel,
		apps:   map[string]*appState{},
		runs:   map[string]*run{},
		acts:   map[string]*activation{},
		active: map[string]int{},
		below:  map[string]chan struct{}{},

		flowQueued: map[string]int{},
		deferred:   map[string]*deferQueue{},
	}
	e.j.fx = opts.Effects
	e.timers = newTimers(opts.Now, e.fire)
	e.wg.Add(1)
	go func() { defer e.wg.Done(); e.timers.run(ctx) }()
	return e
}

// CommitStats are the counters of the engine's log commits (every app's):
// one pack, one write, per commit.
func (e *Engine) CommitStats() store.CommitStats { return e.j.stats.Stats() }

// JournalStats are counters of the engine's journal (every app's).
type JournalStats struct {
	// Packs is the number of log commits, Changes the run changes they
	// carried: Changes over Packs is the group commit at work.
	Packs, Changes uint64
	// Views is the number of view messages the materializer wrote.
	Views uint64
}

// JournalStats returns the journal's counters.
func (e *Engine) JournalStats() JournalStats {
	return JournalStats{Packs: e.j.stats.Stats().Commits, Changes: e.j.changes.Load(), Views: e.j.views.Load()}
}

// ActiveRuns is the number of runs a goroutine drives right now (running,
// or waiting for an instance), over every app.
func (e *Engine) ActiveRuns() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, c := range e.active {
		n += c
	}
	return n
}

// ErrTooManyActive refuses a start from outside while its app has
// Options.MaxActivePerApp active runs (StartAllowed).
var ErrTooManyActive = errors.New("too many active workflow runs")

// StartAllowed reports, with ErrTooManyActive, an app whose active runs
// are at Options.MaxActivePerApp: its runs are started faster than the
// node activates them, and each active run costs a goroutine and its
// state. A start from a client (a route, the API) is refused then, to be
// retried; nothing of it is stored.
func (e *Engine) StartAllowed(app string) error {
	e.mu.Lock()
	n := e.active[app]
	e.mu.Unlock()
	if max := e.opts.MaxActivePerApp; max > 0 && n >= max {
		return fmt.Errorf("%w: app %s has %d runs active (running, or queued for an instance or their flow), the node's bound per app (nimbus up --max-active-runs): runs are started faster than they run", ErrTooManyActive, app, n)
	}
	return nil
}

// StartWait waits until app has fewer than Options.MaxActivePerApp active
// runs, or ctx ends: what a start from an event (a trigger) does, so that
// the event log, not memory, holds what the runs cannot take yet.
func (e *Engine) StartWait(ctx context.Context, app string) error {
	for {
		e.mu.Lock()
		max := e.opts.MaxActivePerApp
		if max <= 0 || e.active[app] < max || e.closed {
			e.mu.Unlock()
			return nil
		}
		ch := e.below[app]
		if ch == nil {
			ch = make(chan struct{})
			e.below[app] = ch
		}
		e.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// setActiveLocked marks r active or not, and counts it for its app; e.mu
// is held.
func (e *Engine) setActiveLocked(r *run, active bool) {
	if r.active == active {
		return
	}
	r.active = active
	if active {
		e.active[r.app]++
		return
	}
	n := e.active[r.app] - 1
	if n <= 0 {
		delete(e.active, r.app)
	} else {
		e.active[r.app] = n
	}
	if ch := e.below[r.app]; ch != nil && n < e.opts.MaxActivePerApp {
		close(ch)
		delete(e.below, r.app)
	}
	e.undeferLocked(r.app)
}

// setFlowQueued counts r in or out of its app's runs queued for their
// flow control; in, it may let a deferred wake go.
func (e *Engine) setFlowQueued(r *run, queued bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if queued {
		e.flowQueued[r.app]++
		e.undeferLocked(r.app)
		return
	}
	if n := e.flowQueued[r.app] - 1; n <= 0 {
		delete(e.flowQueued, r.app)
	} else {
		e.flowQueued[r.app] = n
	}
}

func runKey(app, id string) string { return app + "/" + id }

// Validate implements the component contract: the model checked the
// workflow functions already (kind, runtime); here, their flow control
// (flow.go), which keys runs on their input.
func (e *Engine) Validate(_ context.Context, rev *model.Revision) error {
	var errs []error
	for _, fn := range rev.Functions {
		if fn.IsWorkflow() {
			if err := CheckFlow(fn.Flow); err != nil {
				errs = append(errs, fmt.Errorf("%w: workflow %s: %w", model.ErrInvalid, fn.Name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// Provision makes rev's workflows runnable: it creates the app's stream,
// and the first time it sees the app in this process it resumes every run
// that is not finished (running ones at once, sleeping ones at their
// time), from their records, without waiting for any timeout.
func (e *Engine) Provision(ctx context.Context, rev *model.Revision) error {
	fns := map[string]model.Function{}
	for _, fn := range rev.Functions {
		if fn.IsWorkflow() {
			fns[fn.Name] = fn
		}
	}
	e.mu.Lock()
	st := e.apps[rev.App]
	e.mu.Unlock()
	if st == nil && len(fns) == 0 {
		return nil
	}
	if err := e.j.ensure(ctx, rev.App); err != nil {
		return err
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return ErrClosed
	}
	first := st == nil
	if first {
		st = &appState{slots: map[string]chan struct{}{}, parked: map[string]bool{}, pinned: map[string]model.Function{}, flows: map[string]*flowCtl{}}
		e.apps[rev.App] = st
	}
	st.fns = fns
	e.setFlowsLocked(rev.App, st, fns)
	for _, fn := range fns {
		if st.slots[fn.Revision] == nil {
			st.slots[fn.Revision] = make(chan struct{}, max(1, fn.MaxInstances*fn.Concurrency))
		}
	}
	parked := st.parked
	st.parked = map[string]bool{}
	e.mu.Unlock()
	for id := range parked {
		e.wake(rev.App, id)
	}
	if !first {
		return nil
	}
	// Every run in flight holds its revision before any of them runs
	// (versions.go): read the records, hold, then arm and wake.
	type due struct {
		id string
		at time.Time // zero: now
	}
	var dues []due
	var orphans []string // terminated runs whose children may run on
	var untold []*Run    // terminated children whose parents may not know
	counts := map[[2]string]int{}
	err := e.j.records(ctx, rev.App, func(rec *Run) {
		if rec.Done() {
			if rec.ChildrenPending {
				orphans = append(orphans, rec.ID)
			}
			if rec.ParentPending {
				untold = append(untold, rec)
			}
			return
		}
		counts[[2]string{rec.Workflow, rec.Revision}]++
		switch {
		case rec.State == StatePaused: // Resume wakes a paused run
		case rec.State == StateSleeping && rec.WakeAt.After(e.opts.Now()):
			dues = append(dues, due{rec.ID, rec.WakeAt})
		case rec.State == StateWaiting && rec.Topic != "":
			// Its activation reaches the wait again and registers it
			// with the topic's follower (topics.go).
			dues = append(dues, due{id: rec.ID})
		case rec.State == StateWaiting:
			// A signal wakes it (a signal moves the record to running
			// first); so does its deadline.
			if !rec.WakeAt.IsZero() {
				dues = append(dues, due{rec.ID, rec.WakeAt})
			}
		default:
			dues = append(dues, due{id: rec.ID})
		}
	})
	if err != nil {
		return fmt.Errorf("resume workflow runs of %s: %w", rev.App, err)
	}
	e.holdInFlight(ctx, rev.App, counts)
	n := 0
	for _, c := range counts {
		n += c
	}
	for _, d := range dues {
		if d.at.IsZero() {
			e.wake(rev.App, d.id)
		} else {
			e.timers.add(d.at, rev.App, d.id)
		}
	}
	if n > 0 {
		e.logger.Info("workflow runs resumed", "app", rev.App, "runs", n)
	}
	for _, id := range orphans {
		// A crash came between a termination and its children's.
		if err := e.terminateChildren(ctx, rev.App, id); err != nil {
			e.logger.Warn("workflow run terminated; its children were not all terminated", "app", rev.App, "run", id, "error", err)
		}
	}
	for _, rec := range untold {
		// A crash came between a child's termination and its parent's
		// signal.
		if err := e.retellParent(ctx, rec); err != nil {
			e.logger.Warn("workflow child terminated; its parent was not told", "app", rev.App, "run", rec.ID, "parent", rec.Parent, "error", err)
		}
	}
	return nil
}

// Retire forgets app and deletes its runs (the app was deleted).
func (e *Engine) Retire(ctx context.Context, app string) error {
	e.mu.Lock()
	st, known := e.apps[app]
	delete(e.apps, app)
	if known {
		e.setFlowsLocked(app, st, nil)
	}
	e.mu.Unlock()
	e.stopTopics(app)
	if !known {
		return nil
	}
	return e.j.drop(ctx, app)
}

// Close stops every activation and timer and waits for them. Runs stay as
// their journals say; the next start resumes them.
func (e *Engine) Close(ctx context.Context) error {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	e.cancel()
	done := make(chan struct{})
	go func() { e.wg.Wait(); e.j.close(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("close workflow engine: %w", ctx.Err())
	}
}

// Start starts a run of app's workflow with input (JSON; empty is null).
// id is the run id, and an idempotency key: a run with that id that
// exists already is returned with created false, whatever its state, and
// nothing else happens. An empty id makes a random one.
func (e *Engine) Start(ctx context.Context, app, workflow, id string, input []byte) (_ *Run, created bool, _ error) {
	return e.start(ctx, app, workflow, id, input, "", false, false)
}

// StartLazy is Start for a caller that waits for the run's result (Wait)
// before it tells anyone of the run: a new run's start is not committed
// when it returns, but with the run's first commit (its first step's
// end, usually), or by Durable, or when anything else names the run (a
// signal, a control, Get, a duplicate start). Until then the run is not
// durable: a crash forgets it, and no one was told of it. The caller must
// call Durable before it answers the run's id without its end (RATIONALE.md
// "Durable workflows: a change is durable before what depends on it").
func (e *Engine) StartLazy(ctx context.Context, app, workflow, id string, input []byte) (_ *Run, created bool, _ error) {
	return e.start(ctx, app, workflow, id, input, "", false, true)
}

// Durable returns once the run's start, and every change of the run made
// so far, is committed.
func (e *Engine) Durable(ctx context.Context, app, id string) error {
	return e.j.durable(ctx, app, id, false)
}

// start is Start of a run whose parent is the run parent ("" for none),
// detached from it or not (children.go); lazy is StartLazy's.
func (e *Engine) start(ctx context.Context, app, workflow, id string, input []byte, parent string, detached, lazy bool) (_ *Run, created bool, _ error) {
	e.mu.Lock()
	st := e.apps[app]
	var fn model.Function
	ok := false
	if st != nil {
		fn, ok = st.fns[workflow]
	}
	closed := e.closed
	e.mu.Unlock()
	if closed {
		return nil, false, ErrClosed
	}
	if !ok {
		return nil, false, fmt.Errorf("%w: app %s has no workflow %q (a function with kind: workflow)", ErrWorkflowNotFound, app, workflow)
	}
	fresh := id == "" // 96 random bits: no run has it, nothing to check
	if fresh {
		id = newRunID()
	} else if err := CheckRunID(id); err != nil {
		return nil, false, err
	}
	if len(input) == 0 {
		input = []byte("null")
	}
	if int64(len(input)) > fn.MaxRequestBytes {
		return nil, false, fmt.Errorf("%w: input is %d bytes, over the workflow's max_request_body of %d", ErrInvalid, len(input), fn.MaxRequestBytes)
	}
	if !json.Valid(input) {
		return nil, false, fmt.Errorf("%w: input is not JSON: a run's input is the JSON value its workflow function takes", ErrInvalid)
	}
	// The run holds its revision from before its start is recorded, so
	// no deploy in between retires it (versions.go).
	if err := e.pin(ctx, app, fn, 1); err != nil {
		return nil, false, err
	}
	now := e.opts.Now().UTC()
	rec := &Run{ID: id, App: app, Workflow: workflow, Revision: fn.Revision, State: StateRunning, Input: input, Created: now, Updated: now, Parent: parent, Detached: detached}
	ok, err := e.j.create(ctx, rec, fresh, lazy)
	if err != nil || !ok {
		e.unpin(app, fn.Revision)
	}
	if errors.Is(err, store.ErrWriteTooLarge) {
		// The input fits max_request_body but not the run's record,
		// one store write: a client error, not the node's.
		return nil, false, fmt.Errorf("%w: input is %d bytes, more than a run's record holds (about %d bytes): pass large data by reference, such as a KV key: %w",
			ErrInvalid, len(input), e.j.c.MaxWriteBytes(), err)
	}
	if err != nil {
		return nil, false, err
	}
	if !ok {
		old, err := e.j.record(ctx, app, id)
		if err != nil {
			return nil, false, err
		}
		if old.Workflow != workflow {
			return nil, false, fmt.Errorf("%w: run %s of app %s is a run of workflow %q, not %q: use another id", ErrRunConflict, id, app, old.Workflow, workflow)
		}
		return old, false, nil
	}
	if e.opts.Observer != nil {
		e.opts.Observer.RunStarted(app, workflow)
	}
	key := runKey(app, id)
	e.mu.Lock()
	r := e.runs[key]
	if r == nil {
		r = &run{app: app, id: id}
		e.runs[key] = r
	}
	if r.rec == nil {
		cp := *rec
		r.rec, r.loaded, r.steps, r.attempts = &cp, true, nil, map[int][]Entry{}
	}
	e.mu.Unlock()
	e.wake(app, id)
	return rec, true, nil
}

func newRunID() string {
	var b [12]byte
	rand.Read(b[:])
	return "run-" + hex.EncodeToString(b[:])
}

// Wait waits until the run is finished or ctx ends, and returns its
// record as it is then.
func (e *Engine) Wait(ctx context.Context, app, id string) (*Run, error) {
	rec, err := e.record(ctx, app, id)
	if err != nil || rec.Done() {
		return rec, err
	}
	ch := make(chan struct{})
	key := runKey(app, id)
	e.mu.Lock()
	r := e.runs[key]
	if r == nil {
		r = &run{app: app, id: id}
		e.runs[key] = r
	}
	r.waiters = append(r.waiters, ch)
	e.mu.Unlock()
	defer e.unwait(key, ch)
	// It may have finished between the read and the registration.
	if rec, err = e.record(ctx, app, id); err != nil || rec.Done() {
		return rec, err
	}
	select {
	case <-ch:
		// finish set r.rec before it woke us: answer from memory (the
		// run may have left e.runs already), not with two JetStream
		// round trips per run.
		e.mu.Lock()
		rec := r.rec
		e.mu.Unlock()
		if rec != nil && rec.Done() {
			cp := *rec
			return &cp, nil
		}
	case <-ctx.Done():
	}
	return e.record(context.WithoutCancel(ctx), app, id)
}

// unwait removes a waiter, and the run from memory if nothing holds it.
func (e *Engine) unwait(key string, ch chan struct{}) {
	e.mu.Lock()
	defer e.mu.Unlock()
	r := e.runs[key]
	if r == nil {
		return
	}
	r.waiters = slices.DeleteFunc(r.waiters, func(c chan struct{}) bool { return c == ch })
	if !r.active && len(r.waiters) == 0 {
		delete(e.runs, key)
	}
}

// record is the run's record: in memory while it is driven here, else the
// stored one.
func (e *Engine) record(ctx context.Context, app, id string) (*Run, error) {
	e.mu.Lock()
	if r := e.runs[runKey(app, id)]; r != nil && r.rec != nil {
		cp := *r.rec
		e.mu.Unlock()
		return &cp, nil
	}
	e.mu.Unlock()
	return e.j.record(ctx, app, id)
}

// RunInfo is a run's record and its journal, for display.
type RunInfo struct {
	Run
	// TraceID is the run's W3C trace id (RunTraceID): its activations'
	// spans, and each step attempt's (Entry.Span), are in it.
	TraceID string `json:"trace_id"`
	// Timeline is the run's journal; results and inputs over
	// MaxShownBytes are cut (Entry.Truncated).
	Timeline []Entry `json:"timeline"`
	// Queued is set while the run waits for its turn under its
	// workflow's flow control on this node (flow.go): started, durable,
	// not running yet.
	Queued bool `json:"queued,omitempty"`
}

// MaxShownBytes caps a result or input shown in a timeline.
const MaxShownBytes = 4 << 10

// Get returns a run with its timeline.
func (e *Engine) Get(ctx context.Context, app, id string) (*RunInfo, error) {
	// Shown, the run and what it did are durable first (StartLazy).
	if err := e.j.durable(ctx, app, id, false); err != nil {
		return nil, err
	}
	rec, err := e.record(ctx, app, id)
	if err != nil {
		return nil, err
	}
	ents, err := e.j.entries(ctx, app, id)
	if err != nil {
		return nil, err
	}
	ents = timeline(rec, ents)
	for i := range ents {
		ents[i].Result, ents[i].Truncated = cut(ents[i].Result, ents[i].Truncated)
		ents[i].Input, ents[i].Truncated = cut(ents[i].Input, ents[i].Truncated)
	}
	rec.Input, _ = cut(rec.Input, false)
	e.mu.Lock()
	r := e.runs[runKey(app, id)]
	queued := r != nil && r.queued.Load() && !rec.Done()
	e.mu.Unlock()
	return &RunInfo{Run: *rec, TraceID: RunTraceID(app, id), Timeline: ents, Queued: queued}, nil
}

// timeline is a run's journal as shown: with its start and its end, which
// are stored in the run's record only (one message per start and per end:
// see journal.go), as the first and last entries.
func timeline(rec *Run, ents []Entry) []Entry {
	out := make([]Entry, 0, len(ents)+2)
	if len(ents) == 0 || ents[0].Type != EntryStarted { // journals before 2026-12 have it
		out = append(out, Entry{Type: EntryStarted, Time: rec.Created, Function: rec.Workflow, Revision: rec.Revision, Input: rec.Input})
	}
	out = append(out, ents...)
	if n := len(ents); rec.Done() && (n == 0 || !isEnd(ents[n-1].Type)) {
		end := Entry{Type: EntryCompleted, Time: rec.Updated, Result: rec.Result}
		switch rec.State {
		case StateFailed:
			end = Entry{Type: EntryFailed, Time: rec.Updated, Error: rec.Error}
		case StateCancelled:
			end = Entry{Type: EntryCancelled, Time: rec.Updated, Error: rec.Error}
		}
		out = append(out, end)
	}
	return out
}

// isEnd reports whether an entry of type t ends a run in its journal
// (older journals, and a termination, which is journaled).
func isEnd(t string) bool {
	return t == EntryCompleted || t == EntryFailed || t == EntryCancelled || t == EntryTerminated
}

// cut replaces a JSON value over MaxShownBytes by a JSON string of its
// first MaxShownBytes bytes.
func cut(b json.RawMessage, was bool) (json.RawMessage, bool) {
	if len(b) <= MaxShownBytes {
		return b, was
	}
	s, _ := json.Marshal(string(b[:MaxShownBytes]) + "...")
	return s, true
}

// ListOptions filter List.
type ListOptions struct {
	// Workflow keeps runs of that workflow; "" all.
	Workflow string
	// State keeps runs in that state; "" all.
	State string
	// InFlight keeps runs that are not finished (what keeps their
	// revision's module needed).
	InFlight bool
	// Limit caps the runs returned, newest first. Default 100.
	Limit int
}

// List returns app's runs, newest first, without input or result.
func (e *Engine) List(ctx context.Context, app string, o ListOptions) ([]Run, error) {
	if o.Limit <= 0 {
		o.Limit = 100
	}
	var out []Run
	err := e.j.records(ctx, app, func(r *Run) {
		if (o.Workflow == "" || r.Workflow == o.Workflow) && (o.State == "" || r.State == o.State) && (!o.InFlight || !r.Done()) {
			r.Input, r.Result = nil, nil
			out = append(out, *r)
		}
	})
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	for i := range out {
		if r := e.runs[runKey(app, out[i].ID)]; r != nil && r.active && r.rec != nil && !r.rec.Done() {
			out[i].State = StateRunning
		}
	}
	e.mu.Unlock()
	slices.SortFunc(out, func(a, b Run) int {
		return cmp.Or(b.Created.Compare(a.Created), cmp.Compare(a.ID, b.ID))
	})
	if len(out) > o.Limit {
		out = out[:o.Limit]
	}
	return out, nil
}

// fire is the timers' callback.
func (e *Engine) fire(app, id string) { e.wake(app, id) }

// wake makes the run be driven: now if no goroutine drives it, or once
// more when the one driving it is done; or, while its app is at its
// bound of active runs, once one of them ends (deferLocked).
func (e *Engine) wake(app, id string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.wakeLocked(app, id)
}

// wakeLocked is wake with e.mu held.
func (e *Engine) wakeLocked(app, id string) {
	if e.closed {
		return
	}
	key := runKey(app, id)
	r := e.runs[key]
	if r != nil && r.active {
		r.again = true
		return
	}
	if e.atBoundLocked(app) {
		e.deferLocked(app, id)
		return
	}
	if r == nil {
		r = &run{app: app, id: id}
		e.runs[key] = r
	}
	e.setActiveLocked(r, true)
	e.wg.Add(1)
	go e.drive(r)
}

// deferQueue holds an app's deferred wakes in the order they came.
type deferQueue struct {
	ids  []string
	head int
	in   map[string]bool
}

// atBoundLocked reports whether app's active runs, those queued for their
// flow control aside, are at Options.MaxActivePerApp: a wake then waits
// for one of them to end, so timers that fire together, a restart with
// many runs due, or a storm of signals cost a queued id each (~100 B),
// not a goroutine and a pending invocation (~40 KB). Runs queued for
// their flow do not count: they wait for their turn, not for a driver,
// and counting them would hold every other wake of the app behind a
// rate limit.
func (e *Engine) atBoundLocked(app string) bool {
	max := e.opts.MaxActivePerApp
	return max > 0 && e.active[app]-e.flowQueued[app] >= max
}

// deferLocked queues a wake of app's run id, once.
func (e *Engine) deferLocked(app, id string) {
	q := e.deferred[app]
	if q == nil {
		q = &deferQueue{in: map[string]bool{}}
		e.deferred[app] = q
	}
	if q.in[id] {
		return
	}
	q.in[id] = true
	q.ids = append(q.ids, id)
}

// undeferLocked wakes app's deferred runs, oldest first, while it is
// under its bound.
func (e *Engine) undeferLocked(app string) {
	q := e.deferred[app]
	for q != nil && q.head < len(q.ids) && !e.atBoundLocked(app) && !e.closed {
		id := q.ids[q.head]
		q.ids[q.head] = ""
		q.head++
		delete(q.in, id)
		e.wakeLocked(app, id)
	}
	if q != nil && q.head == len(q.ids) {
		delete(e.deferred, app)
	} else if q != nil && q.head > len(q.ids)/2 {
		q.ids = slices.Delete(q.ids, 0, q.head)
		q.head = 0
	}
}

// DeferredWakes is the number of runs whose wake waits, as a run id and
// not a goroutine, over every app: for their app to get under its bound
// of active runs, or for their workflow's runs waiting for its flow
// control to get under the same bound (flowCtl.held).
func (e *Engine) DeferredWakes() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, q := range e.deferred {
		n += len(q.ids) - q.head
	}
	for _, st := range e.apps {
		for _, fc := range st.flows {
			n += fc.heldCount()
		}
	}
	return n
}
