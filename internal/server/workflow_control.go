package server

import (
	"context"
	"fmt"

	"github.com/nimbus-dev/nimbus/internal/registry"
	"github.com/nimbus-dev/nimbus/internal/workflow"
)

// Signal implements api.Workflows: it sends a signal to a run.
func (s *Server) Signal(ctx context.Context, app, id, name string, payload []byte) (*workflow.Run, error) {
	if s.active.get(app) == nil {
		return nil, fmt.Errorf("%w: %s", registry.ErrAppNotFound, app)
	}
	return s.wf.Signal(ctx, app, id, name, payload)
}

// Cancel implements api.Workflows: it requests a run's cancellation.
func (s *Server) Cancel(ctx context.Context, app, id, reason string) (*workflow.Run, error) {
	if s.active.get(app) == nil {
		return nil, fmt.Errorf("%w: %s", registry.ErrAppNotFound, app)
	}
	return s.wf.Cancel(ctx, app, id, reason)
}

// Pause implements api.Workflows: it pauses a run.
func (s *Server) Pause(ctx context.Context, app, id, reason string) (*workflow.Run, error) {
	if s.active.get(app) == nil {
		return nil, fmt.Errorf("%w: %s", registry.ErrAppNotFound, app)
	}
	return s.wf.Pause(ctx, app, id, reason)
}

// Resume implements api.Workflows: it resumes a paused run.
func (s *Server) Resume(ctx context.Context, app, id string) (*workflow.Run, error) {
	if s.active.get(app) == nil {
		return nil, fmt.Errorf("%w: %s", registry.ErrAppNotFound, app)
	}
	return s.wf.Resume(ctx, app, id)
}

// Retry implements api.Workflows: it makes a failed run go on from its
// failed step.
func (s *Server) Retry(ctx context.Context, app, id string) (*workflow.Run, error) {
	if s.active.get(app) == nil {
		return nil, fmt.Errorf("%w: %s", registry.ErrAppNotFound, app)
	}
	return s.wf.Retry(ctx, app, id)
}

// Terminate implements api.Workflows: it ends a run now, without
// compensations.
func (s *Server) Terminate(ctx context.Context, app, id, reason string) (*workflow.Run, error) {
	if s.active.get(app) == nil {
		return nil, fmt.Errorf("%w: %s", registry.ErrAppNotFound, app)
	}
	return s.wf.Terminate(ctx, app, id, reason)
}
