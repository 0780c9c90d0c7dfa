package model

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func route(s string) Route {
	method, path, ok := strings.Cut(s, " ")
	if !ok {
		return Route{Path: s}
	}
	return Route{Method: method, Path: path}
}

// TestOverlap: two routes overlap when some request could match both,
// whichever is more specific.
func TestOverlap(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want string // an example request both match; "" for none
	}{
		// Methods: "" is any, GET covers HEAD.
		{"GET /probe", "GET /probe", "GET /probe"},
		{"/probe", "GET /probe", "GET /probe"},
		{"GET /probe", "HEAD /probe", "HEAD /probe"},
		{"HEAD /probe", "GET /probe", "HEAD /probe"},
		{"GET /probe", "POST /probe", ""},
		{"HEAD /probe", "POST /probe", ""},
		{"/probe", "CONNECT /probe", "CONNECT /probe"},
		{"/probe", "/probe", "/probe"},

		// Literal and single wildcards.
		{"GET /probe", "GET /{x}", "GET /probe"},
		{"GET /{x}", "GET /probe", "GET /probe"},
		{"GET /a/{x}", "GET /{y}/b", "GET /a/b"},
		{"GET /a/{x}", "GET /b/{x}", ""},
		{"GET /users/{id}", "GET /users/{id}/posts", ""},
		{"/a/b/c", "/a/b", ""},
		{"/a%2Fb", "/{x}", "/a%2Fb"}, // one segment, unescaped

		// Multi wildcards and trailing slashes.
		{"GET /probe", "/", "GET /probe"},
		{"/", "/", "/"},
		{"GET /static/", "GET /static/{file}", "GET /static/file"},
		{"GET /static/{rest...}", "GET /static/a/b/c", "GET /static/a/b/c"},
		{"/a/{x...}", "/{y}/b/{z...}", "/a/b/"},
		{"/a/{x...}", "/a/", "/a/"},
		{"/a/", "/b/", ""},
		{"/{x}/", "/a/b", "/a/b"},
		{"/{x...}", "/{$}", "/"},

		// {$} matches the trailing slash only, never a single wildcard.
		{"/a/{$}", "/a/", "/a/"},
		{"/a/{$}", "/a/{x}", ""},
		{"/{$}", "/{x}", ""},
		{"/a/{$}", "/a/b", ""},

		// A pattern ending in a slash also answers the path without it,
		// with a redirect: that path is its too.
		{"/docs/", "/docs", "/docs"},
		{"GET /docs", "GET /docs/{rest...}", "GET /docs"},
		{"/a/{$}", "/a", "/a"},
		{"/{x}/", "/probe", "/probe"},
		{"POST /docs/", "GET /docs", ""}, // not for another method
		{"/docs/", "/doc", ""},
		{"/docs/", "/docs/a/b", "/docs/a/b"},
	} {
		for _, pair := range [][2]string{{tc.a, tc.b}, {tc.b, tc.a}} {
			got, ok := Overlap(route(pair[0]), route(pair[1]))
			if ok != (tc.want != "") || ok && got != tc.want && pair[0] == tc.a {
				t.Errorf("Overlap(%q, %q) = %q, %v; want %q", pair[0], pair[1], got, ok, tc.want)
			}
			if ok {
				checkBothMatch(t, pair[0], pair[1], got)
			}
			// The index gives the same answer.
			x := NewRouteIndex()
			x.Set("a", []OwnedRoute{{App: "a", Function: "f", Route: route(pair[1])}})
			if err := x.FindOverlap("b", []OwnedRoute{{App: "b", Function: "g", Route: route(pair[0])}}); (err != nil) != ok {
				t.Errorf("RouteIndex.FindOverlap(%q against %q) = %v; Overlap says %v", pair[0], pair[1], err, ok)
			}
		}
	}
}

// checkBothMatch asks ServeMux whether the example request reaches each
// pattern on its own (directly, or through the trailing-slash redirect).
func checkBothMatch(t *testing.T, a, b, example string) {
	t.Helper()
	method, path, ok := strings.Cut(example, " ")
	if !ok {
		method, path = http.MethodPatch, example // any method: try an unusual one
	}
	for _, p := range []string{a, b} {
		mux := http.NewServeMux()
		mux.HandleFunc(p, func(http.ResponseWriter, *http.Request) {})
		r := httptest.NewRequest(method, "http://x"+path, nil)
		if method == http.MethodConnect {
			r.URL.Path, r.RequestURI = path, ""
		}
		if _, matched := mux.Handler(r); matched == "" {
			t.Errorf("example %q of (%q, %q) does not reach %q", example, a, b, p)
		}
	}
}

