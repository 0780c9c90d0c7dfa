package throttle

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"
)

// ErrSuperseded means a later request with the same key arrived within the
// debounce period: this one will not run, the later one carries its intent.
var ErrSuperseded = errors.New("flow: superseded by a later request with the same key (debounce)")

// ErrLimited is matched (errors.Is) by every *LimitError.
var ErrLimited = errors.New("flow: limited")

// ErrRateLimited is matched (errors.Is) by a *LimitError of a rate limit.
var ErrRateLimited = errors.New("flow: rate limited")

// ErrClosed means the Limiter was closed (its function revision retired)
// before the invocation could start; callers retry on the new revision's
// Limiter.
var ErrClosed = errors.New("flow: limiter closed")

// Limits, the values of LimitError.Limit.
const (
	LimitConcurrency    = "concurrency"     // Policy.MaxConcurrency
	LimitKeyConcurrency = "key_concurrency" // Policy.KeyConcurrency
	LimitRate           = "rate"            // Policy.Rate per Policy.Per
	LimitDebounce       = "debounce"        // waiting for the quiet period
)

// LimitError is returned by Acquire when an invocation could not start:
// either up front, because the rate limit would make it wait past the
// context's deadline (Err nil, RetryAfter set), or because the context
// ended while it waited (Err is the context's cause, so errors.Is(err,
// context.DeadlineExceeded) and context.Canceled work).
type LimitError struct {
	// Limit is what held the invocation back: LimitConcurrency,
	// LimitKeyConcurrency, LimitRate or LimitDebounce.
	Limit string
	// Key is the invocation's flow key.
	Key string
	// RetryAfter is the earliest the invocation could start, from when it
	// was refused, if known (rate limits); 0 when unknown.
	RetryAfter time.Duration
	// Err is the context's cause when the wait ended with the context.
	Err error
}

func (e *LimitError) Error() string {
	what := "max concurrency"
	switch e.Limit {
	case LimitKeyConcurrency:
		what = fmt.Sprintf("concurrency of key %q", e.Key)
	case LimitRate:
		what = fmt.Sprintf("rate limit of key %q", e.Key)
	case LimitDebounce:
		what = fmt.Sprintf("debounce of key %q", e.Key)
	}
	switch {
	case e.Err != nil:
		return fmt.Sprintf("flow: waited on %s: %v", what, e.Err)
	case e.RetryAfter > 0:
		return fmt.Sprintf("flow: %s reached: retry after %s", what, e.RetryAfter)
	}
	return fmt.Sprintf("flow: %s reached", what)
}

// Is matches ErrLimited, and ErrRateLimited for rate limits.
func (e *LimitError) Is(target error) bool {
	return target == ErrLimited || target == ErrRateLimited && e.Limit == LimitRate
}

// Unwrap returns the context's cause, if any.
func (e *LimitError) Unwrap() error { return e.Err }

// StatusOf maps a flow error to how an HTTP caller sees it, and reports
// false for errors that are not flow errors (and for nil):
//
//   - ErrSuperseded: 202 Accepted, reason "superseded": the request was
//     accepted and folded into a later one, which runs instead;
//   - rate or key concurrency limits: 429 Too Many Requests;
//   - the function's max concurrency: 503 Service Unavailable;
//   - ErrClosed: 503 (callers normally retry on the new revision first).
//
// retryAfter is the Retry-After header value in whole seconds (at least
// "1") for 429 and 503, "" otherwise. A wait ended by the client going away
// (context.Canceled) is still reported as a limit here; callers that
// distinguish 499 check context.Canceled first.
func StatusOf(err error) (status int, reason, retryAfter string, ok bool) {
	if err == nil {
		return 0, "", "", false
	}
	if errors.Is(err, ErrSuperseded) {
		return http.StatusAccepted, "superseded", "", true
	}
	if errors.Is(err, ErrClosed) {
		return http.StatusServiceUnavailable, "revision_retired", "1", true
	}
	var le *LimitError
	if !errors.As(err, &le) {
		return 0, "", "", false
	}
	secs := int64(math.Ceil(le.RetryAfter.Seconds()))
	if secs < 1 {
		secs = 1
	}
	status = http.StatusTooManyRequests
	if le.Limit == LimitConcurrency {
		status = http.StatusServiceUnavailable
	}
	return status, "flow_" + le.Limit, strconv.FormatInt(secs, 10), true
}
