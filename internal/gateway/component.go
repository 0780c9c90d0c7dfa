package gateway

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"

	"github.com/nimbus-dev/nimbus/internal/model"
)

// The gateway is the component (see internal/server) that serves a
// revision's HTTP routes. It keeps, per app, the revision whose routes it
// serves, and rebuilds its whole table from them on every change.

// builtinApp names the gateway itself as the owner of its built-in routes
// in conflict errors; the space keeps it from being an app's name.
const builtinApp = "nimbus built-in"

// builtins are the routes the gateway serves itself; no function route may
// overlap them.
func builtins() []model.OwnedRoute {
	method, path, _ := strings.Cut(EventsPattern, " ")
	return []model.OwnedRoute{{App: builtinApp, Function: "events-ingress", Route: model.Route{Method: method, Path: path}}}
}

// Validate checks rev's routes against the whole table it would join: the
// routes of the other apps' revisions and the built-in ones (CloudEvents
// ingress at EventsPattern). An overlap is a *model.ConflictError (it
// matches model.ErrConflict), so the deploy is refused before it is
// recorded.
func (g *Gateway) Validate(_ context.Context, rev *model.Revision) error {
	g.mu.Lock()
	others := builtins()
	for app, r := range g.revs {
		if app == rev.App {
			continue
		}
		for _, fn := range r.Functions {
			for _, rt := range fn.Routes {
				others = append(others, model.OwnedRoute{App: app, Function: fn.Name, Route: rt})
			}
		}
	}
	g.mu.Unlock()
	var own []model.OwnedRoute
	for _, fn := range rev.Functions {
		for _, rt := range fn.Routes {
			own = append(own, model.OwnedRoute{App: rev.App, Function: fn.Name, Route: rt})
		}
	}
	err := model.FindConflict(own, others)
	var ce *model.ConflictError
	if errors.As(err, &ce) && ce.OtherApp == builtinApp {
		return fmt.Errorf("%w; paths under /_nimbus/ are the gateway's own: choose another path", err)
	}
	return err
}

// Provision serves rev's routes in place of the app's previous ones. On a
// conflict it keeps the table it had and returns an error matching
// model.ErrConflict.
func (g *Gateway) Provision(_ context.Context, rev *model.Revision) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	next := maps.Clone(g.revs)
	next[rev.App] = rev
	return g.swap(next)
}

// Retire stops serving the app's routes.
func (g *Gateway) Retire(_ context.Context, app string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	next := maps.Clone(g.revs)
	delete(next, app)
	return g.swap(next)
}

// Close implements the component contract; the gateway holds nothing to
// release (its listener is the server's).
func (g *Gateway) Close(context.Context) error { return nil }

// swap builds the table of revs and serves it; g.mu is held.
func (g *Gateway) swap(revs map[string]*model.Revision) error {
	mux, err := g.buildTable(revs)
	if err != nil {
		return err
	}
	g.revs = revs
	g.table.Store(mux)
	return nil
}
