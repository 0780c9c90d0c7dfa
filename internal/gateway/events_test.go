package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/apierror"
	"github.com/nimbus-dev/nimbus/internal/events"
	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
	"github.com/nimbus-dev/nimbus/internal/gateway"
	"github.com/nimbus-dev/nimbus/internal/registry"
)

// failingSink fails every publish with err.
type failingSink struct{ err error }

func (s failingSink) Publish(context.Context, string, string, []cloudevents.Event, string) (int, int, error) {
	return 0, 0, s.err
}

// TestServeEventsErrors: the event sink's typed errors become the API
// errors clients have always seen: status, code, and the error's own
// message.
func TestServeEventsErrors(t *testing.T) {
	notFound := &events.TopicError{App: "shop", Topic: "nope", Declared: []string{"orders", "audit"}, Err: events.ErrTopicNotFound}
	tooLarge := &events.EventTooLargeError{Topic: "orders", Index: 0, ID: "1", Size: 2000, Limit: 1024}
	for _, c := range []struct {
		err     error
		status  int
		code    string
		message string
	}{
		{notFound, 404, "topic_not_found",
			`app shop has no topic "nope" (declared: orders, audit); topics are declared under topics: in nimbus.yaml`},
		{&events.TopicError{App: "shop", Topic: "dead-letter", Err: events.ErrTopicReserved}, 403, "topic_reserved",
			"dead-letter is written by Nimbus with failed deliveries; publish to another topic"},
		{tooLarge, 413, "event_too_large", `event 0 (id "1") is 2000 bytes, over topic orders's max_event_size of 1024 bytes`},
		{fmt.Errorf("stream says: %w", events.ErrTooLarge), 413, "event_too_large", "stream says: event too large"},
		{fmt.Errorf("app \"shop\" is not deployed: %w", registry.ErrAppNotFound), 404, "app_not_found", "app \"shop\" is not deployed: app not found"},
		{errors.New("disk on fire"), 500, "internal", "disk on fire"},
		{apierror.New(http.StatusTeapot, "teapot", "short and stout"), 418, "teapot", "short and stout"},
	} {
		req := httptest.NewRequest("POST", "/_nimbus/events/shop/orders", strings.NewReader(`{"specversion":"1.0","id":"1","source":"/s","type":"t"}`))
		req.Header.Set("Content-Type", "application/cloudevents+json")
		w := httptest.NewRecorder()
		gateway.ServeEvents(w, req, failingSink{c.err}, "shop", "orders")
		var body apierror.Body
		if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body.Error == nil {
			t.Fatalf("%v: body %s: %v", c.err, w.Body, err)
		}
		if w.Code != c.status || body.Error.Code != c.code || body.Error.Message != c.message || w.Header().Get(apierror.Header) != c.code {
			t.Errorf("%v: %d %s %q, want %d %s %q", c.err, w.Code, body.Error.Code, body.Error.Message, c.status, c.code, c.message)
		}
	}
}

// backlogSink refuses publishes while its app lags, like the server's
// sink over events.Ingress, and accepts them once delivery caught up.
type backlogSink struct{ lag, max int }

func (s *backlogSink) Publish(_ context.Context, app, _ string, evs []cloudevents.Event, _ string) (int, int, error) {
	if s.lag > s.max {
		return 0, 0, &events.BackpressureError{App: app, Limit: events.LimitLag, Value: s.lag, Max: s.max, RetryAfter: 1500 * time.Millisecond}
	}
	return len(evs), 0, nil
}

// TestServeEventsBackpressure: over the app's lag budget, ingress answers
// 429 events_backlog with Retry-After (whole seconds, rounded up), and 202
// again once delivery caught up; over the node's budget, 503
// events_overloaded.
func TestServeEventsBackpressure(t *testing.T) {
	sink := &backlogSink{lag: 101, max: 100}
	post := func(sink gateway.EventSink) *httptest.ResponseRecorder {
		req := httptest.NewRequest("POST", "/_nimbus/events/shop/orders", strings.NewReader(`{"specversion":"1.0","id":"1","source":"/s","type":"t"}`))
		req.Header.Set("Content-Type", "application/cloudevents+json")
		w := httptest.NewRecorder()
		gateway.ServeEvents(w, req, sink, "shop", "orders")
		return w
	}
	w := post(sink)
	if w.Code != 429 || w.Header().Get("Retry-After") != "2" || w.Header().Get(apierror.Header) != "events_backlog" ||
		!strings.Contains(w.Body.String(), `app \"shop\" has 101 events waiting for delivery`) {
		t.Fatalf("over the lag budget: %d Retry-After %q %s", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	sink.lag = 100
	if w := post(sink); w.Code != 202 {
		t.Fatalf("caught up: %d %s", w.Code, w.Body)
	}
	w = post(failingSink{fmt.Errorf("publish: %w", &events.BackpressureError{Limit: events.LimitWindow, Value: 10, Max: 10, Window: 2 * time.Minute, RetryAfter: 30 * time.Second})})
	if w.Code != 503 || w.Header().Get("Retry-After") != "30" || w.Header().Get(apierror.Header) != "events_overloaded" {
		t.Fatalf("over the node's budget: %d Retry-After %q %s", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
}
