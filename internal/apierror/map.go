package apierror

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nimbus-dev/nimbus/internal/events"
	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/policy"
	"github.com/nimbus-dev/nimbus/internal/registry"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/scheduler"
	"github.com/nimbus-dev/nimbus/internal/security"
	"github.com/nimbus-dev/nimbus/internal/state"
	"github.com/nimbus-dev/nimbus/internal/store"
	"github.com/nimbus-dev/nimbus/internal/throttle"
	"github.com/nimbus-dev/nimbus/internal/workflow"
)

// Headers the mapping sets besides Header (X-Nimbus-Error).
const (
	// HeaderRetryAfter says, in whole seconds, when a request refused by
	// flow control may be retried.
	HeaderRetryAfter = "Retry-After"
	// HeaderFlow is "superseded" on the 202 of a request folded into a
	// later one by debounce.
	HeaderFlow = "Nimbus-Flow"
)

// StatusClientClosed is the status of an invocation whose caller went
// away (nginx's 499); nobody reads it but logs and metrics.
const StatusClientClosed = 499

// invocationStatus is the status of each reason of a failed invocation
// (scheduler.Reason); the reason is the error code. A flow control limit
// not listed is a 429.
var invocationStatus = map[string]int{
	scheduler.ReasonNotFound:         http.StatusNotFound,
	scheduler.ReasonRequestTooLarge:  http.StatusRequestEntityTooLarge,
	scheduler.ReasonTimeout:          http.StatusGatewayTimeout,
	scheduler.ReasonBusy:             http.StatusServiceUnavailable,
	scheduler.ReasonMemoryLimit:      http.StatusInternalServerError,
	scheduler.ReasonResponseTooLarge: http.StatusBadGateway,
	scheduler.ReasonGuestFailed:      http.StatusBadGateway,
	scheduler.ReasonCanceled:         StatusClientClosed,
	// Accepted, not refused: folded into a later request, which runs.
	throttle.ReasonSuperseded:              http.StatusAccepted,
	throttle.ReasonRevisionRetired:         http.StatusServiceUnavailable,
	"flow_" + throttle.LimitConcurrency:    http.StatusServiceUnavailable,
	"flow_" + throttle.LimitKeyConcurrency: http.StatusTooManyRequests,
	"flow_" + throttle.LimitRate:           http.StatusTooManyRequests,
	"flow_" + throttle.LimitDebounce:       http.StatusTooManyRequests,
}

// rule maps the errors it matches to a status and a code; message, when
// set, rewrites the error's own message.
type rule struct {
	match   func(error) bool
	status  int
	code    string
	message func(error) string
	details func(error) any
	header  func(error) http.Header
}

func is(target error) func(error) bool {
	return func(err error) bool { return errors.Is(err, target) }
}

func isAny(targets ...error) func(error) bool {
	return func(err error) bool {
		for _, t := range targets {
			if errors.Is(err, t) {
				return true
			}
		}
		return false
	}
}

func as[T error]() func(error) bool {
	return func(err error) bool {
		var t T
		return errors.As(err, &t)
	}
}

