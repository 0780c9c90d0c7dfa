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
	if body.Cap() > maxKept {
		body = bytes.Buffer{}
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
	// One allocation holds what the request points to: a Go guest's
	// allocator is slow, and these live exactly as long as the request.
	x := &requestParts{
		url:  url.URL{Path: wr.Path, RawQuery: wr.RawQuery},
		meta: meta{Context: context.Background(), invocationID: wr.InvocationID, traceParent: wr.TraceParent},
	}
	header := http.Header(wr.Header)
	if wr.TraceParent != "" {
		// header.Get and Set, without canonicalizing a canonical name.
		if vs := header["Traceparent"]; len(vs) == 0 || vs[0] == "" {
			if header == nil {
				header = make(http.Header, 1)
			}
			x.traceParent[0] = wr.TraceParent
			header["Traceparent"] = x.traceParent[:]
		}
	}
	if header == nil {
		header = make(http.Header)
	}
	r := http.Request{
		Method:        wr.Method,
		URL:           &x.url,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        header,
		Body:          http.NoBody,
		ContentLength: int64(len(wr.Body)),
		Host:          wr.Host,
		RemoteAddr:    wr.RemoteAddr,
		RequestURI:    x.url.RequestURI(),
		Pattern:       wr.Route,
	}
	if r.Method == "" {
		r.Method = http.MethodGet
	}
	if len(wr.Body) > 0 {
		r.Body = readCloser{bytes.NewReader(wr.Body)}
	}
	// WithContext copies r to the heap: the request's other allocation.
	rp := r.WithContext(&x.meta)
	for i := 0; i+1 < len(params); i += 2 {
		rp.SetPathValue(params[i], params[i+1])
	}
	return rp
}

// requestParts is what a request's fields point to, allocated together
// (208 bytes, a size class: a body reader here would make every GET pay
// for it).
type requestParts struct {
	url         url.URL
	meta        meta
	traceParent [1]string // the Traceparent header's value, when added
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
	if len(body) > 0 {
		// As net/http: a Content-Type set to nothing stays unset.
		if _, set := w.header["Content-Type"]; !set {
			w.header["Content-Type"] = contentType(detectContentType(body))
		}
	}
	// A package variable rather than a new Response: serve encodes it
	// before the next request.
	response = wire.Response{Status: status, Header: w.header, Body: body}
	return &response
}

var response wire.Response

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

// detectContentType is http.DetectContentType, with a shortcut for the
// usual body a handler writes without a Content-Type: text starting with
// a byte no signature of http.DetectContentType starts with (textStart).
// Of its signatures that look past the start, video/mp4 reads the first
// four bytes as a size, which such a byte makes larger than the 512 bytes
// it sniffs, and the embedded OpenType "LP" at byte 34 is checked here;
// what remains is its text check. In a Go guest compiled to wasm
// DetectContentType tries each of its ~50 signatures in turn and costs
// microseconds. TestDetectContentType and FuzzDetectContentType hold the
// two to the same answers.
func detectContentType(data []byte) string {
	const sniffLen = 512 // http.DetectContentType reads no further
	if len(data) == 0 || !textStart[data[0]] || len(data) >= 36 && string(data[34:36]) == "LP" {
		return http.DetectContentType(data)
	}
	for _, b := range data[:min(len(data), sniffLen)] {
		if b < 0x20 && b != '\t' && b != '\n' && b != '\x0c' && b != '\r' && b != 0x1B {
			return http.DetectContentType(data) // binary: let it decide
		}
	}
	return "text/plain; charset=utf-8"
}

// textStart holds the first bytes of text that no signature of
// http.DetectContentType starts with: digits, '{' and '[' (JSON), and
// letters but those of its signatures (BM, FORM, GIF8, ID3, MThd, OggS,
// OTTO, PK, RIFF, Rar!, ttcf, wOFF).
var textStart = func() (t [256]bool) {
	for _, c := range "0123456789{[abcdefghijklmnopqrsuvxyzACDEHJKLNQSTUVWXYZ" {
		t[c] = true
	}
	return t
}()