// TestFindOverlapNamesTheOwner: the error is a *ConflictError naming the
// app that serves the path, and says how to hand it over.
func TestFindOverlapNamesTheOwner(t *testing.T) {
	owned := []OwnedRoute{
		{App: "a", Function: "list", Route: route("GET /items")},
		{App: "a", Function: "probe", Route: route("GET /probe")},
	}
	if err := FindOverlap([]OwnedRoute{{App: "b", Function: "f", Route: route("POST /probe")}}, owned); err != nil {
		t.Fatalf("another method on the same path: %v", err)
	}
	err := FindOverlap([]OwnedRoute{{App: "b", Function: "f", Route: route("GET /{x}")}}, owned)
	var ce *ConflictError
	if !errors.As(err, &ce) || !errors.Is(err, ErrConflict) {
		t.Fatalf("err = %v, want a *ConflictError", err)
	}
	if ce.OtherApp != "a" || ce.OtherFunction != "list" || ce.OtherRoute != route("GET /items") {
		t.Fatalf("owner = %s/%s %v", ce.OtherApp, ce.OtherFunction, ce.OtherRoute)
	}
	for _, want := range []string{`"GET /{x}"`, "(app b)", `"GET /items"`, "(app a)", "both match GET /items", "nimbus delete a"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q does not say %q", err, want)
		}
	}
}

// TestOverlapAgreesWithServeMux: for every pair of a set of patterns, a
// request that ServeMux sends to each of them on its own (a sample of
// paths built from the patterns' own segments) means Overlap is true; and
// two patterns ServeMux refuses side by side overlap.
func TestOverlapAgreesWithServeMux(t *testing.T) {
	patterns := []string{
		"/", "/{$}", "/{x}", "/{x}/", "/{x...}", "/a", "/a/", "/a/{$}", "/a/{x}", "/a/{x...}",
		"/a/b", "/a/b/", "/{x}/b", "/{x}/b/{y...}", "/b/{x}", "/a/{x}/c", "GET /a", "HEAD /a",
		"POST /a", "GET /a/", "GET /{x}", "POST /{x}/", "HEAD /a/{x...}", "GET /a/b/{$}",
	}
	segs := []string{"a", "b", "c", "x"}
	var paths []string
	var build func(prefix string, depth int)
	build = func(prefix string, depth int) {
		paths = append(paths, prefix+"/")
		if depth == 3 {
			return
		}
		for _, s := range segs {
			paths = append(paths, prefix+"/"+s)
			build(prefix+"/"+s, depth+1)
		}
	}
	build("", 0)
	methods := []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPatch}
	// reach[p][k]: request k (a method and a path) reaches pattern p.
	type request struct{ method, path string }
	var requests []request
	for _, m := range methods {
		for _, p := range paths {
			requests = append(requests, request{m, p})
		}
	}
	reach := map[string][]bool{}
	for _, p := range patterns {
		mux := muxWith(p)
		reach[p] = make([]bool, len(requests))
		for k, r := range requests {
			_, matched := mux.Handler(httptest.NewRequest(r.method, "http://x"+r.path, nil))
			reach[p][k] = matched != ""
		}
	}
	for i, a := range patterns {
		for _, b := range patterns[i+1:] {
			_, ok := Overlap(route(a), route(b))
			if !ok && register(muxWith(a), b) != nil {
				t.Errorf("ServeMux refuses %q beside %q, but Overlap says they do not overlap", a, b)
			}
			if ok {
				continue
			}
			for k, r := range requests {
				if reach[a][k] && reach[b][k] {
					t.Errorf("%s %s reaches both %q and %q, but Overlap says they do not overlap", r.method, r.path, a, b)
				}
			}
		}
	}
}

func muxWith(p string) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc(p, func(http.ResponseWriter, *http.Request) {})
	return mux
}