// rules map the errors of the control plane, in order: the first that
// matches decides. Lookups first (a missing app is a 404 whatever was asked
// of it), then the refusals of a publish, a deploy or rollback, and a
// key-value call.
var rules = []rule{
	{match: is(registry.ErrAppNotFound), status: http.StatusNotFound, code: "app_not_found"},
	{match: is(registry.ErrRevisionNotFound), status: http.StatusNotFound, code: "revision_not_found"},
	{match: is(registry.ErrFunctionNotFound), status: http.StatusNotFound, code: "function_not_found"},
	{match: is(events.ErrNoRecord), status: http.StatusNotFound, code: "invocation_not_found"},
	{match: is(workflow.ErrWorkflowNotFound), status: http.StatusNotFound, code: "workflow_not_found"},
	{match: is(workflow.ErrStartNotStored), status: http.StatusServiceUnavailable, code: "run_not_stored"},
	{match: is(workflow.ErrRunNotFound), status: http.StatusNotFound, code: "run_not_found"},
	{match: is(workflow.ErrRunConflict), status: http.StatusConflict, code: "run_conflict"},
	{match: is(workflow.ErrRunFinished), status: http.StatusConflict, code: "run_finished"},
	{match: is(workflow.ErrAlreadyCancelling), status: http.StatusConflict, code: "run_cancelling"},
	{match: is(workflow.ErrRunPaused), status: http.StatusConflict, code: "run_paused"},
	{match: is(workflow.ErrRunNotPaused), status: http.StatusConflict, code: "run_not_paused"},
	{match: is(workflow.ErrNotRetryable), status: http.StatusConflict, code: "run_not_retryable"},
	{match: is(workflow.ErrInvalid), status: http.StatusBadRequest, code: "invalid_run"},
	{match: is(workflow.ErrClosed), status: http.StatusServiceUnavailable, code: "shutting_down"},

	{match: is(events.ErrTopicNotFound), status: http.StatusNotFound, code: "topic_not_found"},
	{match: is(events.ErrTopicReserved), status: http.StatusForbidden, code: "topic_reserved"},
	{match: is(events.ErrTooLarge), status: http.StatusRequestEntityTooLarge, code: "event_too_large"},
	{match: as[*cloudevents.TooLargeError](), status: http.StatusRequestEntityTooLarge, code: "event_too_large"},
	{match: is(cloudevents.ErrUnsupportedFormat), status: http.StatusUnsupportedMediaType, code: "unsupported_event_format"},
	// Back-pressure: the app's own backlog is the client's to wait out
	// (429); the node's memory budget is the server's (503).
	{match: backpressure(events.LimitLag), status: http.StatusTooManyRequests, code: "events_backlog", header: backpressureRetry},
	{match: backpressure(events.LimitWindow), status: http.StatusServiceUnavailable, code: "events_overloaded", header: backpressureRetry},

	// A key of one tenant asking for another tenant's app (before the
	// rollback rule: a wrong-tenant rollback is this, not a failed one).
	{match: as[*model.TenantError](), status: http.StatusForbidden, code: "wrong_tenant"},
	// The operator's policy: a rule the deploy broke (the details list
	// each rule and its message), a count quota (403: the same request
	// will not pass until something is deleted or the quota raised), the
	// request rate (429: come back after Retry-After).
	{match: is(policy.ErrDenied), status: http.StatusForbidden, code: "policy_denied",
		details: func(err error) any {
			var de *policy.DeniedError
			errors.As(err, &de)
			return map[string]any{"violations": de.Violations}
		}},
	{match: quota(policy.QuotaRequestsPerSecond), status: http.StatusTooManyRequests, code: "quota_requests",
		header: func(err error) http.Header {
			var qe *policy.QuotaError
			errors.As(err, &qe)
			return http.Header{HeaderRetryAfter: {retryAfter(qe.RetryAfter)}}
		}},
	{match: is(policy.ErrQuota), status: http.StatusForbidden, code: "quota_exceeded",
		details: func(err error) any {
			var qe *policy.QuotaError
			errors.As(err, &qe)
			return map[string]any{"tenant": qe.Tenant, "quota": qe.Quota, "limit": qe.Limit, "used": qe.Used}
		}},

	// A rollback the registry refused, whatever the cause (before
	// ErrInvalid: a malformed revision id is a failed rollback).
	{match: as[*registry.RollbackError](), status: http.StatusConflict, code: "rollback_failed"},
	{match: is(runtime.ErrInvalidModule), status: http.StatusUnprocessableEntity, code: "invalid_module"},
	{match: is(scheduler.ErrNoRuntime), status: http.StatusUnprocessableEntity, code: "runtime_unavailable"},
	{match: is(state.ErrInvalidBucket), status: http.StatusBadRequest, code: "invalid_bucket"},
	// Before ErrConflict: a spec that conflicts with itself is invalid.
	{match: is(model.ErrInvalid), status: http.StatusBadRequest, code: "invalid_revision"},
	// The details name the route met and its owner (an app, or "nimbus
	// built-in"), for clients that act on it.
	{match: is(model.ErrConflict), status: http.StatusConflict, code: "route_conflict",
		details: func(err error) any {
			var ce *model.ConflictError
			if !errors.As(err, &ce) {
				return nil
			}
			return map[string]string{"owner": ce.OtherApp, "owner_function": ce.OtherFunction, "owner_route": ce.OtherRoute.Pattern()}
		}},
	{match: is(store.ErrNotFound), status: http.StatusBadRequest, code: "artifact_missing"},
	// The node refused a write to keep its store writable (free space
	// under the reserve); nothing was stored and it resumes by itself.
	{match: is(store.ErrDiskFull), status: http.StatusInsufficientStorage, code: "disk_full"},
	// A stream nats-server stopped after a failed write: the node must
	// restart (the message says so).
	{match: is(store.ErrStreamStopped), status: http.StatusServiceUnavailable, code: "store_stopped"},

	{match: as[*state.RevisionMismatchError](), status: http.StatusConflict, code: "revision_mismatch",
		details: func(err error) any {
			var m *state.RevisionMismatchError
			errors.As(err, &m)
			return map[string]uint64{"current": m.Current}
		}},
	{match: is(state.ErrKeyNotFound), status: http.StatusNotFound, code: "key_not_found"},
	{match: is(state.ErrBucketNotFound), status: http.StatusNotFound, code: "bucket_not_found",
		message: func(err error) string { return err.Error() + "; buckets are declared under buckets: in nimbus.yaml" }},
	{match: isAny(state.ErrInvalidKey, state.ErrInvalidName, state.ErrInvalidTTL, state.ErrTTLUnsupported),
		status: http.StatusBadRequest, code: "invalid_request"},
	{match: is(state.ErrValueTooLarge), status: http.StatusRequestEntityTooLarge, code: "value_too_large"},

	{match: is(security.ErrUnauthorized), status: http.StatusUnauthorized, code: "unauthorized"},
	{match: is(security.ErrForbidden), status: http.StatusForbidden, code: "forbidden"},

	// Request bodies refused by the edge's flow control: the node holds
	// its budget of bodies (come back later), or one came too slowly.
	// Either way the connection is closed: the rest of the body is not
	// read, not even the 256 KiB net/http would drain before answering.
	{match: is(throttle.ErrOverBudget), status: http.StatusServiceUnavailable, code: "body_budget",
		header: func(error) http.Header { return http.Header{HeaderRetryAfter: {"1"}, "Connection": {"close"}} }},
	{match: is(throttle.ErrBodyTooSlow), status: http.StatusRequestTimeout, code: "body_too_slow",
		header: func(error) http.Header { return http.Header{"Connection": {"close"}} }},
	{match: is(security.ErrSecretNotFound), status: http.StatusNotFound, code: "secret_not_found"},
	{match: is(security.ErrInvalidSecret), status: http.StatusBadRequest, code: "invalid_secret"},
}

