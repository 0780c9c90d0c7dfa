package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/telemetry"
	"github.com/nimbus-dev/nimbus/internal/throttle"
)

// ErrNotFound means no active function has that app and name.
var ErrNotFound = errors.New("function not found")

// ErrNoRuntime means a function names a runtime this node does not run
// (model.Function.Runtime is not in the scheduler's runtime.Set).
var ErrNoRuntime = errors.New("runtime not available on this node")

// ArtifactSource gives the bytes of an artifact by sha256.
type ArtifactSource interface {
	GetArtifact(ctx context.Context, sha string) ([]byte, error)
}

// LogSinks makes the log sink of one invocation.
type LogSinks interface {
	Sink(app, function, revision, invocation string) runtime.LogSink
}

// Options configure a Scheduler. The zero value of each field is its default.
type Options struct {
	// IdleTimeout closes instances idle for longer. Default 5m.
	IdleTimeout time.Duration
	// Now is the clock. Default time.Now; tests inject their own.
	Now func() time.Time
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Metrics defaults to a private set.
	Metrics *telemetry.Metrics
	// Logs receives guest output. Nil discards it.
	Logs LogSinks
	// Status is the HTTP status the edge answers for an invocation error:
	// the code label of a failed invocation in nimbus_requests_total. The
	// scheduler knows no HTTP; the server passes the edge's mapping
	// (apierror.Status). Default: 500 for every error.
	Status func(error) int
	// Waiting bounds the edge invocations (InvokeEdge) that wait at once
	// for an instance or a flow control permit; one past it is refused at
	// once with ErrBusy. Nil: no bound.
	Waiting *throttle.Waiting
}

// Scheduler routes invocations to instance pools of the active revisions.
type Scheduler struct {
	rts  runtime.Set
	arts ArtifactSource
	opts Options
	wg   sync.WaitGroup // retiring pools

	mu    sync.RWMutex
	apps  map[string]map[string]*pool // app -> function name -> active pool
	pools map[string]*pool            // app/function-revision -> pool, active or prepared
	holds map[string]int              // app/function-revision -> Holds not yet Released
}

// New creates a scheduler over a set of runtimes: each function is loaded
// by the runtime its Runtime names.
func New(rts runtime.Set, arts ArtifactSource, opts Options) *Scheduler {
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 5 * time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Metrics == nil {
		opts.Metrics = telemetry.NewMetrics()
	}
	if opts.Status == nil {
		opts.Status = func(error) int { return http.StatusInternalServerError }
	}
	return &Scheduler{
		rts: rts, arts: arts, opts: opts,
		apps:  map[string]map[string]*pool{},
		pools: map[string]*pool{},
		holds: map[string]int{},
	}
}

func poolKey(app string, fn model.Function) string { return app + "/" + fn.Revision }

