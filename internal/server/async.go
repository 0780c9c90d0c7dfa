package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nimbus-dev/nimbus/internal/events"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/registry"
	"github.com/nimbus-dev/nimbus/internal/runtime"
)

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
	if err := s.admit.allowRequest(app); err != nil {
		return "", false, err
	}
	i := slices.IndexFunc(rev.Functions, func(f model.Function) bool { return f.Name == function })
	if i < 0 {
		return "", false, &notFoundError{fmt.Sprintf("app %s has no function %q", app, function), registry.ErrFunctionNotFound}
	}
	// The async trigger consumes before the invocation is appended.
	if err := s.deliver.EnsureAsync(ctx, app); err != nil {
		if errors.Is(err, events.ErrAppNotActive) {
			return "", false, appNotFound(app)
		}
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
			return "", false, requestTooLarge{err}
		}
		return "", false, fmt.Errorf("queue invocation of %s/%s: %w", app, function, err)
	}
	return events.AsyncID(acks[0].Seq, acks[0].Index), acks[0].Duplicate, nil
}

// Invocation returns the state of an async invocation.
func (s *Server) Invocation(ctx context.Context, id string) (*events.Invocation, error) {
	inv, err := s.deliver.Invocation(ctx, id)
	if errors.Is(err, events.ErrNoRecord) {
		return nil, &notFoundError{fmt.Sprintf("no async invocation %q (ids look like inv-123; records are kept 24h)", id), events.ErrNoRecord}
	}
	return inv, err
}

// requestTooLarge is an async invocation too large for the event log: its
// request is too large to queue (runtime.ErrRequestTooLarge, which the edge
// answers first), as the log says (events.ErrTooLarge).
type requestTooLarge struct{ err error }

func (e requestTooLarge) Error() string   { return e.err.Error() }
func (e requestTooLarge) Unwrap() []error { return []error{runtime.ErrRequestTooLarge, e.err} }