// From is the one mapping from an error to what an HTTP client sees: its
// status, code, message and headers. An *Error in err's chain is the
// answer as it is. A failed invocation is answered by its reason
// (scheduler.Reason, which is the code): 404 not_found, 413
// request_too_large, 504 timeout, 503 busy, 500 memory_limit, 502
// response_too_large and guest_failed, 499 canceled; flow control's 202
// superseded (with Nimbus-Flow: superseded), 503 revision_retired and
// flow_concurrency, 429 for the other flow limits, each with Retry-After.
// The control plane's errors follow rules (see the table test), and so do
// the edge's refusals of request bodies: 503 body_budget with Retry-After
// (throttle.ErrOverBudget), 408 body_too_slow (throttle.ErrBodyTooSlow),
// both with Connection: close. Anything
// else is a 500 "internal" with the error's message.
func From(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	if reason := scheduler.Reason(err); reason != scheduler.ReasonInternal {
		return invocation(reason, err)
	}
	for _, r := range rules {
		if !r.match(err) {
			continue
		}
		e := &Error{Status: r.status, Code: r.code, Message: err.Error(), Err: err}
		if r.message != nil {
			e.Message = r.message(err)
		}
		if r.details != nil {
			e.Details = r.details(err)
		}
		if r.header != nil {
			e.Header = r.header(err)
		}
		return e
	}
	return &Error{Status: http.StatusInternalServerError, Code: "internal", Message: err.Error(), Err: err}
}

