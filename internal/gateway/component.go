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

// CheckBuiltins checks rev's routes against the routes the gateway serves
// itself (the CloudEvents ingress at EventsPattern), as ServeMux would: a
// route that is neither more nor less specific than a built-in one is a
// *model.ConflictError. It needs no gateway, so `nimbus validate` runs it
// too (through server.Check).
func CheckBuiltins(rev *model.Revision) error {
	err := model.FindConflict(ownRoutes(rev), builtins())
	var ce *model.ConflictError
	if errors.As(err, &ce) && ce.OtherApp == builtinApp {
		return fmt.Errorf("%w; paths under /_nimbus/ are the gateway's own: choose another path", err)
	}
	return err
}

// ownRoutes lists rev's routes with their owner.
func ownRoutes(rev *model.Revision) []model.OwnedRoute {
	var own []model.OwnedRoute
	for _, fn := range rev.Functions {
		for _, rt := range fn.Routes {
			own = append(own, model.OwnedRoute{App: rev.App, Function: fn.Name, Route: rt})
		}
	}
	return own
}

// othersRoutes lists the routes the gateway serves for apps other than
// app; g.mu is held.
func (g *Gateway) othersRoutes(app string) []model.OwnedRoute {
	var others []model.OwnedRoute
	for other, r := range g.revs {
		if other != app {
			others = append(others, ownRoutes(r)...)
		}
	}
	return others
}

// Validate checks rev's routes against the whole table it would join: the
// built-in routes (CheckBuiltins), and the routes of the other apps'
// revisions, which must not overlap rev's at all (model.FindOverlap): a
// path belongs to the app that serves it, whichever pattern is more
// specific. Either is a *model.ConflictError (it matches
// model.ErrConflict) naming the route it meets, so the deploy (or
// rollback) is refused before it is recorded. The app's own previous
// revision does not count: a redeploy may keep or change its routes.
func (g *Gateway) Validate(_ context.Context, rev *model.Revision) error {
	if err := CheckBuiltins(rev); err != nil {
		return err
	}
	g.mu.Lock()
	others := g.othersRoutes(rev.App)
	err := g.checkAuth(rev)
	g.mu.Unlock()
	if err != nil {
		return err
	}
	return model.FindOverlap(ownRoutes(rev), others)
}

// Provision serves rev's routes in place of the app's previous ones. On a
// conflict ServeMux cannot resolve it keeps the table it had and returns
// an error matching model.ErrConflict. Routes that overlap another app's
// (only revisions recorded before routes had owners: Validate refuses
// them) are served with ServeMux's precedence, as they were, and logged,
// so such a node still starts and serves both apps.
func (g *Gateway) Provision(_ context.Context, rev *model.Revision) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	next := maps.Clone(g.revs)
	next[rev.App] = rev
	if err := g.swap(next); err != nil {
		return err
	}
	if err := model.FindOverlap(ownRoutes(rev), g.othersRoutes(rev.App)); err != nil {
		g.logger().Warn("routes of two apps overlap; the more specific pattern takes the requests both match: deploy one of the apps without its route",
			"app", rev.App, "revision", rev.ID, "error", err)
	}
	return nil
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
	mux, verifiers, err := g.buildTable(revs)
	if err != nil {
		return err
	}
	g.revs = revs
	g.verifiers = verifiers
	g.table.Store(mux)
	return nil
}