// Prepare loads (compiles and validates) every function of an app revision
// without routing traffic to it. A module that cannot run, or whose runtime
// this node does not run (ErrNoRuntime), fails here, with an error naming
// the function, so a deploy is rejected before activation. Functions must
// carry their Revision.
func (s *Scheduler) Prepare(ctx context.Context, app string, fns []model.Function) error {
	var errs []error
	for _, fn := range fns {
		if _, err := s.prepare(ctx, app, fn); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (s *Scheduler) prepare(ctx context.Context, app string, fn model.Function) (*pool, error) {
	key := poolKey(app, fn)
	s.mu.RLock()
	p := s.pools[key]
	s.mu.RUnlock()
	if p != nil {
		return p, nil
	}
	rt, ok := s.rts[fn.Runtime]
	if !ok {
		return nil, fmt.Errorf("function %s: %w: runtime %q; this node runs %s", fn.Name, ErrNoRuntime, fn.Runtime, strings.Join(s.rts.Names(), ", "))
	}
	art, err := s.arts.GetArtifact(ctx, fn.Module)
	if err != nil {
		return nil, fmt.Errorf("function %s: artifact %s: %w", fn.Name, fn.Module, err)
	}
	mod, err := rt.Load(ctx, SpecOf(app, fn, art))
	if err != nil {
		return nil, fmt.Errorf("function %s: %w", fn.Name, err)
	}
	name := fn.Name
	p, err = newPool(app, fn, mod, func() *telemetry.FunctionMetrics { return s.opts.Metrics.Function(app, name) }, s.opts.Now)
	if err != nil {
		mod.Close(ctx)
		return nil, err
	}
	s.mu.Lock()
	if existing := s.pools[key]; existing != nil {
		s.mu.Unlock()
		mod.Close(ctx)
		return existing, nil
	}
	s.pools[key] = p
	s.mu.Unlock()
	return p, nil
}

// SpecOf is the runtime spec of a function.
func SpecOf(app string, fn model.Function, artifact []byte) runtime.Spec {
	return runtime.Spec{
		App: app, Function: fn.Name, Revision: fn.Revision,
		Runtime:      fn.Runtime,
		Artifact:     artifact,
		Env:          fn.Env,
		Process:      fn.Process,
		Capabilities: fn.Capabilities,
		Limits: runtime.Limits{
			MemoryBytes:      fn.MemoryBytes,
			Timeout:          fn.Timeout(),
			MaxResponseBytes: fn.MaxResponseBytes,
		},
	}
}

// Activate routes the app's invocations to rev. Functions whose revision did
// not change keep their pools and warm instances; the others are retired.
func (s *Scheduler) Activate(ctx context.Context, rev *model.Revision) error {
	next := map[string]*pool{}
	for _, fn := range rev.Functions {
		p, err := s.prepare(ctx, rev.App, fn)
		if err != nil {
			return fmt.Errorf("activate %s revision %s: %w", rev.App, short(rev.ID), err)
		}
		next[fn.Name] = p
	}
	s.mu.Lock()
	s.apps[rev.App] = next
	retired := s.unusedLocked(rev.App)
	s.mu.Unlock()
	for _, p := range retired {
		p.close(&s.wg)
	}
	s.opts.Logger.Info("revision active", "app", rev.App, "revision", short(rev.ID), "functions", len(rev.Functions))
	return nil
}

// Deactivate stops routing to an app and retires its pools.
func (s *Scheduler) Deactivate(app string) {
	s.mu.Lock()
	delete(s.apps, app)
	for key := range s.holds {
		if strings.HasPrefix(key, app+"/") {
			delete(s.holds, key) // the app is gone: so are its runs
		}
	}
	retired := s.unusedLocked(app)
	s.mu.Unlock()
	for _, p := range retired {
		p.close(&s.wg)
	}
}

// unusedLocked removes and returns the app's pools that no route uses. s.mu
// is held.
func (s *Scheduler) unusedLocked(app string) []*pool {
	active := map[*pool]bool{}
	for _, p := range s.apps[app] {
		active[p] = true
	}
	var out []*pool
	for key, p := range s.pools {
		if p.app == app && !active[p] && s.holds[key] == 0 {
			delete(s.pools, key)
			out = append(out, p)
		}
	}
	return out
}

// Hold loads fn (a function revision of app, active or not; Revision
// set) if it is not loaded, and keeps its pool, n times: a deploy or a
// rollback that moves the app to another revision does not retire it
// until a Release for each hold. The workflow engine holds the revision
// of every run in flight, so a run stays on the code it started on
// (InvokeRevision).
func (s *Scheduler) Hold(ctx context.Context, app string, fn model.Function, n int) error {
	key := poolKey(app, fn)
	for range 3 {
		p, err := s.prepare(ctx, app, fn)
		if err != nil {
			return err
		}
		s.mu.Lock()
		if s.pools[key] == p { // not retired since prepare found it
			s.holds[key] += n
			s.mu.Unlock()
			return nil
		}
		s.mu.Unlock()
	}
	return fmt.Errorf("hold %s/%s at revision %s: retired while loading; try again", app, fn.Name, short(fn.Revision))
}

// Release drops one Hold of app's function revision; the last one
// retires its pool (its module is closed once its invocations end) unless
// the app's active revision uses it.
func (s *Scheduler) Release(app, revision string) {
	key := app + "/" + revision
	s.mu.Lock()
	if s.holds[key] <= 0 {
		s.mu.Unlock()
		return
	}
	s.holds[key]--
	var retired *pool
	if s.holds[key] == 0 {
		delete(s.holds, key)
		// Only this pool: another one that is neither active nor held
		// may be a deploy's, prepared by its Validate for its Provision.
		if p := s.pools[key]; p != nil && s.apps[app][p.fn.Name] != p {
			delete(s.pools, key)
			retired = p
		}
	}
	s.mu.Unlock()
	if retired != nil {
		retired.close(&s.wg)
		s.opts.Logger.Info("function revision released: no workflow runs of it in flight", "app", app, "function", retired.fn.Name, "revision", short(revision))
	}
}

// Loaded lists the function revisions of app with a pool: the active
// revision's, and those held (Hold). Sorted.
func (s *Scheduler) Loaded(app string) []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []string
	for _, p := range s.pools {
		if p.app == app {
			out = append(out, p.fn.Revision)
		}
	}
	slices.Sort(out)
	return out
}

// Function returns the active configuration of a function.
func (s *Scheduler) Function(app, name string) (model.Function, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	p := s.apps[app][name]
	if p == nil {
		return model.Function{}, false
	}
	return p.fn, true
}

// Instances reports the idle and busy instances of an active function.
func (s *Scheduler) Instances(app, name string) (idle, busy int) {
	s.mu.RLock()
	p := s.apps[app][name]
	s.mu.RUnlock()
	if p == nil {
		return 0, 0
	}
	return p.counts()
}

// Invoke runs one invocation of app/function. It fills in the request's
// invocation id and traceparent when empty and attaches the log sink. Both
// the wait for a free instance and the guest's run are bounded by the
// function's timeout.
func (s *Scheduler) Invoke(ctx context.Context, app, function string, req *runtime.Request) (*runtime.Response, error) {
	return s.invokeActive(ctx, app, function, req, nil)
}

// InvokeEdge is Invoke for a client at the edge (an HTTP route, `nimbus
// invoke`): if it has to wait for an instance or a flow control permit, it
// first takes a place among the node's waiters (Options.Waiting), and is
// refused at once with ErrBusy (wrapping a *throttle.WaitError) when there
// is none. The node's own callers (triggers, async, workflows) queue
// elsewhere, under their own bounds, and call Invoke.
func (s *Scheduler) InvokeEdge(ctx context.Context, app, function string, req *runtime.Request) (*runtime.Response, error) {
	return s.invokeActive(ctx, app, function, req, s.opts.Waiting)
}

// invokeActive invokes the active revision of app/function, its waits
// bounded by waiting (nil: none).
func (s *Scheduler) invokeActive(ctx context.Context, app, function string, req *runtime.Request, waiting *throttle.Waiting) (*runtime.Response, error) {
	s.mu.RLock()
	p := s.apps[app][function]
	s.mu.RUnlock()
	if p == nil {
		return nil, fmt.Errorf("%w: %s/%s", ErrNotFound, app, function)
	}
	return s.invokePool(ctx, p, function, req, waiting)
}

// InvokeRevision runs one invocation of app/function on its function
// revision, held with Hold (active or not), rather than on the app's
// active revision: how a workflow run stays on the code it started on.
func (s *Scheduler) InvokeRevision(ctx context.Context, app, function, revision string, req *runtime.Request) (*runtime.Response, error) {
	s.mu.RLock()
	p := s.pools[app+"/"+revision]
	s.mu.RUnlock()
	if p == nil || p.fn.Name != function {
		return nil, fmt.Errorf("%w: %s/%s at revision %s (not loaded: Hold it first)", ErrNotFound, app, function, short(revision))
	}
	return s.invokePool(ctx, p, function, req, nil)
}

func (s *Scheduler) invokePool(ctx context.Context, p *pool, function string, req *runtime.Request, waiting *throttle.Waiting) (*runtime.Response, error) {
	app := p.app
	start := time.Now()
	if req.InvocationID == "" {
		req.InvocationID = telemetry.NewInvocationID()
	}
	if req.TraceParent == "" {
		req.TraceParent = telemetry.NewTrace().String()
	}
	if req.Log == nil && s.opts.Logs != nil {
		req.Log = s.opts.Logs.Sink(app, function, p.fn.Revision, req.InvocationID)
	}
	resp, err := s.invoke(ctx, p, req, start, waiting)
	code, reason := http.StatusOK, ""
	if resp != nil {
		code = resp.Status
	}
	if err != nil {
		code, reason = s.opts.Status(err), Reason(err)
	}
	p.metrics().Observe(code, time.Since(start), reason)
	return resp, err
}

func (s *Scheduler) invoke(ctx context.Context, p *pool, req *runtime.Request, start time.Time, waiting *throttle.Waiting) (*runtime.Response, error) {
	// Waiting for an instance is bounded by the function's timeout; the
	// guest's run is bounded by the runtime's own deadline of the same
	// length, which reports it as runtime.ErrTimeout. The deadline is made
	// only when the invocation has to wait: a warm request takes a free
	// instance at once (tryAcquire), and a context with a timer per
	// request was a quarter of the scheduler's own cost.
	wait := waitCtx{parent: ctx, deadline: start.Add(p.fn.Timeout())}
	defer wait.cancel()
	// An edge invocation holds a place among the node's waiters (nil for
	// the node's own callers) while it waits for a flow permit or for a
	// token of its pool: while it waits outside its function's capacity,
	// which nothing else bounds. One that gets a permit at once, starts an
	// instance, or waits for a slot of one starting, never does.
	wt := waiter{w: waiting, app: p.app, fn: p.fn.Name}
	defer wt.leave()
	for {
		// The one check of the request body (the gateway ran it too, as it
		// read the body): against the limit of the revision that would run
		// it, before it takes a permit or an instance.
		if err := runtime.CheckRequestBody(int64(len(req.Body)), p.fn.MaxRequestBytes); err != nil {
			return nil, err
		}
		// Flow control first: it decides the order in which waiting
		// invocations get an instance.
		var permit throttle.Permit
		if p.limiter != nil {
			fwait, cancel := context.WithTimeout(ctx, p.fn.Timeout()+p.limiter.Policy().Debounce)
			var err error
			permit, err = p.limiter.AcquireOr(fwait, p.flowKey.FromRequest(req.Header, req.RawQuery), p.priority, wt.enter)
			cancel()
			wt.leave() // a permit is within the function's capacity
			if errors.Is(err, throttle.ErrClosed) {
				np := s.successor(p)
				if np == nil {
					return nil, fmt.Errorf("%w: %s/%s", ErrNotFound, p.app, p.fn.Name)
				}
				p = np
				continue
			}
			if err != nil {
				return nil, err
			}
		}
		var inst *instance
		var cold time.Duration
		var err error
		if inst = p.tryAcquire(); inst == nil {
			inst, cold, err = p.acquire(wait.get(), &wt)
		}
		wt.leave()
		if errors.Is(err, errPoolClosed) {
			if p.limiter != nil {
				permit.Release()
			}
			// The revision was replaced while we waited; take the new one.
			np := s.successor(p)
			if np == nil {
				return nil, fmt.Errorf("%w: %s/%s", ErrNotFound, p.app, p.fn.Name)
			}
			p = np
			continue
		}
		if err != nil {
			if p.limiter != nil {
				permit.Release()
			}
			return nil, err
		}
		if cold > 0 && req.Log != nil {
			// Which invocations paid for a new instance, and how much, is
			// read in the invocation's own log, for every runtime.
			req.Log.Log("nimbus", "info", []byte("cold start: a new instance in "+cold.Round(10*time.Microsecond).String()))
		}
		resp, err := inst.Handle(ctx, req)
		p.release(inst, err != nil && !runtime.IsIntact(err))
		if p.limiter != nil {
			permit.Release()
		}
		return resp, err
	}
}

// waiter is an edge invocation's place among the node's waiters
// (Options.Waiting): taken when it blocks outside its function's capacity,
// given back when that wait ends. With a nil w it bounds nothing.
type waiter struct {
	w       *throttle.Waiting
	app, fn string
	in      bool
}

// enter takes the place if not held; with none left, it returns ErrBusy
// wrapping the *throttle.WaitError.
func (wt *waiter) enter() error {
	if wt == nil || wt.w == nil || wt.in {
		return nil
	}
	if err := wt.w.Enter(wt.app); err != nil {
		return fmt.Errorf("%w: %s/%s: %w", ErrBusy, wt.app, wt.fn, err)
	}
	wt.in = true
	return nil
}

func (wt *waiter) leave() {
	if wt != nil && wt.in {
		wt.w.Leave(wt.app)
		wt.in = false
	}
}

// waitCtx is the context of an invocation's wait for an instance, made at
// its first use: a warm request never waits, and so never pays for a
// context and its timer.
type waitCtx struct {
	parent   context.Context
	deadline time.Time
	ctx      context.Context
	stop     context.CancelFunc
}

func (w *waitCtx) get() context.Context {
	if w.ctx == nil {
		w.ctx, w.stop = context.WithDeadline(w.parent, w.deadline)
	}
	return w.ctx
}

// cancel releases the context, if one was made; the invocation's end.
func (w *waitCtx) cancel() {
	if w.stop != nil {
		w.stop()
	}
}

// successor is the pool now serving p's function, or nil if none does.
// A held pool is never closed, so an invocation by revision never needs
// one.
func (s *Scheduler) successor(p *pool) *pool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	np := s.apps[p.app][p.fn.Name]
	if np == p {
		return nil
	}
	return np
}

