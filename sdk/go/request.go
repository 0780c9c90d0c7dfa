package nimbus

import (
	"fmt"
	"iter"
	"net/http"
	"net/textproto"
	"os"
	"runtime/debug"
	"strings"
	"sync/atomic"

	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// Request is one HTTP request as a HandleRequest handler sees it: the
// request's fields, read in place, without net/http's maps. Its strings
// and Body are the handler's to keep (they share one copy of the request:
// keeping any of them keeps all of it); the *Request itself is reused for
// the next request once the handler returns.
type Request struct {
	Method   string
	Path     string // the path, unescaped, as http.Request's URL.Path
	RawQuery string // the query without '?', as URL.RawQuery
	Host     string
	// RemoteAddr is the client's address as the gateway saw it.
	RemoteAddr string
	// Pattern is the route that matched, as in nimbus.yaml ("GET /hello/{name}").
	Pattern string
	// InvocationID and TraceParent identify the invocation (see the
	// functions of the same names for net/http handlers).
	InvocationID string
	TraceParent  string
	// Body is the request's body (nil when empty).
	Body []byte

	header []wire.Field // as sent, without the Traceparent Header adds
	params []wire.Field
}

// Header returns the first value of the request header name (matched
// without regard to case), or "". As for a net/http handler, the
// invocation's TraceParent is the Traceparent header unless the request
// brought its own.
func (r *Request) Header(name string) string {
	if v := first(r.header, name); v != "" || !r.addsTraceparent(name) {
		return v
	}
	return r.TraceParent
}

// first returns the first value of name in fields (matched without regard
// to case), or "".
func first(fields []wire.Field, name string) string {
	for _, f := range fields {
		if f.Name == name || strings.EqualFold(f.Name, name) {
			return f.Value
		}
	}
	return ""
}

// HeaderValues returns every value of the request header name, in order.
func (r *Request) HeaderValues(name string) []string {
	var vs []string
	for _, f := range r.header {
		if f.Name == name || strings.EqualFold(f.Name, name) {
			vs = append(vs, f.Value)
		}
	}
	if r.addsTraceparent(name) && (len(vs) == 0 || vs[0] == "") {
		if len(vs) == 0 {
			vs = append(vs, "")
		}
		vs[0] = r.TraceParent
	}
	return vs
}

// Headers yields each request header's name and value, in the order
// received (the invocation's Traceparent last, when the request brought
// none); a name with several values comes once per value.
func (r *Request) Headers() iter.Seq2[string, string] {
	return func(yield func(string, string) bool) {
		seen := false
		for _, f := range r.header {
			v := f.Value
			if f.Name == "Traceparent" {
				if !seen && v == "" && r.TraceParent != "" {
					v = r.TraceParent
				}
				seen = true
			}
			if !yield(f.Name, v) {
				return
			}
		}
		if !seen && r.TraceParent != "" {
			yield("Traceparent", r.TraceParent)
		}
	}
}

// addsTraceparent reports whether name is Traceparent and the invocation
// has one to stand in for a missing or empty header.
func (r *Request) addsTraceparent(name string) bool {
	return r.TraceParent != "" && len(name) == len("Traceparent") && strings.EqualFold(name, "Traceparent")
}

// PathValue returns the value of the route's wildcard name ("{name}" in
// the pattern), or "" (as http.Request.PathValue).
func (r *Request) PathValue(name string) string {
	for _, f := range r.params {
		if f.Name == name {
			return f.Value
		}
	}
	return ""
}

// SetPathValue sets the route wildcard name to value, as
// http.Request.SetPathValue does: for a handler's tests on the host.
func (r *Request) SetPathValue(name, value string) {
	for i, f := range r.params {
		if f.Name == name {
			r.params[i].Value = value
			return
		}
	}
	r.params = append(r.params, wire.Field{Name: name, Value: value})
}

// AddHeader adds value to the request header name: for a handler's tests
// on the host.
func (r *Request) AddHeader(name, value string) {
	r.header = append(r.header, wire.Field{Name: textproto.CanonicalMIMEHeaderKey(name), Value: value})
}

// Response is what a HandleRequest handler answers: a status, header
// fields and a body, sent when the handler returns. It is reused for the
// next request: do not keep it.
type Response struct {
	status int
	header []wire.Field
	body   []byte
}

// WriteHeader sets the status code, as http.ResponseWriter's does: the
// first call counts, and without one a response is 200 OK.
func (w *Response) WriteHeader(code int) {
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if w.status == 0 && code >= 200 { // informational responses are not forwarded
		w.status = code
	}
}

// SetHeader sets the response header name to value, replacing its values.
// The name is canonicalized as http.Header.Set does.
func (w *Response) SetHeader(name, value string) {
	name = textproto.CanonicalMIMEHeaderKey(name)
	kept := w.header[:0]
	for _, f := range w.header {
		if f.Name != name {
			kept = append(kept, f)
		}
	}
	w.header = append(kept, wire.Field{Name: name, Value: value})
}

// AddHeader adds value to the response header name.
func (w *Response) AddHeader(name, value string) {
	w.header = append(w.header, wire.Field{Name: textproto.CanonicalMIMEHeaderKey(name), Value: value})
}

// Write appends p to the body.
func (w *Response) Write(p []byte) (int, error) {
	w.body = append(w.body, p...)
	return len(p), nil
}

// WriteString appends s to the body.
func (w *Response) WriteString(s string) (int, error) {
	w.body = append(w.body, s...)
	return len(s), nil
}

// Status is the status the response has so far: 200 until WriteHeader.
func (w *Response) Status() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

// Header returns the first value of the response header name (matched
// without regard to case), or "".
func (w *Response) Header(name string) string { return first(w.header, name) }

// Body is what was written so far.
func (w *Response) Body() []byte { return w.body }

// requestHandler is the handler HandleRequest registered, if any.
var requestHandler atomic.Pointer[func(*Response, *Request)]

// HandleRequest registers f as the function's handler in place of an
// http.Handler (it replaces one registered with Handle, and Handle
// replaces it). It is the lean way to serve HTTP: no maps, a request
// decoded with one allocation, the response written into buffers reused
// from one request to the next. In a Go guest that is several times
// less work per request than a net/http handler, whose types need a
// request's header map, its path values' map and a copy of the request.
// Call it from init.
func HandleRequest(f func(w *Response, r *Request)) {
	requestHandler.Store(&f)
	handler.Store(nil)
}

// The request and response every HandleRequest call reuses: an instance
// serves one request at a time.
var (
	leanRequest  Request
	leanResponse Response
)

// serveRequest is serve for a HandleRequest handler.
func serveRequest(f func(*Response, *Request), in []byte, dst []byte) (out []byte) {
	// Decoded on the stack, then stored field by field: what a guest's
	// garbage collector sees written to the heap (write barriers, while
	// it marks) is the request's fields once.
	v := wire.View{Header: leanRequest.header[:0], Params: leanRequest.params[:0]}
	if err := wire.DecodeView(in, &v); err != nil {
		return wire.EncodeResponse(dst, &wire.Response{Status: 500, Error: fmt.Sprintf("sdk: bad request from host: %v", err)})
	}
	for _, fl := range v.Header {
		if fl.Name == wire.HeaderRun {
			return serve(nil, in, dst) // a workflow activation
		}
	}
	r := &leanRequest
	r.Method, r.Path, r.RawQuery, r.Host, r.RemoteAddr = v.Method, v.Path, v.RawQuery, v.Host, v.RemoteAddr
	r.Pattern, r.InvocationID, r.TraceParent, r.Body = v.Route, v.InvocationID, v.TraceParent, v.Body
	r.header, r.params = v.Header, v.Params
	if r.Method == "" {
		r.Method = http.MethodGet
	}
	w := &leanResponse
	w.status, w.header, w.body = 0, w.header[:0], keepSmall(w.body)
	defer func() {
		if p := recover(); p != nil {
			fmt.Fprintf(os.Stderr, "panic: %v\n\n%s", p, debug.Stack())
			out = wire.EncodeResponse(dst, &wire.Response{Status: 500, Error: fmt.Sprintf("panic: %v", p)})
		}
	}()
	f(w, r)
	if len(w.body) > 0 && !w.has("Content-Type") {
		w.header = append(w.header, wire.Field{Name: "Content-Type", Value: detectContentType(w.body)})
	}
	return wire.AppendResponse(dst, w.Status(), w.header, w.body)
}

// maxKept is the largest buffer kept from one request to the next: a
// larger one (a large response once) is dropped for the garbage collector,
// so it does not count against the function's memory for the rest of the
// instance's life.
const maxKept = 1 << 20

// keepSmall returns b emptied, or nil when it grew past maxKept.
func keepSmall(b []byte) []byte {
	if cap(b) > maxKept {
		return nil
	}
	return b[:0]
}

// has reports whether the response sets the header name, given canonical.
func (w *Response) has(name string) bool {
	for _, f := range w.header {
		if f.Name == name {
			return true
		}
	}
	return false
}
