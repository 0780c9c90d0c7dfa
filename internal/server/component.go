package server

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/nimbus-dev/nimbus/internal/events"
	"github.com/nimbus-dev/nimbus/internal/gateway"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/scheduler"
	"github.com/nimbus-dev/nimbus/internal/state"
)

// Component is everything a revision activates: buckets, function pools,
// routes, trigger consumers, trigger sources (and, to come, the workflow
// engine and the autoscaler). The server is wiring over an ordered list of
// them (see Server.components); each derives what it needs from the
// revision itself, so adding a trigger kind, an engine or a runtime touches
// its own package, the model and one registration line here.
//
// The life of a revision, for every component in order:
//
//	deploy:   Validate (all) -> registry records -> Provision (all)
//	rollback: Validate (all) -> registry records -> Provision (all)
//	restart:  Provision (all), per stored app
//	delete:   registry deletes -> Retire (all, in reverse)
//	shutdown: Close (all, in reverse)
//
// Order matters: each component may depend on the ones before it, never
// on the ones after. Buckets exist before a function can use them; a
// function's pool before the routes and triggers that invoke it; a
// trigger's consumer before the source that appends to its topic (a new
// consumer starts after what was already appended). So Provision stops at
// the first component that fails: the later ones would serve a revision
// the earlier one does not.
type Component interface {
	// Validate checks a planned revision before anything is recorded; an
	// error refuses the deploy and changes nothing. Errors are the
	// component's typed errors (model.ErrInvalid, model.ErrConflict,
	// runtime.ErrInvalidModule, ...), which the API maps to HTTP.
	Validate(ctx context.Context, rev *model.Revision) error
	// Provision makes rev the app's active revision in this component. It
	// is idempotent, and is also how a revision is restored at start and
	// rolled back to. A component that can serve part of rev serves that
	// part and reports the rest.
	Provision(ctx context.Context, rev *model.Revision) error
	// Retire removes the app from this component (the app was deleted).
	Retire(ctx context.Context, app string) error
	// Close stops the component (node shutdown).
	Close(ctx context.Context) error
}

// Compile-time guards: the parts of a node that are components.
var (
	_ Component = (*state.Buckets)(nil)
	_ Component = (*scheduler.Scheduler)(nil)
	_ Component = (*activeSet)(nil)
	_ Component = (*admission)(nil)
	_ Component = (*gateway.Gateway)(nil)
	_ Component = (*events.Dispatcher)(nil)
	_ Component = (*events.CronSource)(nil)
	_ Component = (*events.BucketSource)(nil)
)

// namedComponent is a component and the name logs and errors give it.
type namedComponent struct {
	name string
	Component
}

// validate asks every component whether it can run rev; the first refusal
// is returned as it is, and nothing has changed.
func (s *Server) validate(ctx context.Context, rev *model.Revision) error {
	for _, c := range s.components {
		if err := c.Validate(ctx, rev); err != nil {
			return err
		}
	}
	return nil
}

// provision makes rev active in every component, in order, and stops at
// the first that fails (see Component on why).
func (s *Server) provision(ctx context.Context, rev *model.Revision) error {
	for _, c := range s.components {
		if err := c.Provision(ctx, rev); err != nil {
			return fmt.Errorf("%s: %w", c.name, err)
		}
	}
	return nil
}

// retire removes app from every component, in reverse order. It goes on
// past a failure, so as little as possible of a deleted app is left.
func (s *Server) retire(ctx context.Context, app string) error {
	var errs []error
	for i := len(s.components) - 1; i >= 0; i-- {
		c := s.components[i]
		if err := c.Retire(ctx, app); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.name, err))
		}
	}
	return errors.Join(errs...)
}

// closeComponents closes every component, in reverse order.
func (s *Server) closeComponents(ctx context.Context) error {
	var errs []error
	for i := len(s.components) - 1; i >= 0; i-- {
		c := s.components[i]
		if err := c.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.name, err))
		}
	}
	return errors.Join(errs...)
}

// activeSet is the server's own component: the revision each app serves,
// which Publish, async invocations and dead-letter queries read. It comes
// right after the scheduler, so an app is active once its functions are.
type activeSet struct {
	mu   sync.RWMutex
	revs map[string]*model.Revision // app -> revision taking traffic
}

func newActiveSet() *activeSet { return &activeSet{revs: map[string]*model.Revision{}} }

func (a *activeSet) Validate(context.Context, *model.Revision) error { return nil }

func (a *activeSet) Provision(_ context.Context, rev *model.Revision) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.revs[rev.App] = rev
	return nil
}

func (a *activeSet) Retire(_ context.Context, app string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.revs, app)
	return nil
}

func (a *activeSet) Close(context.Context) error { return nil }

// apps lists the apps with an active revision.
func (a *activeSet) apps() []string {
	a.mu.RLock()
	defer a.mu.RUnlock()
	out := make([]string, 0, len(a.revs))
	for app := range a.revs {
		out = append(out, app)
	}
	return out
}

// get is app's active revision, or nil.
func (a *activeSet) get(app string) *model.Revision {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.revs[app]
}