// Reasons of failed invocations (Reason), the reason label of
// nimbus_request_errors_total. The edge answers each with its own HTTP
// status and uses the reason as the error code.
const (
	ReasonNotFound         = "not_found"          // ErrNotFound
	ReasonRequestTooLarge  = "request_too_large"  // runtime.ErrRequestTooLarge
	ReasonTimeout          = "timeout"            // runtime.ErrTimeout
	ReasonBusy             = "busy"               // ErrBusy
	ReasonMemoryLimit      = "memory_limit"       // runtime.ErrMemoryLimit
	ReasonResponseTooLarge = "response_too_large" // runtime.ErrResponseTooLarge
	ReasonGuestFailed      = "guest_failed"       // runtime.ErrGuestFailed
	ReasonCanceled         = "canceled"           // context.Canceled: the caller went away
	ReasonInternal         = "internal"           // anything else
)

// Reason names why an invocation failed, for metrics and logs: one of the
// Reason constants, or a flow control reason (throttle.Reason); "" for
// nil. It is the one classification of invocation errors; the edge maps
// each reason to an HTTP status.
func Reason(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrNotFound):
		return ReasonNotFound
	case errors.Is(err, runtime.ErrRequestTooLarge):
		return ReasonRequestTooLarge
	case errors.Is(err, runtime.ErrTimeout):
		return ReasonTimeout
	case errors.Is(err, ErrBusy):
		return ReasonBusy
	case errors.Is(err, runtime.ErrMemoryLimit):
		return ReasonMemoryLimit
	case errors.Is(err, runtime.ErrResponseTooLarge):
		return ReasonResponseTooLarge
	case errors.Is(err, runtime.ErrGuestFailed):
		return ReasonGuestFailed
	case errors.Is(err, context.Canceled):
		return ReasonCanceled
	}
	if reason := throttle.Reason(err); reason != "" {
		return reason
	}
	return ReasonInternal
}

