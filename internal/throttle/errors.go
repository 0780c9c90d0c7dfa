package throttle

import (
	"errors"
	"fmt"
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

// Reasons of flow errors (Reason): metric labels, and the error codes the
// edge answers them with.
const (
	ReasonSuperseded      = "superseded"       // ErrSuperseded
	ReasonRevisionRetired = "revision_retired" // ErrClosed
	// A *LimitError's reason is "flow_" and its Limit:
	// flow_concurrency, flow_key_concurrency, flow_rate, flow_debounce.
	reasonLimitPrefix = "flow_"
)

// Reason names a flow error for metrics and logs, "" for errors that are
// not flow errors (and for nil): ReasonSuperseded, ReasonRevisionRetired,
// or "flow_" and the Limit of a *LimitError. How a caller answers each is
// the edge's to decide (package apierror): a superseded request was
// accepted and folded into a later one, a limit asks the caller to come
// back later (LimitError.RetryAfter when known).
func Reason(err error) string {
	if err == nil {
		return ""
	}
	if errors.Is(err, ErrSuperseded) {
		return ReasonSuperseded
	}
	if errors.Is(err, ErrClosed) {
		return ReasonRevisionRetired
	}
	var le *LimitError
	if errors.As(err, &le) {
		return reasonLimitPrefix + le.Limit
	}
	return ""
}
