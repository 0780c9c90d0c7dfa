package model

import "slices"

// RouteIndex holds the routes every app serves, parsed once and indexed by
// their first path segment, so that checking one app's routes against all
// the others (FindOverlap) costs the routes that could overlap them, not
// every route of every app: two patterns whose first segments are
// different literals never match the same request (commonPath refuses them
// at the first segment, and a redirect root keeps the first segment). A
// route whose first segment is a wildcard ("/{x}/a", "/", "/{rest...}")
// can match any first segment, so it is checked against every route, and
// every route is checked against it. Apps usually start their paths with
// a literal ("/users/..."), so a deploy costs about the same with 10 apps
// or 10,000.
//
// A RouteIndex is not safe for concurrent use; its owner serializes
// changes and checks.
type RouteIndex struct {
	apps map[string][]*indexedRoute // app -> its routes
	lit  map[string][]*indexedRoute // first literal segment -> routes of every app
	wild []*indexedRoute            // routes whose first segment is a wildcard
}

// (Flat lists, not maps by app: an app usually has a first segment of its
// own, and a map per segment would cost more than its one route.)

type indexedRoute struct {
	owned OwnedRoute
	p     pattern
}

// NewRouteIndex returns an empty index.
func NewRouteIndex() *RouteIndex {
	return &RouteIndex{apps: map[string][]*indexedRoute{}, lit: map[string][]*indexedRoute{}}
}

// firstLiteral is p's first segment when it is a literal.
func (p pattern) firstLiteral() (string, bool) {
	if len(p.segs) == 0 || p.segs[0].wild {
		return "", false
	}
	return p.segs[0].s, true
}

// Set makes routes the routes of app (all of them must name app), in
// place of what it had; no routes removes the app.
func (x *RouteIndex) Set(app string, routes []OwnedRoute) {
	x.Remove(app)
	if len(routes) == 0 {
		return
	}
	own := make([]*indexedRoute, len(routes))
	for i, r := range routes {
		ir := &indexedRoute{owned: r, p: parsePattern(r.Route)}
		own[i] = ir
		if lit, ok := ir.p.firstLiteral(); ok {
			x.lit[lit] = append(x.lit[lit], ir)
		} else {
			x.wild = append(x.wild, ir)
		}
	}
	x.apps[app] = own
}

// Remove drops app's routes.
func (x *RouteIndex) Remove(app string) {
	own := x.apps[app]
	if len(own) == 0 {
		return
	}
	mine := func(r *indexedRoute) bool { return r.owned.App == app }
	wild := false
	for _, r := range own {
		if lit, ok := r.p.firstLiteral(); ok {
			if rest := slices.DeleteFunc(x.lit[lit], mine); len(rest) > 0 {
				x.lit[lit] = rest
			} else {
				delete(x.lit, lit)
			}
		} else {
			wild = true
		}
	}
	if wild {
		x.wild = slices.DeleteFunc(x.wild, mine)
	}
	delete(x.apps, app)
}

// Apps is the number of apps with routes in the index.
func (x *RouteIndex) Apps() int { return len(x.apps) }

// FindOverlap is FindOverlap(candidates, routes of every app in the index
// but app): a *ConflictError for the first candidate that overlaps a route
// another app owns, or nil. The answer is exactly FindOverlap's; only the
// routes that cannot overlap are skipped.
func (x *RouteIndex) FindOverlap(app string, candidates []OwnedRoute) error {
	check := func(c OwnedRoute, pc pattern, routes []*indexedRoute) error {
		for _, o := range routes {
			if o.owned.App == app {
				continue
			}
			if req, ok := overlap(pc, o.p); ok {
				return overlapError(c, o.owned, req)
			}
		}
		return nil
	}
	for _, c := range candidates {
		pc := parsePattern(c.Route)
		if lit, ok := pc.firstLiteral(); ok {
			if err := check(c, pc, x.lit[lit]); err != nil {
				return err
			}
		} else {
			// A wildcard first segment may meet any route.
			for _, routes := range x.lit {
				if err := check(c, pc, routes); err != nil {
					return err
				}
			}
		}
		if err := check(c, pc, x.wild); err != nil {
			return err
		}
	}
	return nil
}
