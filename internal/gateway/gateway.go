package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/nimbus-dev/nimbus/internal/apierror"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/scheduler"
	"github.com/nimbus-dev/nimbus/internal/telemetry"
	"github.com/nimbus-dev/nimbus/internal/throttle"
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
	inv    Invoker
	logger *slog.Logger
	table  atomic.Pointer[http.ServeMux]
	events atomic.Pointer[EventSink]
	async  atomic.Pointer[AsyncSink]

	mu   sync.Mutex                 // serializes changes of revs and the table built from them
	revs map[string]*model.Revision // app -> revision whose routes are served
}

// New creates a gateway with no routes.
func New(inv Invoker, logger *slog.Logger) *Gateway {
	if logger == nil {
		logger = slog.Default()
	}
	g := &Gateway{inv: inv, logger: logger, revs: map[string]*model.Revision{}}
	g.table.Store(g.newMux())
	return g
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
// built-in routes. ServeMux panics on a conflicting or invalid pattern;
// Validate refuses those first, this is the last line.
func (g *Gateway) buildTable(revs map[string]*model.Revision) (mux *http.ServeMux, err error) {
	mux = g.newMux()
	defer func() {
		if r := recover(); r != nil {
			mux, err = nil, fmt.Errorf("%w: routing table: %v", model.ErrConflict, r)
		}
	}()
	for _, rev := range revs {
		for _, fn := range rev.Functions {
			for _, rt := range fn.Routes {
				pattern := rt.Path
				if rt.Method != "" {
					pattern = rt.Method + " " + rt.Path
				}
				mux.Handle(pattern, &route{g: g, app: rev.App, fn: fn, pattern: pattern, params: wildcards(rt.Path)})
			}
		}
	}
	return mux, nil
}

// ServeHTTP dispatches to the current routing table.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	mux := g.table.Load()
	h, pattern := mux.Handler(r)
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
	params  []string
}

func (rt *route) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tc := telemetry.Continue(r.Header.Get("traceparent"))
	req := &runtime.Request{
		Method:       r.Method,
		Path:         r.URL.Path,
		RawQuery:     r.URL.RawQuery,
		Header:       r.Header,
		Host:         r.Host,
		RemoteAddr:   r.RemoteAddr,
		Route:        rt.pattern,
		InvocationID: telemetry.NewInvocationID(),
		TraceParent:  tc.String(),
	}
	w.Header().Set(HeaderInvocationID, req.InvocationID)
	w.Header().Set(HeaderTraceParent, req.TraceParent)
	if len(rt.params) > 0 {
		req.Params = make(map[string]string, len(rt.params))
		for _, name := range rt.params {
			req.Params[name] = r.PathValue(name)
		}
	}
	body, err := ReadBody(w, r, rt.fn.MaxRequestBytes)
	if err != nil {
		rt.g.fail(w, req, rt.app, rt.fn.Name, err)
		return
	}
	req.Body = body
	if WantsAsync(r.Header) {
		if sink := rt.g.async.Load(); sink != nil {
			ServeAsync(w, r, *sink, rt.app, rt.fn.Name, req)
			return
		}
	}
	resp, err := rt.g.inv.Invoke(r.Context(), rt.app, rt.fn.Name, req)
	if err != nil {
		rt.g.fail(w, req, rt.app, rt.fn.Name, err)
		return
	}
	WriteResponse(w, resp)
}

// ReadBody reads a request body of at most limit bytes (no limit if <= 0).
// A larger body fails with a runtime.LimitError wrapping ErrRequestTooLarge.
func ReadBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	if limit > 0 && r.ContentLength > limit {
		return nil, &runtime.LimitError{Err: runtime.ErrRequestTooLarge, Limit: FormatBytes(limit)}
	}
	var rd io.Reader = r.Body
	if limit > 0 {
		rd = http.MaxBytesReader(w, r.Body, limit)
	}
	body, err := io.ReadAll(rd)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, &runtime.LimitError{Err: runtime.ErrRequestTooLarge, Limit: FormatBytes(limit)}
		}
		return nil, fmt.Errorf("read request body: %w", err)
	}
	return body, nil
}

// hopHeaders are connection-level headers a guest may not set.
var hopHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Transfer-Encoding": true,
	"Te": true, "Trailer": true, "Upgrade": true, "Content-Length": true,
}

// WriteResponse writes a guest response.
func WriteResponse(w http.ResponseWriter, resp *runtime.Response) {
	h := w.Header()
	for k, vs := range resp.Header {
		if hopHeaders[http.CanonicalHeaderKey(k)] {
			continue
		}
		h[http.CanonicalHeaderKey(k)] = vs
	}
	h.Set("Content-Length", strconv.Itoa(len(resp.Body)))
	status := resp.Status
	if status == 0 {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	w.Write(resp.Body)
}

func (g *Gateway) fail(w http.ResponseWriter, req *runtime.Request, app, fn string, err error) {
	e := InvocationError(app, fn, err)
	if _, reason, retryAfter, ok := throttle.StatusOf(err); ok {
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		if reason == "superseded" {
			w.Header().Set("Nimbus-Flow", "superseded")
		}
	}
	if e.Status >= 500 {
		g.logger.Warn("invocation failed", "app", app, "function", fn, "invocation", req.InvocationID,
			"trace_id", traceID(req.TraceParent), "status", e.Status, "error", err)
	}
	apierror.Write(w, e)
}

// InvocationError turns an invocation failure into an API error whose
// message names the function, the limit and where to change it.
func InvocationError(app, fn string, err error) *apierror.Error {
	status, code := scheduler.StatusOf(err)
	msg := err.Error()
	if prefix := app + "/" + fn; !strings.Contains(msg, prefix) {
		msg = prefix + ": " + msg
	}
	var le *runtime.LimitError
	if errors.As(err, &le) {
		field := map[error]string{
			runtime.ErrTimeout:          "timeout",
			runtime.ErrMemoryLimit:      "memory",
			runtime.ErrRequestTooLarge:  "max_request_body",
			runtime.ErrResponseTooLarge: "max_response_body",
		}[le.Err]
		if field != "" {
			msg = fmt.Sprintf("%s/%s: %v: the function's %s is %s; raise functions.%s.%s in nimbus.yaml if this is expected",
				app, fn, le.Err, field, le.Limit, fn, field)
		}
	}
	return &apierror.Error{Status: status, Code: code, Message: msg, Err: err}
}

func traceID(traceparent string) string {
	if tc, ok := telemetry.ParseTraceParent(traceparent); ok {
		return tc.TraceIDString()
	}
	return ""
}

// FormatBytes renders a byte count the way the manifest writes it: 6MiB,
// 512KiB, 100B.
func FormatBytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return strconv.FormatInt(n>>30, 10) + "GiB"
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + "KiB"
	default:
		return strconv.FormatInt(n, 10) + "B"
	}
}
