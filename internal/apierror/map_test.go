package apierror_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/apierror"
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
)

// TestFrom is the map from every domain error to what a client sees: the
// status, the stable code and the headers. The codes are a contract
// (docs/api.md); a change here is a change of the API.
func TestFrom(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("context: %w", err) }
	limit := func(sentinel error, l string) error { return &runtime.LimitError{Err: sentinel, Limit: l} }
	for _, c := range []struct {
		err    error
		status int
		code   string
		header http.Header
	}{
		// Invocations: the code is scheduler.Reason.
		{wrap(scheduler.ErrNotFound), 404, "not_found", nil},
		{limit(runtime.ErrRequestTooLarge, "1KiB"), 413, "request_too_large", nil},
		{runtime.CheckRequestBody(2, 1), 413, "request_too_large", nil},
		{limit(runtime.ErrTimeout, "1s"), 504, "timeout", nil},
		{wrap(scheduler.ErrBusy), 503, "busy", http.Header{"Retry-After": {"1"}}},
		{fmt.Errorf("%w: a/f: %w", scheduler.ErrBusy, &throttle.WaitError{App: "a", Scope: throttle.ScopeApp, Limit: 2}), 503, "busy", http.Header{"Retry-After": {"1"}}},
		{limit(runtime.ErrMemoryLimit, "64MiB"), 500, "memory_limit", nil},
		{limit(runtime.ErrResponseTooLarge, "6MiB"), 502, "response_too_large", nil},
		{wrap(runtime.ErrGuestFailed), 502, "guest_failed", nil},
		{wrap(context.Canceled), 499, "canceled", nil},
		{wrap(throttle.ErrSuperseded), 202, "superseded", http.Header{"Nimbus-Flow": {"superseded"}}},
		{wrap(throttle.ErrClosed), 503, "revision_retired", http.Header{"Retry-After": {"1"}}},
		{&throttle.LimitError{Limit: throttle.LimitRate, Key: "k", RetryAfter: 3656200 * time.Millisecond}, 429, "flow_rate", http.Header{"Retry-After": {"3657"}}},
		{&throttle.LimitError{Limit: throttle.LimitKeyConcurrency, Key: "k"}, 429, "flow_key_concurrency", http.Header{"Retry-After": {"1"}}},
		{&throttle.LimitError{Limit: throttle.LimitDebounce, Key: "k"}, 429, "flow_debounce", http.Header{"Retry-After": {"1"}}},
		{&throttle.LimitError{Limit: throttle.LimitConcurrency, Err: context.DeadlineExceeded}, 503, "flow_concurrency", http.Header{"Retry-After": {"1"}}},
		// The caller went away while it waited: 499, the limit's header kept.
		{&throttle.LimitError{Limit: throttle.LimitConcurrency, Err: context.Canceled}, 499, "canceled", http.Header{"Retry-After": {"1"}}},

		// Back-pressure of publishes.
		{&events.BackpressureError{App: "a", Limit: events.LimitLag, Value: 11, Max: 10, RetryAfter: time.Second}, 429, "events_backlog", http.Header{"Retry-After": {"1"}}},
		{fmt.Errorf("publish: %w", &events.BackpressureError{Limit: events.LimitWindow, Value: 11, Max: 10, RetryAfter: 2100 * time.Millisecond}), 503, "events_overloaded", http.Header{"Retry-After": {"3"}}},

		// Lookups.
		{wrap(registry.ErrAppNotFound), 404, "app_not_found", nil},
		{wrap(registry.ErrRevisionNotFound), 404, "revision_not_found", nil},
		{wrap(registry.ErrFunctionNotFound), 404, "function_not_found", nil},
		{wrap(events.ErrNoRecord), 404, "invocation_not_found", nil},

		// Publishing events.
		{&events.TopicError{App: "a", Topic: "t", Err: events.ErrTopicNotFound}, 404, "topic_not_found", nil},
		{&events.TopicError{App: "a", Topic: "dead-letter", Replay: true, Err: events.ErrTopicReserved}, 403, "topic_reserved", nil},
		{&events.EventTooLargeError{Topic: "t", Size: 2, Limit: 1}, 413, "event_too_large", nil},
		{wrap(events.ErrTooLarge), 413, "event_too_large", nil},
		{&cloudevents.TooLargeError{}, 413, "event_too_large", nil},
		{wrap(cloudevents.ErrUnsupportedFormat), 415, "unsupported_event_format", nil},

		// Deploys and rollbacks.
		{&model.ConflictError{App: "a", OtherApp: "b"}, 409, "route_conflict", nil},
		{wrap(runtime.ErrInvalidModule), 422, "invalid_module", nil},
		{wrap(scheduler.ErrNoRuntime), 422, "runtime_unavailable", nil},
		{fmt.Errorf("bucket b: %w: %w", state.ErrInvalidBucket, state.ErrInvalidTTL), 400, "invalid_bucket", nil},
		{wrap(model.ErrInvalid), 400, "invalid_revision", nil},
		// A spec conflicting with itself is invalid (the server marks it so).
		{errors.Join(model.ErrInvalid, &model.ConflictError{}), 400, "invalid_revision", nil},
		{wrap(store.ErrNotFound), 400, "artifact_missing", nil},
		{fmt.Errorf("publish: %w", &store.DiskFullError{Dir: "/d", Free: 1, Reserve: 2}), 507, "disk_full", nil},
		{fmt.Errorf("publish: %w", &store.StreamStoppedError{Stream: "S", Cause: "no space left on device"}), 503, "store_stopped", nil},
		{&registry.RollbackError{Err: fmt.Errorf("rollback shop: %w", &model.TenantError{App: "shop", Tenant: "a", Caller: "b"})}, 403, "wrong_tenant", nil},
		{fmt.Errorf("delete: %w", &model.TenantError{App: "shop", Tenant: "a", Caller: "b"}), 403, "wrong_tenant", nil},
		{&registry.RollbackError{Err: registry.ErrNoPreviousRevision}, 409, "rollback_failed", nil},
		// The operator's policy and quotas.
		{fmt.Errorf("deploy: %w", &policy.DeniedError{App: "a", Violations: []policy.Violation{{Rule: "r", Message: "m"}}}), 403, "policy_denied", nil},
		{&policy.QuotaError{Tenant: "t", Quota: policy.QuotaApps, Limit: 1}, 403, "quota_exceeded", nil},
		{fmt.Errorf("put: %w", &policy.QuotaError{Tenant: "t", Quota: policy.QuotaKVBytes, Limit: 1}), 403, "quota_exceeded", nil},
		{&policy.QuotaError{Tenant: "t", Quota: policy.QuotaRequestsPerSecond, Limit: 1, RetryAfter: 1500 * time.Millisecond}, 429, "quota_requests", http.Header{"Retry-After": {"2"}}},
		{&registry.RollbackError{Err: wrap(model.ErrInvalid)}, 409, "rollback_failed", nil},
		{&registry.RollbackError{Err: wrap(registry.ErrRevisionNotFound)}, 404, "revision_not_found", nil},

		// Key-value state.
		{&state.RevisionMismatchError{Current: 7}, 409, "revision_mismatch", nil},
		{wrap(state.ErrKeyNotFound), 404, "key_not_found", nil},
		{wrap(state.ErrBucketNotFound), 404, "bucket_not_found", nil},
		{wrap(state.ErrInvalidKey), 400, "invalid_request", nil},
		{wrap(state.ErrInvalidName), 400, "invalid_request", nil},
		{wrap(state.ErrInvalidTTL), 400, "invalid_request", nil},
		{wrap(state.ErrTTLUnsupported), 400, "invalid_request", nil},
		{wrap(state.ErrValueTooLarge), 413, "value_too_large", nil},

		{wrap(security.ErrUnauthorized), 401, "unauthorized", nil},
		{wrap(security.ErrForbidden), 403, "forbidden", nil},

		// Request bodies refused at the edge.
		{wrap(&throttle.BudgetError{App: "a", Scope: throttle.ScopeNode, Limit: 1 << 20, Body: 1 << 10, Fits: true}), 503, "body_budget", http.Header{"Retry-After": {"1"}, "Connection": {"close"}}},
		{&throttle.SlowBodyError{Read: 10, Err: os.ErrDeadlineExceeded}, 408, "body_too_slow", http.Header{"Connection": {"close"}}},

		// An *Error in the chain is the answer; anything else is internal.
		{wrap(apierror.New(http.StatusTeapot, "teapot", "short and stout")), 418, "teapot", nil},
		{errors.New("disk on fire"), 500, "internal", nil},
	} {
		documented(t, c.status, c.code)
		e := apierror.From(c.err)
		if e.Status != c.status || e.Code != c.code || fmt.Sprint(e.Header) != fmt.Sprint(c.header) {
			t.Errorf("From(%v) = %d %s %v, want %d %s %v", c.err, e.Status, e.Code, e.Header, c.status, c.code, c.header)
		}
		if got := apierror.Status(c.err); got != c.status {
			t.Errorf("Status(%v) = %d, want %d", c.err, got, c.status)
		}
	}
	if got := apierror.Status(nil); got != http.StatusOK {
		t.Errorf("Status(nil) = %d", got)
	}
}

