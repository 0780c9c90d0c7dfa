package gateway

import (
	"maps"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestPathValues checks that the gateway reads a matched route's
// wildcards as ServeMux does (r.PathValue), escapes included: the gateway
// serves a matched route without matching it a second time.
func TestPathValues(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ pattern, path string }{
		{"/hello/{name}", "/hello/bench"},
		{"/hello/{name}", "/hello/a%20b"},
		{"/hello/{name}", "/hello/a%2Fb"},
		{"/a/{x}/b/{y}", "/a/1/b/2"},
		{"/files/{path...}", "/files/a/b%20c/d"},
		{"/files/{path...}", "/files/"},
		{"/files/{dir}/{rest...}", "/files/x/y/z/"},
		{"/{$}", "/"},
		{"/users/{id}/{$}", "/users/7/"},
		{"/tree/", "/tree/a/b"},
		{"/plain", "/plain"},
	} {
		mux := http.NewServeMux()
		names := wildcards(c.pattern)
		var want map[string]string
		mux.HandleFunc(c.pattern, func(w http.ResponseWriter, r *http.Request) {
			want = map[string]string{}
			for _, n := range names {
				want[n] = r.PathValue(n)
			}
		})
		r := httptest.NewRequest("GET", c.path, nil)
		if _, p := mux.Handler(r); p != c.pattern {
			t.Fatalf("%s does not match %s (%q): fix the case", c.path, c.pattern, p)
		}
		mux.ServeHTTP(httptest.NewRecorder(), r)
		got := map[string]string{}
		pathValues(c.pattern, r.URL.EscapedPath(), got)
		if !maps.Equal(got, want) {
			t.Errorf("pattern %s, path %s: values %v, ServeMux gives %v", c.pattern, c.path, got, want)
		}
	}
}
