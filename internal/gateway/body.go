package gateway

import (
	"errors"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/nimbus-dev/nimbus/internal/throttle"
)

// Bodies is the flow control of request bodies on a listener (the gateway
// and the API each wrap their handler with Handler): every body must
// arrive at Rate, and a body a handler charges to an app (ChargeBody)
// counts against Budget until the handler returns.
type Bodies struct {
	// Budget bounds the bytes of charged bodies held at once. Nil:
	// unbounded.
	Budget *throttle.Budget
	// Rate is how fast every body must arrive; its zero value is the
	// default (throttle.BodyRate).
	Rate throttle.BodyRate
}

// chargeGranule is how many bytes a body of unknown length is charged at
// a time, so the budget's lock is taken once per granule, not per read.
const chargeGranule = throttle.SmallBody

// Handler wraps h: each request's body is read through a reader that
// holds the connection's read deadline to Rate (a body that falls behind
// fails its read with a *throttle.SlowBodyError), and whatever the body
// was charged is given back when h returns, after the response is
// written: a body is held no longer than its request.
func (b *Bodies) Handler(h http.Handler) http.Handler {
	rate := b.Rate.WithDefaults()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			h.ServeHTTP(w, r)
			return
		}
		body := &limitedBody{rc: r.Body, ctl: http.NewResponseController(w), rate: rate,
			budget: b.Budget, length: r.ContentLength}
		// A shallow copy, as http.MaxBytesHandler does: the server keeps
		// its own request, whose body it inspects after the handler (an
		// unread body over 256 KiB closes the connection rather than be
		// drained before the answer).
		r2 := new(http.Request)
		*r2 = *r
		r2.Body = body
		defer body.finish()
		h.ServeHTTP(w, r2)
	})
}

// ChargeBody counts r's body against app's share of the body budget of the
// Bodies that wraps the handler: its whole Content-Length at once when it
// is known (refused before a byte is read, and before a buffer is
// allocated for it, if it does not fit), else as its bytes arrive, a
// granule at a time. A refusal is a *throttle.BudgetError, returned here
// or by the body's Read. Call it before reading the body; without a
// Bodies (or a budget) it does nothing.
func ChargeBody(r *http.Request, app string) error {
	body, ok := r.Body.(*limitedBody)
	if !ok || body.budget == nil || body.hold != nil {
		return nil
	}
	body.hold = body.budget.Hold(app)
	if body.length > 0 {
		if err := body.hold.Grow(body.length); err != nil {
			body.err = err
			return err
		}
	}
	return nil
}

// BodyError returns why the edge stopped r's body, if it did: the
// *throttle.BudgetError or *throttle.SlowBodyError its Read returned. A
// handler whose reader hides read errors (a JSON decoder says "unexpected
// EOF") answers this instead.
func BodyError(r *http.Request) error {
	if body, ok := r.Body.(*limitedBody); ok {
		return body.err
	}
	return nil
}

// limitedBody is a request body read under a BodyRate and, once charged,
// a budget Hold.
type limitedBody struct {
	rc     io.ReadCloser
	ctl    *http.ResponseController
	rate   throttle.BodyRate
	budget *throttle.Budget
	length int64          // Content-Length, -1 when unknown
	hold   *throttle.Hold // nil until ChargeBody

	start    time.Time // first Read
	n        int64     // bytes read
	deadline time.Time // the read deadline set last; zero when none is set
	eof      bool
	err      error // sticky: a budget refusal or a slow body
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.eof {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	// Bytes of unknown length are charged before they are read, so the
	// caller never holds more than was charged.
	if b.hold != nil && b.length <= 0 {
		if b.n+int64(len(p)) > b.hold.Bytes() {
			if err := b.hold.Grow(chargeGranule); err != nil {
				b.err = err
				b.clearDeadline()
				return 0, err
			}
		}
		p = p[:min(int64(len(p)), b.hold.Bytes()-b.n)]
	}
	if !b.rate.Off() {
		now := time.Now()
		if b.start.IsZero() {
			b.start = now
		}
		if d := b.rate.Deadline(b.start, b.n); !d.Equal(b.deadline) {
			b.ctl.SetReadDeadline(d) // fails only where deadlines do not exist (tests' recorders)
			b.deadline = d
		}
	}
	n, err := b.rc.Read(p)
	b.n += int64(n)
	switch {
	case err == io.EOF:
		b.eof = true
		// The server's background read (which notices a client that
		// went away) runs from here on; a deadline left set would end
		// it, and the request's context with it. (net/http clears the
		// deadline itself when it starts that read; this does not
		// depend on it.)
		b.clearDeadline()
	case err != nil && errors.Is(err, os.ErrDeadlineExceeded):
		b.err = &throttle.SlowBodyError{Read: b.n, Elapsed: time.Since(b.start), Rate: b.rate, Err: err}
		return n, b.err
	}
	return n, err
}

func (b *limitedBody) Close() error { return b.rc.Close() }

func (b *limitedBody) clearDeadline() {
	if !b.deadline.IsZero() {
		b.ctl.SetReadDeadline(time.Time{})
		b.deadline = time.Time{}
	}
}

// finish runs when the handler has returned: the charge is given back,
// and a body the handler left unread (refused, or not wanted) gets a
// deadline of its grace for what the server still reads of it (it drains
// up to 256 KiB before it answers, to keep the connection), so a client
// cannot hold the connection, or its answer, by trickling it.
func (b *limitedBody) finish() {
	if b.hold != nil {
		b.hold.Release()
	}
	if !b.eof && !b.rate.Off() {
		b.ctl.SetReadDeadline(time.Now().Add(b.rate.Grace))
	}
}