// undocumented are codes of TestFrom that docs/api.md leaves out: a
// test-only code, and the status of a caller that went away (it reaches
// only logs and metrics).
var undocumented = map[string]bool{"teapot": true, "canceled": true}

// documented fails the test unless docs/api.md's error table lists code in
// a row of its status.
func documented(t *testing.T, status int, code string) {
	t.Helper()
	if undocumented[code] {
		return
	}
	for _, row := range errorTable(t) {
		if strings.Contains(row[0], strconv.Itoa(status)) && strings.Contains(row[1], "`"+code+"`") {
			return
		}
	}
	t.Errorf("docs/api.md: the Errors table has no `%s` in its %d row", code, status)
}

// errorTable is the rows (status cell, codes cell) of the table under
// "## Errors" in docs/api.md.
func errorTable(t *testing.T) [][2]string {
	t.Helper()
	b, err := os.ReadFile("../../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Errors\n")
	if !ok {
		t.Fatal("docs/api.md has no ## Errors section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var rows [][2]string
	for _, line := range strings.Split(section, "\n") {
		cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		if !strings.HasPrefix(line, "|") || len(cells) < 2 {
			continue
		}
		rows = append(rows, [2]string{cells[0], cells[1]})
	}
	return rows
}

// TestFromMessages: the message is the error's own, which says what to
// fix, with the few additions the mapping makes.
func TestFromMessages(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{errors.New("disk on fire"), "disk on fire"},
		{fmt.Errorf("bucket shop/b: %w", state.ErrBucketNotFound), "bucket shop/b: bucket not found; buckets are declared under buckets: in nimbus.yaml"},
		{&events.TopicError{App: "shop", Topic: "nope", Declared: []string{"orders"}, Replay: true, Err: events.ErrTopicNotFound},
			`app shop has no topic "nope" (declared: orders)`},
		{&events.TopicError{App: "shop", Topic: "dead-letter", Replay: true, Err: events.ErrTopicReserved},
			"replaying to dead-letter would only file the events again as dead letters; name a topic with triggers"},
	} {
		if got := apierror.From(c.err).Message; got != c.want {
			t.Errorf("From(%v).Message = %q, want %q", c.err, got, c.want)
		}
	}
	var owner map[string]string
	b, _ := json.Marshal(apierror.From(fmt.Errorf("deploy b: %w", &model.ConflictError{App: "b", OtherApp: "a",
		OtherFunction: "probe", OtherRoute: model.Route{Method: "GET", Path: "/probe"}})).Details)
	if json.Unmarshal(b, &owner); owner["owner"] != "a" || owner["owner_function"] != "probe" || owner["owner_route"] != "GET /probe" {
		t.Errorf("route conflict details: %s", b)
	}
	var details map[string]uint64
	b, _ = json.Marshal(apierror.From(&state.RevisionMismatchError{Current: 7}).Details)
	if json.Unmarshal(b, &details); details["current"] != 7 {
		t.Errorf("revision mismatch details: %s", b)
	}
}

// TestFromInvocation: an invocation's failure names the function and, for
// a limit, the manifest field to raise.
func TestFromInvocation(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{runtime.CheckRequestBody(2048, 1024), "shop/f: request body too large: the function's max_request_body is 1KiB; raise functions.f.max_request_body in nimbus.yaml if this is expected"},
		{&runtime.LimitError{Err: runtime.ErrTimeout, Limit: "2s"}, "shop/f: function timed out: the function's timeout is 2s; raise functions.f.timeout in nimbus.yaml if this is expected"},
		{errors.New("guest said no"), "shop/f: guest said no"},
		{fmt.Errorf("%w: shop/f", scheduler.ErrNotFound), "function not found: shop/f"},
	} {
		e := apierror.FromInvocation("shop", "f", c.err)
		if e.Message != c.want {
			t.Errorf("FromInvocation(%v).Message = %q, want %q", c.err, e.Message, c.want)
		}
		if from := apierror.From(c.err); e.Status != from.Status || e.Code != from.Code {
			t.Errorf("FromInvocation(%v) = %d %s, From = %d %s", c.err, e.Status, e.Code, from.Status, from.Code)
		}
	}
}

// TestWrite: the answer carries the mapping's headers and the error code
// header, and the JSON envelope.
func TestWrite(t *testing.T) {
	w := httptest.NewRecorder()
	apierror.Write(w, &throttle.LimitError{Limit: throttle.LimitRate, Key: "k", RetryAfter: 1500 * time.Millisecond})
	var body apierror.Body
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body.Error == nil {
		t.Fatalf("body %s: %v", w.Body, err)
	}
	if w.Code != 429 || w.Header().Get("Retry-After") != "2" || w.Header().Get(apierror.Header) != "flow_rate" || body.Error.Code != "flow_rate" {
		t.Fatalf("answer %d %v %s", w.Code, w.Header(), w.Body)
	}
}
