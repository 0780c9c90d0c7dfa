package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/nimbus-dev/nimbus/internal/apierror"
	"github.com/nimbus-dev/nimbus/internal/events"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime"
)

// triggersOf is what the dispatcher delivers for rev's app: its topic and
// cron triggers, and its async trigger once the app took an async
// invocation. s.deployMu is held.
func (s *Server) triggersOf(rev *model.Revision) []events.TriggerSpec {
	out := topicTriggers(rev)
	if rev != nil && s.asyncApps[rev.App] {
		out = append(out, s.asyncTrigger(rev.App))
	}
	return out
}

// asyncTrigger is app's async trigger with the node's retry defaults.
func (s *Server) asyncTrigger(app string) events.TriggerSpec {
	t := events.AsyncTrigger(app)
	t.MaxAttempts, t.Backoff = s.cfg.AsyncMaxAttempts, s.cfg.AsyncBackoff
	return t
}

// ensureAsync makes sure app's async trigger consumes before an async
// invocation is appended (a new consumer starts after what was already
// appended). The first async invocation of an app creates it; it then
// lives as long as the app.
func (s *Server) ensureAsync(ctx context.Context, app string) error {
	s.activeMu.RLock()
	ok := s.asyncApps[app]
	s.activeMu.RUnlock()
	if ok {
		return nil
	}
	s.deployMu.Lock()
	defer s.deployMu.Unlock()
	rev := s.activeRevision(app)
	if rev == nil {
		return appNotFound(app)
	}
	if s.asyncApps[app] {
		return nil
	}
	// Listed as async only once its consumer exists: until then the accept
	// path above keeps coming here.
	if err := s.deliver.Sync(ctx, app, append(s.triggersOf(rev), s.asyncTrigger(app))); err != nil {
		return fmt.Errorf("start async invocations of %s: %w", app, err)
	}
	s.activeMu.Lock()
	s.asyncApps[app] = true
	s.activeMu.Unlock()
	return nil
}

// EnqueueInvocation accepts an async invocation of app/function with req:
// it returns once the invocation is durably queued, with its id. With an
// idempotency key, a second call for the same function and key returns
// the first one's id and duplicate=true, within the event log's duplicate
// window and, once the first finished, as long as its record is kept.
func (s *Server) EnqueueInvocation(ctx context.Context, app, function string, req *runtime.Request, idempotencyKey string) (id string, duplicate bool, err error) {
	rev := s.activeRevision(app)
	if rev == nil {
		return "", false, appNotFound(app)
	}
	i := slices.IndexFunc(rev.Functions, func(f model.Function) bool { return f.Name == function })
	if i < 0 {
		return "", false, apierror.New(http.StatusNotFound, "function_not_found",
			fmt.Sprintf("app %s has no function %q", app, function))
	}
	if err := s.ensureAsync(ctx, app); err != nil {
		return "", false, err
	}
	if idempotencyKey != "" {
		if id, ok, err := s.deliver.InvocationByKey(ctx, app, function, idempotencyKey); err != nil {
			return "", false, err
		} else if ok {
			return id, true, nil
		}
	}
	var policy *events.RetryPolicy
	if p := rev.Functions[i].Async; p != nil {
		policy = &events.RetryPolicy{MaxAttempts: p.MaxAttempts,
			Backoff: time.Duration(p.BackoffMS) * time.Millisecond, MaxBackoff: time.Duration(p.MaxBackoffMS) * time.Millisecond}
	}
	ent, err := events.AsyncEntry(app, function, req, idempotencyKey, policy)
	if err != nil {
		return "", false, err
	}
	acks, err := s.events.Append(ctx, ent)
	if err != nil {
		if errors.Is(err, events.ErrTooLarge) {
			return "", false, apierror.Wrap(http.StatusRequestEntityTooLarge, "request_too_large", err)
		}
		return "", false, fmt.Errorf("queue invocation of %s/%s: %w", app, function, err)
	}
	return events.AsyncID(acks[0].Seq), acks[0].Duplicate, nil
}

// Invocation returns the state of an async invocation.
func (s *Server) Invocation(ctx context.Context, id string) (*events.Invocation, error) {
	inv, err := s.deliver.Invocation(ctx, id)
	if errors.Is(err, events.ErrNoRecord) {
		return nil, apierror.New(http.StatusNotFound, "invocation_not_found",
			fmt.Sprintf("no async invocation %q (ids look like inv-123; records are kept 24h)", id))
	}
	return inv, err
}