// ReapIdle closes instances idle since before now minus the idle timeout,
// and reports how many it closed.
func (s *Scheduler) ReapIdle(now time.Time) int {
	cutoff := now.Add(-s.opts.IdleTimeout)
	s.mu.RLock()
	pools := make([]*pool, 0, len(s.pools))
	for _, p := range s.pools {
		pools = append(pools, p)
	}
	s.mu.RUnlock()
	n := 0
	for _, p := range pools {
		n += p.reap(cutoff)
	}
	return n
}

// Run reaps idle instances until ctx is done.
func (s *Scheduler) Run(ctx context.Context) {
	every := s.opts.IdleTimeout / 4
	if every > 30*time.Second {
		every = 30 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n := s.ReapIdle(s.opts.Now()); n > 0 {
				s.opts.Logger.Debug("idle instances closed", "count", n)
			}
		}
	}
}

// Close retires every pool and waits for in-flight requests to finish,
// bounded by ctx. The runtimes are the caller's to close, after.
func (s *Scheduler) Close(ctx context.Context) error {
	s.mu.Lock()
	pools := s.pools
	s.pools = map[string]*pool{}
	s.apps = map[string]map[string]*pool{}
	s.mu.Unlock()
	for _, p := range pools {
		p.close(&s.wg)
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("close scheduler: in-flight requests: %w", ctx.Err())
	}
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
