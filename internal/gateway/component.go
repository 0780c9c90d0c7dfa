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
// serves, the table built from them, and an index of their routes for
// the overlap checks across apps.

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
	defer g.mu.Unlock()
	if err := g.checkAuth(rev); err != nil {
		return err
	}
	return g.index.FindOverlap(rev.App, ownRoutes(rev))
}

// Provision serves rev's routes in place of the app's previous ones. On a
// conflict ServeMux cannot resolve it keeps the table it had and returns
// an error matching model.ErrConflict. Routes that overlap another app's
// (only revisions recorded before routes had owners: Validate refuses
// them) are served with ServeMux's precedence, as they were, and logged,
// so such a node still starts and serves both apps.
//
// A deploy costs the same with 10 apps or 10,000: when rev keeps every
// pattern its app served (a new app, a redeploy that keeps or adds
// routes), overlaps nothing, and its patterns make a table on their own,
// its routes are added to the served table in place (a kept pattern's
// slot gets the new route; ServeMux registrations are safe beside the
// requests it serves). Only a deploy that drops a pattern, a retire, or
// an overlap builds the whole table again: ServeMux cannot unregister.
func (g *Gateway) Provision(_ context.Context, rev *model.Revision) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	own := ownRoutes(rev)
	overlap := g.index.FindOverlap(rev.App, own)
	touched := false
	if overlap == nil && g.keepsPatterns(rev) {
		var err error
		if touched, err = g.provisionInPlace(rev); err == nil {
			g.revs[rev.App] = rev
			g.index.Set(rev.App, own)
			return nil
		}
	}
	next := maps.Clone(g.revs)
	next[rev.App] = rev
	if err := g.swap(next); err != nil {
		if touched { // serve what was served before, whole
			if err := g.swap(maps.Clone(g.revs)); err != nil {
				g.logger().Error("routing table: cannot build the previous table again", "error", err)
			}
		}
		return err
	}
	if overlap != nil {
		g.logger().Warn("routes of two apps overlap; the more specific pattern takes the requests both match: deploy one of the apps without its route",
			"app", rev.App, "revision", rev.ID, "error", overlap)
	}
	return nil
}

// keepsPatterns reports whether rev has every pattern its app serves now;
// g.mu is held.
func (g *Gateway) keepsPatterns(rev *model.Revision) bool {
	old := g.patterns[rev.App]
	if len(old) == 0 {
		return true
	}
	next := map[string]bool{}
	for _, fn := range rev.Functions {
		for _, rt := range fn.Routes {
			if rt.Method != "" {
				next[rt.Method+" "+rt.Path] = true
			} else {
				next[rt.Path] = true
			}
		}
	}
	for _, p := range old {
		if !next[p] {
			return false
		}
	}
	return true
}

// provisionInPlace adds rev's routes to the served table. Its patterns
// are first registered in a table of their own with the built-in routes,
// so a conflict among them (or with the built-ins) is found before the
// served table changes; patterns of other apps cannot conflict with them,
// since they do not even overlap (the caller checked). An error leaves
// the served table as it was (touched false), and the caller builds it
// whole. Verifiers rev needs join g.verifiers. g.mu is held.
func (g *Gateway) provisionInPlace(rev *model.Revision) (touched bool, err error) {
	if err := g.checkAuthKeys(map[string]*model.Revision{rev.App: rev}); err != nil {
		return false, err
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: routing table: %v", model.ErrConflict, r)
		}
	}()
	trial := &table{mux: g.newMux(), slots: map[string]*slot{}, patterns: map[string][]string{}, verifiers: g.verifiers}
	if err := g.addRoutes(trial, rev); err != nil {
		return false, err
	}
	touched = true // (cannot fail from here on; if it does, the caller builds the table again)
	served := &table{mux: g.table.Load(), slots: g.slots, patterns: g.patterns, verifiers: g.verifiers}
	return true, g.addRoutes(served, rev)
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
	t, err := g.buildTable(revs)
	if err != nil {
		return err
	}
	for app := range g.revs {
		if revs[app] == nil {
			g.index.Remove(app)
		}
	}
	for app, rev := range revs {
		if g.revs[app] != rev {
			g.index.Set(app, ownRoutes(rev))
		}
	}
	g.revs = revs
	g.slots, g.patterns, g.verifiers = t.slots, t.patterns, t.verifiers
	g.table.Store(t.mux)
	return nil
}
