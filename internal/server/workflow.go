package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
	"github.com/nimbus-dev/nimbus/internal/guestlog"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/registry"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/scheduler"
	"github.com/nimbus-dev/nimbus/internal/state"
	"github.com/nimbus-dev/nimbus/internal/workflow"
	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// invokerFunc adapts a function to workflow.Invoker.
type invokerFunc func(ctx context.Context, app, fn string, req *runtime.Request) (*runtime.Response, error)

func (f invokerFunc) Invoke(ctx context.Context, app, fn string, req *runtime.Request) (*runtime.Response, error) {
	return f(ctx, app, fn, req)
}

// wfEffects applies the KV writes and publishes of journaled workflow
// steps, once per id (workflow.EffectApplier). They were checked when the
// step made them (the tenant's kv_bytes quota was charged then, the
// topic's back-pressure passed): here they are committed with their step
// and are not refused for those again.
type wfEffects struct {
	b *state.Buckets
	s *Server
}

func (w wfEffects) ApplyEffect(ctx context.Context, app string, e workflow.Effect, id string) error {
	switch e.Op {
	case workflow.EffectKVPut:
		_, err := w.b.Put(ctx, app, e.Bucket, e.Key, e.Value, state.PutOptions{TTL: time.Duration(e.TTLMS) * time.Millisecond, MsgID: id})
		return err
	case workflow.EffectKVDelete:
		return w.b.DeleteOnce(ctx, app, e.Bucket, e.Key, id)
	case workflow.EffectPublish:
		var ev cloudevents.Event
		if err := ev.UnmarshalJSON(e.Event); err != nil {
			return fmt.Errorf("workflow effect: publish to %s: %w", e.Topic, err)
		}
		_, _, err := w.s.publish(ctx, app, e.Topic, []cloudevents.Event{ev}, "", false)
		return err
	}
	return fmt.Errorf("workflow effect %q: unknown operation", e.Op)
}

// wfLogs gives workflow activations log sinks whose lines carry the run
// and the step running (workflow.LogSinks); s.logs is made after the
// engine, before anything activates a run.
type wfLogs struct{ s *Server }

func (w wfLogs) Sink(app, function, revision, invocation string, tag func() workflow.LogTag) runtime.LogSink {
	return w.s.logs.TaggedSink(app, function, revision, invocation, func(e *guestlog.Entry) {
		t := tag()
		e.Run = t.Run
		if t.InStep {
			e.Step = &guestlog.Step{Name: t.Step, Position: t.Position, Attempt: t.Attempt}
		}
	})
}

// Headers of a route that starts a workflow run.
const (
	// HeaderRunID names the run (an idempotency key) on a start request,
	// and carries the run id on the answer.
	HeaderRunID = "Nimbus-Run-Id"
	// HeaderWait bounds how long a start request waits for the result
	// (a Go duration, at most MaxStartWait); default DefaultStartWait.
	HeaderWait = "Nimbus-Wait"
)

// Start waits of a workflow route.
const (
	DefaultStartWait = 10 * time.Second
	MaxStartWait     = time.Minute
)

// workflowRoutes is what the gateway invokes: a function's routes go to
// the scheduler, a workflow's start a run (the body is the input) and
// answer its result, or 202 with the run id when it has not finished
// within the wait.
type workflowRoutes struct {
	sched *scheduler.Scheduler
	s     *Server
}

func (w workflowRoutes) Invoke(ctx context.Context, app, function string, req *runtime.Request) (*runtime.Response, error) {
	fn, ok := w.sched.Function(app, function)
	if !ok || !fn.IsWorkflow() {
		// A client must not pose as the engine activating a run.
		req.Header.Del(wire.HeaderRun)
		return w.sched.InvokeEdge(ctx, app, function, req)
	}
	return w.s.startRun(ctx, app, function, req.Header.Get(HeaderRunID), req.Body, req.Header.Get(HeaderWait))
}

// startRun starts (or finds) a run and answers as a workflow route does.
func (s *Server) startRun(ctx context.Context, app, wf, id string, input []byte, waitArg string) (*runtime.Response, error) {
	wait := DefaultStartWait
	if waitArg != "" {
		d, err := time.ParseDuration(waitArg)
		if err != nil || d < 0 {
			return nil, errors.Join(workflow.ErrInvalid, errors.New(HeaderWait+" must be a duration such as 5s"))
		}
		wait = min(d, MaxStartWait)
	}
	run, _, err := s.startAndWait(ctx, app, wf, id, input, wait)
	if err != nil {
		return nil, err
	}
	h := http.Header{HeaderRunID: {run.ID}, "Content-Type": {"application/json"}}
	switch run.State {
	case workflow.StateCompleted:
		return &runtime.Response{Status: http.StatusOK, Header: h, Body: run.Result}, nil
	case workflow.StateFailed, workflow.StateCancelled, workflow.StateTerminated:
		b, _ := json.Marshal(map[string]string{"run_id": run.ID, "state": run.State, "error": run.Error})
		return &runtime.Response{Status: http.StatusUnprocessableEntity, Header: h, Body: b}, nil
	}
	b, _ := json.Marshal(map[string]string{"run_id": run.ID, "state": run.State})
	h.Set("Location", "/api/v1/apps/"+app+"/runs/"+run.ID)
	h.Set("Retry-After", strconv.Itoa(1))
	return &runtime.Response{Status: http.StatusAccepted, Header: h, Body: b}, nil
}

