package scheduler

import (
	"context"

	"github.com/nimbus-dev/nimbus/internal/model"
)

// The scheduler is the component (see internal/server) that holds a
// revision's functions: loaded modules and their instance pools.

// Validate loads every function of rev (Prepare): a module that cannot run,
// or a runtime this node does not run, refuses the deploy before anything
// is recorded. Loaded modules are kept for Provision.
func (s *Scheduler) Validate(ctx context.Context, rev *model.Revision) error {
	return s.Prepare(ctx, rev.App, rev.Functions)
}

// Provision routes the app's invocations to rev (Activate).
func (s *Scheduler) Provision(ctx context.Context, rev *model.Revision) error {
	return s.Activate(ctx, rev)
}

// Retire stops routing to the app and retires its pools (Deactivate).
func (s *Scheduler) Retire(_ context.Context, app string) error {
	s.Deactivate(app)
	return nil
}