// quota matches a *policy.QuotaError of the given quota.
func quota(name string) func(error) bool {
	return func(err error) bool {
		var qe *policy.QuotaError
		return errors.As(err, &qe) && qe.Quota == name
	}
}

// backpressure matches an *events.BackpressureError of the given limit.
func backpressure(limit string) func(error) bool {
	return func(err error) bool {
		var be *events.BackpressureError
		return errors.As(err, &be) && be.Limit == limit
	}
}

// backpressureRetry is the Retry-After of an *events.BackpressureError.
func backpressureRetry(err error) http.Header {
	var be *events.BackpressureError
	errors.As(err, &be)
	return http.Header{HeaderRetryAfter: {retryAfter(be.RetryAfter)}}
}

// retryAfter is d in whole seconds, rounded up, at least 1.
func retryAfter(d time.Duration) string {
	return strconv.FormatInt(max(int64(math.Ceil(d.Seconds())), 1), 10)
}

// Status is the HTTP status From answers err with (200 for nil); the
// scheduler labels failed invocations in metrics with it.
func Status(err error) int {
	if err == nil {
		return http.StatusOK
	}
	return From(err).Status
}

// invocation is the answer to a failed invocation with the given reason.
func invocation(reason string, err error) *Error {
	status, ok := invocationStatus[reason]
	var le *throttle.LimitError
	isLimit := errors.As(err, &le)
	if !ok {
		status = http.StatusInternalServerError
		if isLimit {
			status = http.StatusTooManyRequests
		}
	}
	e := &Error{Status: status, Code: reason, Message: err.Error(), Err: err}
	switch {
	case errors.Is(err, throttle.ErrSuperseded):
		e.Header = http.Header{HeaderFlow: {"superseded"}}
	case errors.Is(err, throttle.ErrClosed), errors.Is(err, scheduler.ErrBusy):
		e.Header = http.Header{HeaderRetryAfter: {"1"}}
	case isLimit:
		e.Header = http.Header{HeaderRetryAfter: {retryAfter(le.RetryAfter)}}
	}
	return e
}

// limitField names the manifest field of each limit a function can hit.
var limitField = map[error]string{
	runtime.ErrTimeout:          "timeout",
	runtime.ErrMemoryLimit:      "memory",
	runtime.ErrRequestTooLarge:  "max_request_body",
	runtime.ErrResponseTooLarge: "max_response_body",
}

// FromInvocation is From for the failure of an invocation of app/fn over
// HTTP: the same status, code and headers, with a message that names the
// function and, for a limit it hit, the limit and where to change it.
func FromInvocation(app, fn string, err error) *Error {
	e := *From(err)
	msg := err.Error()
	if prefix := app + "/" + fn; !strings.Contains(msg, prefix) {
		msg = prefix + ": " + msg
	}
	var le *runtime.LimitError
	if errors.As(err, &le) {
		if field := limitField[le.Err]; field != "" {
			msg = fmt.Sprintf("%s/%s: %v: the function's %s is %s; raise functions.%s.%s in nimbus.yaml if this is expected",
				app, fn, le.Err, field, le.Limit, fn, field)
		}
	}
	e.Message = msg
	return &e
}
