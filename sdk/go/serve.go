package nimbus

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"runtime/debug"

	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// serve runs one encoded request through h and appends the encoded response
// to dst. It never panics: a handler panic becomes a response with Error set,
// which the host reports as a failed invocation.
func serve(h http.Handler, in []byte, dst []byte) (out []byte) {
	wr := &request
	var err error
	params, err = wire.DecodeRequestInto(in, wr, params[:0])
	if err != nil {
		return wire.EncodeResponse(dst, &wire.Response{Status: 500, Error: fmt.Sprintf("sdk: bad request from host: %v", err)})
	}
	if ids := wr.Header[wire.HeaderRun]; len(ids) == 1 {
		return wire.EncodeResponse(dst, runWorkflow(ids[0], wr.Body))
	}
	if h == nil {
		return wire.EncodeResponse(dst, &wire.Response{Status: 500, Error: "no handler registered: call nimbus.Handle or nimbus.HandleFunc from init"})
	}
	body.Reset()
	clear(writer.header)
	writer = responseWriter{header: writer.header, body: &body}
	if writer.header == nil {
		writer.header = make(http.Header)
	}
	w := &writer
	defer func() {
		if p := recover(); p != nil {
			fmt.Fprintf(os.Stderr, "panic: %v\n\n%s", p, debug.Stack())
			out = wire.EncodeResponse(dst, &wire.Response{Status: 500, Error: fmt.Sprintf("panic: %v", p)})
		}
	}()
	h.ServeHTTP(w, newRequest(wr, params))
	return wire.EncodeResponse(dst, w.response())
}

// request and params are the decoded request, reused: an instance serves
// one request at a time, and what a handler sees (strings, the header map)
// is allocated for it.
var (
	request wire.Request
	params  []string
)

// newRequest builds the *http.Request a handler sees; params are the path
// parameters as name, value pairs.
func newRequest(wr *wire.Request, params []string) *http.Request {
	u := &url.URL{Path: wr.Path, RawQuery: wr.RawQuery}
	header := http.Header(wr.Header)
	if header == nil {
		header = make(http.Header)
	}
	if wr.TraceParent != "" && header.Get("Traceparent") == "" {
		header.Set("Traceparent", wr.TraceParent)
	}
	r := http.Request{
		Method:        wr.Method,
		URL:           u,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        header,
		Body:          http.NoBody,
		ContentLength: int64(len(wr.Body)),
		Host:          wr.Host,
		RemoteAddr:    wr.RemoteAddr,
		RequestURI:    u.RequestURI(),
		Pattern:       wr.Route,
	}
	if r.Method == "" {
		r.Method = http.MethodGet
	}
	if len(wr.Body) > 0 {
		r.Body = readCloser{bytes.NewReader(wr.Body)}
	}
	// WithContext copies r to the heap: the one allocation of the request.
	rp := r.WithContext(&meta{Context: context.Background(), invocationID: wr.InvocationID, traceParent: wr.TraceParent})
	for i := 0; i+1 < len(params); i += 2 {
		rp.SetPathValue(params[i], params[i+1])
	}
	return rp
}

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }

// body is every response's body buffer, and writer every request's
// ResponseWriter (its header map cleared), reused: a response is encoded
// before the next request, an instance serves one request at a time, and
// a handler must not use its ResponseWriter after it returns (net/http's
// contract).
var (
	body   bytes.Buffer
	writer responseWriter
)

// responseWriter buffers the whole response: the ABI returns it in one piece.
type responseWriter struct {
	header      http.Header
	status      int
	wroteHeader bool
	body        *bytes.Buffer
}

func (w *responseWriter) Header() http.Header { return w.header }

func (w *responseWriter) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code < 200 { // informational responses are not forwarded
		return
	}
	w.wroteHeader = true
	w.status = code
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return w.body.Write(p)
}

// Flush is a no-op: the response is sent when the handler returns.
func (w *responseWriter) Flush() {}

func (w *responseWriter) response() *wire.Response {
	status := w.status
	if status == 0 {
		status = http.StatusOK
	}
	body := w.body.Bytes()
	if len(body) > 0 && w.header.Get("Content-Type") == "" {
		if _, set := w.header["Content-Type"]; !set {
			w.header["Content-Type"] = contentType(http.DetectContentType(body))
		}
	}
	return &wire.Response{Status: status, Header: w.header, Body: body}
}

// detected holds the values http.DetectContentType returns, each as the
// one-element slice a header holds, shared by every response: the header
// is encoded and dropped before the next request, and nothing appends to
// it after response.
var detected = map[string][]string{}

func contentType(t string) []string {
	v, ok := detected[t]
	if !ok {
		v = []string{t}
		detected[t] = v
	}
	return v[:1:1]
}
