package model

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// randomRoute is a route built from a few segments of every kind, so that
// random pairs overlap often and in every way (wildcards first, trailing
// slashes, {$}, multi wildcards, methods).
func randomRoute(r *rand.Rand) Route {
	methods := []string{"", "GET", "HEAD", "POST"}
	n := 1 + r.IntN(3)
	var b strings.Builder
	for i := range n {
		b.WriteByte('/')
		last := i == n-1
		switch k := r.IntN(8); {
		case k < 4:
			b.WriteString([]string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"}[r.IntN(12)])
		case k < 6:
			fmt.Fprintf(&b, "{w%d}", i)
		case last && k == 6:
			fmt.Fprintf(&b, "{rest%d...}", i)
		case last && k == 7:
			if r.IntN(2) == 0 {
				b.WriteString("{$}")
			} // else a trailing slash
		default:
			b.WriteString("m")
		}
	}
	return Route{Method: methods[r.IntN(len(methods))], Path: b.String()}
}

// TestRouteIndexIsExact: over many apps with random routes, the index
// finds an overlap exactly when FindOverlap over every other app's routes
// does, and the one it names is real.
func TestRouteIndexIsExact(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	x := NewRouteIndex()
	apps := map[string][]OwnedRoute{}
	set := func(app string) {
		var routes []OwnedRoute
		for i := range r.IntN(3) {
			routes = append(routes, OwnedRoute{App: app, Function: fmt.Sprint("f", i), Route: randomRoute(r)})
		}
		x.Set(app, routes)
		if len(routes) == 0 {
			delete(apps, app)
		} else {
			apps[app] = routes
		}
	}
	for i := range 40 {
		set(fmt.Sprint("app", i))
	}
	found := 0
	for i := range 3000 {
		app := fmt.Sprint("app", r.IntN(50)) // some in the index, some not
		var cands []OwnedRoute
		for j := range 1 + r.IntN(2) {
			cands = append(cands, OwnedRoute{App: app, Function: fmt.Sprint("g", j), Route: randomRoute(r)})
		}
		var others []OwnedRoute
		for a, routes := range apps {
			if a != app {
				others = append(others, routes...)
			}
		}
		want := FindOverlap(cands, others)
		got := x.FindOverlap(app, cands)
		if (got == nil) != (want == nil) {
			t.Fatalf("check %d of %v: index says %v, FindOverlap says %v", i, cands, got, want)
		}
		if got != nil {
			found++
			var ce *ConflictError
			if !errors.As(got, &ce) || ce.OtherApp == app {
				t.Fatalf("index error %v names no other app", got)
			}
			if _, ok := Overlap(ce.Route, ce.OtherRoute); !ok {
				t.Fatalf("index names %v and %v, which do not overlap", ce.Route, ce.OtherRoute)
			}
		}
		if i%10 == 0 { // apps change: redeploys and deletes
			set(fmt.Sprint("app", r.IntN(50)))
			if a := fmt.Sprint("app", r.IntN(50)); r.IntN(4) == 0 {
				x.Remove(a)
				delete(apps, a)
			}
		}
	}
	if found == 0 || found == 3000 {
		t.Fatalf("%d of 3000 checks found an overlap: the routes do not exercise both answers", found)
	}
	if x.Apps() != len(apps) {
		t.Fatalf("index holds %d apps, want %d", x.Apps(), len(apps))
	}
}

// TestRouteIndexManyApps: with 10,000 apps on literal first segments, a
// new app's route is checked against the few that could meet it, and an
// overlap with any of them is still found.
func TestRouteIndexManyApps(t *testing.T) {
	t.Parallel()
	x := NewRouteIndex()
	for i := range 10000 {
		app := fmt.Sprintf("f%05d", i)
		x.Set(app, []OwnedRoute{
			{App: app, Function: "fn", Route: Route{Method: "GET", Path: fmt.Sprintf("/%s/{name}", app)}},
			{App: app, Function: "fn", Route: Route{Path: fmt.Sprintf("/shared/%s", app)}},
		})
	}
	x.Set("root", []OwnedRoute{{App: "root", Function: "home", Route: Route{Method: "GET", Path: "/{$}"}}})
	for _, tc := range []struct {
		route, owner string // owner "": no overlap
	}{
		{"GET /new/{name}", ""},
		{"GET /f00042/x", "f00042"},
		{"POST /f00042/x", ""},
		{"/shared/f09999", "f09999"},
		{"/shared/other", ""},
		{"GET /{x}/a/b", ""},
		{"GET /{x}/{y}", "f00000"}, // some app: every one matches
		{"/", "f00000"},
	} {
		err := x.FindOverlap("new", []OwnedRoute{{App: "new", Function: "g", Route: route(tc.route)}})
		var ce *ConflictError
		switch {
		case tc.owner == "" && err != nil:
			t.Errorf("%s: %v, want no overlap", tc.route, err)
		case tc.owner != "" && !errors.As(err, &ce):
			t.Errorf("%s: %v, want an overlap with app %s", tc.route, err, tc.owner)
		case tc.owner != "" && tc.owner != "f00000" && ce.OtherApp != tc.owner:
			t.Errorf("%s: overlaps app %s, want %s", tc.route, ce.OtherApp, tc.owner)
		}
	}
	// An app's own routes never count against it.
	if err := x.FindOverlap("f00042", []OwnedRoute{{App: "f00042", Function: "fn", Route: route("GET /f00042/{name}")}}); err != nil {
		t.Errorf("redeploy of the same routes: %v", err)
	}
	x.Remove("f00042")
	if err := x.FindOverlap("new", []OwnedRoute{{App: "new", Function: "g", Route: route("GET /f00042/x")}}); err != nil {
		t.Errorf("after the owner is removed: %v", err)
	}
}

func BenchmarkRouteIndexFindOverlap(b *testing.B) {
	for _, n := range []int{100, 10000} {
		b.Run(fmt.Sprint(n, "apps"), func(b *testing.B) {
			x := NewRouteIndex()
			var all []OwnedRoute
			for i := range n {
				app := fmt.Sprintf("f%05d", i)
				r := OwnedRoute{App: app, Function: "fn", Route: Route{Method: "GET", Path: "/" + app + "/{name}"}}
				x.Set(app, []OwnedRoute{r})
				all = append(all, r)
			}
			cand := []OwnedRoute{{App: "new", Function: "g", Route: route("GET /new/{name}")}}
			b.Run("index", func(b *testing.B) {
				for b.Loop() {
					if err := x.FindOverlap("new", cand); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("scan", func(b *testing.B) { // the baseline: FindOverlap over every route
				for b.Loop() {
					if err := FindOverlap(cand, all); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