// Workflows is the node's workflow engine.
func (s *Server) Workflows() *workflow.Engine { return s.wf }

// StartRun implements api.Workflows.
func (s *Server) StartRun(ctx context.Context, app, wf, id string, input []byte, wait time.Duration) (*workflow.Run, bool, error) {
	return s.startAndWait(ctx, app, wf, id, input, wait)
}

// startAndWait starts (or finds) a run and waits up to wait for its end.
// A start that waits is lazy (workflow.Engine.StartLazy): it is committed
// with the run's first commit, since the answer is the run's end; when
// the wait elapses first, the start is made durable before the run's id
// is answered (RATIONALE.md "Durable workflows: a change is durable
// before what depends on it").
//
// A client waiting for the result holds what one waiting for an instance
// does, so it takes a place among the node's waiters (--max-waiting);
// with none left, the run is started without waiting and the caller gets
// its id at once (a route's 202), rather than a refusal: the start costs
// the node nothing more than an event does.
func (s *Server) startAndWait(ctx context.Context, app, wf, id string, input []byte, wait time.Duration) (*workflow.Run, bool, error) {
	// Starts faster than the node runs them pile up active runs, each a
	// goroutine and its state: past the app's bound, a client's start is
	// refused, to be retried (a 60 s flood of route starts grew the node to
	// 1.7 GB before this).
	if err := s.wf.StartAllowed(app); err != nil {
		return nil, false, fmt.Errorf("%w: %w", scheduler.ErrBusy, err)
	}
	if wait > 0 && s.waiting != nil {
		if s.waiting.Enter(app) != nil {
			wait = 0
		} else {
			defer s.waiting.Leave(app)
		}
	}
	if wait <= 0 {
		return s.wf.Start(ctx, app, wf, id, input)
	}
	run, created, err := s.wf.StartLazy(ctx, app, wf, id, input)
	if err != nil || run.Done() {
		return run, created, err
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	id = run.ID
	run, err = s.wf.Wait(wctx, app, id)
	cancel()
	if errors.Is(err, workflow.ErrRunNotFound) && created {
		// Started here a moment ago: its first commit failed (the store
		// refused it), and nothing of it is stored.
		return nil, false, fmt.Errorf("%w: run %s of app %s: the store did not take its first commit; nothing of it is stored: start it again (the node's log has the store's error)", workflow.ErrStartNotStored, id, app)
	}
	if err != nil {
		return nil, false, err
	}
	if !run.Done() {
		if err := s.wf.Durable(ctx, app, run.ID); err != nil {
			return nil, false, err
		}
	}
	return run, created, nil
}

// Run implements api.Workflows.
func (s *Server) Run(ctx context.Context, app, id string) (*workflow.RunInfo, error) {
	if s.active.get(app) == nil {
		return nil, fmt.Errorf("%w: %s", registry.ErrAppNotFound, app)
	}
	return s.wf.Get(ctx, app, id)
}

// Runs implements api.Workflows.
func (s *Server) Runs(ctx context.Context, app string, o workflow.ListOptions) ([]workflow.Run, error) {
	if s.active.get(app) == nil {
		return nil, fmt.Errorf("%w: %s", registry.ErrAppNotFound, app)
	}
	return s.wf.List(ctx, app, o)
}

// workflowRevisions keeps workflow runs on the revision they started on
// (workflow.Revisions): functions of past revisions come from the
// registry, which keeps every revision; their pools from the scheduler,
// held while runs of them are in flight.
type workflowRevisions struct{ s *Server }

var _ workflow.Revisions = workflowRevisions{}

func (w workflowRevisions) Function(ctx context.Context, app, wf, revision string) (model.Function, error) {
	if rev := w.s.active.get(app); rev != nil {
		if fn, ok := functionAt(rev, wf, revision); ok {
			return fn, nil
		}
	}
	revs, err := w.s.reg.Revisions(ctx, app)
	if err != nil {
		return model.Function{}, err
	}
	for _, rev := range revs {
		if fn, ok := functionAt(rev, wf, revision); ok {
			return fn, nil
		}
	}
	return model.Function{}, fmt.Errorf("%w: no stored revision of app %s has workflow %s at function revision %s", registry.ErrRevisionNotFound, app, wf, revision)
}

func functionAt(rev *model.Revision, name, revision string) (model.Function, bool) {
	for _, fn := range rev.Functions {
		if fn.Name == name && fn.Revision == revision {
			return fn, true
		}
	}
	return model.Function{}, false
}

func (w workflowRevisions) Hold(ctx context.Context, app string, fn model.Function, n int) error {
	return w.s.sched.Hold(ctx, app, fn, n)
}

func (w workflowRevisions) Release(app, revision string) { w.s.sched.Release(app, revision) }

func (w workflowRevisions) InvokeRevision(ctx context.Context, app, fn, revision string, req *runtime.Request) (*runtime.Response, error) {
	resp, err := w.s.sched.InvokeRevision(ctx, app, fn, revision, req)
	if errors.Is(err, scheduler.ErrNotFound) {
		err = fmt.Errorf("%w: %w", workflow.ErrFunctionNotFound, err)
	}
	return resp, err
}
