package gateway

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"

	"github.com/nimbus-dev/nimbus/internal/apierror"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/telemetry"
	"github.com/nimbus-dev/nimbus/internal/throttle"
)

// Invocations answers invocations of functions over HTTP. The gateway's
// routes and the API's invoke endpoint each hold one, so both read, check,
// queue, run and answer an invocation the same way; they differ only in
// how they build the request.
type Invocations struct {
	// Invoker runs invocations.
	Invoker Invoker
	// Async queues the invocations that ask for it (Prefer:
	// respond-async). Nil runs them as if they had not asked.
	Async AsyncSink
	// Metrics counts the requests refused before they reach the Invoker
	// (a body over the function's max_request_body). Nil counts them
	// nowhere.
	Metrics *telemetry.Metrics
	// Logger receives the failures answered with a 5xx. Nil:
	// slog.Default().
	Logger *slog.Logger
}

// Serve answers one invocation of fn, a function of app. The caller has
// built req but for its body: Serve sets the invocation id and
// traceparent headers, charges the body to app (ChargeBody) and reads it
// with the function's max_request_body, then queues the invocation (when it asks to be and
// Async is set) or runs it and writes the guest's response. A failure is
// answered as apierror.FromInvocation maps it.
func (h *Invocations) Serve(w http.ResponseWriter, r *http.Request, app string, fn *model.Function, req *runtime.Request) {
	h.serve(w, r, app, fn, req, make([]string, 3))
}

// serve is Serve with the values of the response headers it sets in
// values (3 of them), so a caller can allocate them with others.
func (h *Invocations) serve(w http.ResponseWriter, r *http.Request, app string, fn *model.Function, req *runtime.Request, values []string) {
	hdr := w.Header()
	values[0], values[1] = req.InvocationID, req.TraceParent
	hdr[HeaderInvocationID] = values[0:1:1]
	hdr[HeaderTraceParent] = values[1:2:2]
	// A body over max_request_body is a 413 before it costs any budget.
	err := runtime.CheckRequestBody(r.ContentLength, fn.MaxRequestBytes)
	if err == nil {
		err = ChargeBody(r, app)
	}
	var body []byte
	if err == nil {
		body, err = ReadBody(w, r, fn.MaxRequestBytes)
	}
	if err != nil {
		e := h.fail(w, req, app, fn.Name, err)
		if h.Metrics != nil && refusedBody(err) {
			// The scheduler never sees it; count it as it would have.
			h.Metrics.Refused(app, fn.Name, e.Status, e.Code)
		}
		return
	}
	req.Body = body
	if h.Async != nil && WantsAsync(r.Header) {
		ServeAsync(w, r, h.Async, app, fn.Name, req)
		return
	}
	resp, err := h.Invoker.Invoke(r.Context(), app, fn.Name, req)
	if err != nil {
		h.fail(w, req, app, fn.Name, err)
		return
	}
	writeResponse(w, resp, values[2:3:3])
}

// refusedBody reports whether err refuses a request body: too large, over
// the body budget, or too slow.
func refusedBody(err error) bool {
	return errors.Is(err, runtime.ErrRequestTooLarge) || errors.Is(err, throttle.ErrOverBudget) || errors.Is(err, throttle.ErrBodyTooSlow)
}

// fail answers a failed invocation, logs it if it is the platform's or the
// guest's fault (5xx), and returns the answer.
func (h *Invocations) fail(w http.ResponseWriter, req *runtime.Request, app, fn string, err error) *apierror.Error {
	e := apierror.FromInvocation(app, fn, err)
	if e.Status >= 500 {
		logger := h.Logger
		if logger == nil {
			logger = slog.Default()
		}
		logger.Warn("invocation failed", "app", app, "function", fn, "invocation", req.InvocationID,
			"trace_id", traceID(req.TraceParent), "status", e.Status, "error", err)
	}
	apierror.Write(w, e)
	return e
}

// ReadBody reads a request body of at most limit bytes. A larger body
// fails with the error of runtime.CheckRequestBody (a *runtime.LimitError
// wrapping runtime.ErrRequestTooLarge): at once when its Content-Length
// says so, else once it has read one byte past the limit, so a body never
// costs more memory than that. A body whose length is known is read into
// one buffer of that size; one of unknown length grows its buffer by
// doubling, capped at limit+1. A read error is returned wrapped (a
// *throttle.SlowBodyError or *throttle.BudgetError from the Bodies
// wrapping the handler among them).
func ReadBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	if err := runtime.CheckRequestBody(r.ContentLength, limit); err != nil {
		return nil, err
	}
	// One byte past the limit tells a body over it from one just at it;
	// MaxBytesReader also has the server close the connection rather than
	// drain the rest.
	src := http.MaxBytesReader(w, r.Body, limit+1)
	size := int64(512)
	if r.ContentLength >= 0 {
		size = r.ContentLength + 1 // +1: room for the read that sees EOF
	}
	buf := make([]byte, 0, min(size, limit+1))
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) > limit {
				break
			}
			buf = slices.Grow(buf, int(min(int64(cap(buf)), limit+1-int64(len(buf)))))
		}
		n, err := src.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read request body: %w", err)
		}
	}
	if err := runtime.CheckRequestBody(int64(len(buf)), limit); err != nil {
		return nil, err
	}
	return buf, nil
}

// hopHeaders are connection-level headers a guest may not set.
var hopHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Transfer-Encoding": true,
	"Te": true, "Trailer": true, "Upgrade": true, "Content-Length": true,
}

// WriteResponse writes a guest response.
func WriteResponse(w http.ResponseWriter, resp *runtime.Response) {
	writeResponse(w, resp, make([]string, 1))
}

// writeResponse is WriteResponse with the value of Content-Length in
// length (1 long).
func writeResponse(w http.ResponseWriter, resp *runtime.Response, length []string) {
	h := w.Header()
	for k, vs := range resp.Header {
		k = http.CanonicalHeaderKey(k)
		if hopHeaders[k] {
			continue
		}
		h[k] = vs
	}
	length[0] = strconv.Itoa(len(resp.Body))
	h["Content-Length"] = length
	status := resp.Status
	if status == 0 {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	w.Write(resp.Body)
}
