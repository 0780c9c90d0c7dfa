package gateway

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/nimbus-dev/nimbus/internal/apierror"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/scheduler"
	"github.com/nimbus-dev/nimbus/internal/security/jwtauth"
	"github.com/nimbus-dev/nimbus/internal/telemetry"
)

// Invoker runs invocations; *scheduler.Scheduler implements it.
type Invoker interface {
	Invoke(ctx context.Context, app, function string, req *runtime.Request) (*runtime.Response, error)
}

var _ Invoker = (*scheduler.Scheduler)(nil)

// Header names the gateway sets on every response.
const (
	HeaderInvocationID = "X-Nimbus-Invocation-Id"
	HeaderTraceParent  = "Traceparent"
)

// Gateway serves function routes.
type Gateway struct {
	table  atomic.Pointer[http.ServeMux]
	events atomic.Pointer[EventSink]
	// calls answers the routes' invocations; SetAsync and SetMetrics
	// replace it with a changed copy.
	calls atomic.Pointer[Invocations]
	// onAuthDenied receives each request route auth refuses
	// (SetAuthDenials); nil: none.
	onAuthDenied atomic.Pointer[func(AuthDenial)]

	mu   sync.Mutex                 // serializes changes of revs, the table built from them, calls and auth
	revs map[string]*model.Revision // app -> revision whose routes are served
	// auth is how routes with auth are checked (SetAuth); verifiers are
	// the JWT verifiers of the served routes, by configuration, kept
	// across table swaps so their cached keys survive a redeploy.
	auth      authConfig
	verifiers map[string]*jwtauth.Verifier
}

// New creates a gateway with no routes whose invocations inv runs.
func New(inv Invoker, logger *slog.Logger) *Gateway {
	g := &Gateway{revs: map[string]*model.Revision{}, verifiers: map[string]*jwtauth.Verifier{}}
	g.calls.Store(&Invocations{Invoker: inv, Logger: logger})
	g.table.Store(g.newMux())
	return g
}

// SetMetrics counts the requests the gateway refuses before they reach
// the Invoker (a body over max_request_body, a credential route auth
// refuses) in m.
func (g *Gateway) SetMetrics(m *telemetry.Metrics) {
	g.setCalls(func(c *Invocations) { c.Metrics = m })
}

// setCalls replaces g.calls with a copy changed by f.
func (g *Gateway) setCalls(f func(*Invocations)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	c := *g.calls.Load()
	f(&c)
	g.calls.Store(&c)
}

// logger is where the gateway logs; never nil.
func (g *Gateway) logger() *slog.Logger {
	if l := g.calls.Load().Logger; l != nil {
		return l
	}
	return slog.Default()
}

func (g *Gateway) newMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc(EventsPattern, func(w http.ResponseWriter, r *http.Request) {
		sink := g.events.Load()
		if sink == nil {
			apierror.Write(w, apierror.New(http.StatusNotFound, "route_not_found", "this gateway does not accept events"))
			return
		}
		ServeEvents(w, r, *sink, r.PathValue("app"), r.PathValue("topic"))
	})
	return mux
}

// buildTable is the routing table serving the given revisions and the
// built-in routes, and the JWT verifiers its routes use. ServeMux panics on
// a conflicting or invalid pattern; Validate refuses those first, this is
// the last line. g.mu is held.
func (g *Gateway) buildTable(revs map[string]*model.Revision) (mux *http.ServeMux, verifiers map[string]*jwtauth.Verifier, err error) {
	mux = g.newMux()
	verifiers = map[string]*jwtauth.Verifier{}
	defer func() {
		if r := recover(); r != nil {
			mux, err = nil, fmt.Errorf("%w: routing table: %v", model.ErrConflict, r)
		}
	}()
	if err := g.checkAuthKeys(revs); err != nil {
		return nil, nil, err
	}
	for _, rev := range revs {
		for _, fn := range rev.Functions {
			for _, rt := range fn.Routes {
				pattern := rt.Path
				if rt.Method != "" {
					pattern = rt.Method + " " + rt.Path
				}
				h := &route{g: g, app: rev.App, fn: fn, pattern: pattern, path: rt.Path, params: wildcards(rt.Path)}
				if rt.Auth != nil {
					h.auth = &routeAuth{spec: rt.Auth, keys: g.auth.keys}
					if rt.Auth.Type == model.AuthJWT {
						if h.auth.jwt, err = g.verifier(rt.Auth, verifiers); err != nil {
							return nil, nil, fmt.Errorf("app %s: route %q: %w", rev.App, rt.Pattern(), err)
						}
					}
				}
				mux.Handle(pattern, h)
			}
		}
	}
	return mux, verifiers, nil
}

// ServeHTTP dispatches to the current routing table.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	mux := g.table.Load()
	h, pattern := mux.Handler(r)
	if rt, ok := h.(*route); ok && strings.HasPrefix(rt.path, "/") {
		// Matched: serve it without matching again in mux.ServeHTTP
		// (which would fill in r.PathValue; the route reads its
		// wildcards itself, pathValues).
		rt.serve(w, r, true)
		return
	}
	if pattern != "" {
		mux.ServeHTTP(w, r) // (Handler does not fill in r.PathValue)
		return
	}
	// No route: let the mux decide between 404 and 405 (it knows the
	// other methods of the path), then answer in our error format.
	probe := &statusProbe{header: http.Header{}}
	h.ServeHTTP(probe, r)
	switch probe.status {
	case http.StatusMethodNotAllowed:
		w.Header().Set("Allow", probe.header.Get("Allow"))
		apierror.Write(w, apierror.New(http.StatusMethodNotAllowed, "method_not_allowed",
			fmt.Sprintf("%s is not allowed on %s; this route accepts %s", r.Method, r.URL.Path, probe.header.Get("Allow"))))
	default:
		apierror.Write(w, apierror.New(http.StatusNotFound, "route_not_found",
			fmt.Sprintf("no route matches %s %s; routes are declared in nimbus.yaml under functions.<name>.routes (see `nimbus ls`)", r.Method, r.URL.Path)))
	}
}

// statusProbe records what ServeMux's own not-found or not-allowed handler
// answers, without sending it.
type statusProbe struct {
	header http.Header
	status int
}

func (p *statusProbe) Header() http.Header { return p.header }
func (p *statusProbe) WriteHeader(code int) {
	if p.status == 0 {
		p.status = code
	}
}
func (p *statusProbe) Write(b []byte) (int, error) {
	p.WriteHeader(http.StatusOK)
	return len(b), nil
}

// wildcards lists the names of the {wildcards} in a path pattern.
func wildcards(path string) []string {
	var names []string
	for {
		i := strings.IndexByte(path, '{')
		if i < 0 {
			return names
		}
		j := strings.IndexByte(path[i:], '}')
		if j < 0 {
			return names
		}
		name := strings.TrimSuffix(path[i+1:i+j], "...")
		if name != "" && name != "$" {
			names = append(names, name)
		}
		path = path[i+j+1:]
	}
}

type route struct {
	g       *Gateway
	app     string
	fn      model.Function
	pattern string
	path    string     // the pattern's path
	params  []string   // the names of its wildcards, in order
	auth    *routeAuth // nil: public
}

func (rt *route) ServeHTTP(w http.ResponseWriter, r *http.Request) { rt.serve(w, r, false) }

// serve answers r. matched says ServeMux matched r to this route without
// filling in r.PathValue, so the wildcards are read from the path here.
func (rt *route) serve(w http.ResponseWriter, r *http.Request, matched bool) {
	stripAuthHeaders(r.Header)
	if rt.auth != nil && !rt.authorize(w, r) {
		return
	}
	// The request and the values of the headers Serve sets are one
	// allocation; the header's name is the canonical one, which Get
	// looks up without making a copy of it.
	c := new(call)
	c.req = runtime.Request{
		Method:     r.Method,
		Path:       r.URL.Path,
		RawQuery:   r.URL.RawQuery,
		Header:     r.Header,
		Host:       r.Host,
		RemoteAddr: r.RemoteAddr,
		Route:      rt.pattern,
	}
	c.req.InvocationID, c.req.TraceParent = telemetry.NewInvocation(telemetry.Continue(r.Header.Get(HeaderTraceParent)))
	if len(rt.params) > 0 {
		c.req.Params = make(map[string]string, len(rt.params))
		if matched {
			pathValues(rt.path, r.URL.EscapedPath(), c.req.Params)
		} else {
			for _, name := range rt.params {
				c.req.Params[name] = r.PathValue(name)
			}
		}
	}
	rt.g.calls.Load().serve(w, r, rt.app, &rt.fn, &c.req, c.values[:])
}

// call is what the gateway allocates for one request: the runtime's
// request and the values of the response headers the gateway sets.
type call struct {
	req    runtime.Request
	values [3]string
}

func traceID(traceparent string) string {
	if tc, ok := telemetry.ParseTraceParent(traceparent); ok {
		return tc.TraceIDString()
	}
	return ""
}

// pathValues puts in values the wildcards of pattern (a ServeMux path
// pattern) as ServeMux gives them (r.PathValue) for path, an escaped,
// clean path the pattern matched: {name} is its segment in that place,
// unescaped; {name...} the rest of the path, unescaped.
func pathValues(pattern, path string, values map[string]string) {
	for len(pattern) > 1 && len(path) > 0 {
		pattern = pattern[1:] // the slash
		seg := pattern
		if i := strings.IndexByte(pattern, '/'); i >= 0 {
			seg, pattern = pattern[:i], pattern[i:]
		} else {
			pattern = ""
		}
		if name, ok := strings.CutPrefix(seg, "{"); ok {
			name = strings.TrimSuffix(name, "}")
			if name == "$" {
				return
			}
			if name, ok := strings.CutSuffix(name, "..."); ok {
				values[name] = pathUnescape(path[1:])
				return
			}
			seg, _ = firstSegment(path)
			values[name] = seg
		}
		_, path = firstSegment(path)
	}
}

// firstSegment is ServeMux's: the first segment of path, unescaped, and
// the rest.
func firstSegment(path string) (seg, rest string) {
	if path == "/" {
		return "/", ""
	}
	path = path[1:]
	i := strings.IndexByte(path, '/')
	if i < 0 {
		i = len(path)
	}
	return pathUnescape(path[:i]), path[i:]
}

// pathUnescape is ServeMux's: a segment that is not validly escaped is
// kept as it is.
func pathUnescape(s string) string {
	if u, err := url.PathUnescape(s); err == nil {
		return u
	}
	return s
}
