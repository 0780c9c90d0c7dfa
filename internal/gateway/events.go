package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/nimbus-dev/nimbus/internal/apierror"
	"github.com/nimbus-dev/nimbus/internal/events"
	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
	"github.com/nimbus-dev/nimbus/internal/registry"
)

// EventSink accepts events for a topic; the server implements it. Publish
// returns only when every event is durably stored. Its errors are typed:
// events.ErrTopicNotFound, events.ErrTopicReserved, events.ErrTooLarge and
// registry.ErrAppNotFound are the client's to fix (see publishError).
type EventSink interface {
	Publish(ctx context.Context, app, topic string, evs []cloudevents.Event, traceparent string) (accepted, duplicates int, err error)
}

// EventsPattern is where the gateway accepts CloudEvents over HTTP (binary,
// structured and batched modes). The manifest reserves /_nimbus/ so no
// function route can take it.
const EventsPattern = "POST /_nimbus/events/{app}/{topic}"

// ingressLimits bound what one ingress request may carry; topics apply
// their own max_event_size after parsing.
var ingressLimits = cloudevents.Limits{MaxEventBytes: 1 << 20, MaxBatchBytes: 16 << 20, MaxBatchEvents: 10_000}

// SetEvents turns on CloudEvents ingress at EventsPattern.
func (g *Gateway) SetEvents(sink EventSink) { g.events.Store(&sink) }

// PublishResult is the answer to an accepted publish.
type PublishResult struct {
	// Accepted counts the events stored, duplicates included.
	Accepted int `json:"accepted"`
	// Duplicates counts events whose source and id were already accepted
	// within the duplicate window: stored once, delivered once.
	Duplicates int `json:"duplicates"`
}

// ServeEvents reads CloudEvents from r and publishes them to app/topic. The
// 202 answer means every event is on disk.
func ServeEvents(w http.ResponseWriter, r *http.Request, sink EventSink, app, topic string) {
	evs, _, err := ingressLimits.ReadRequest(r)
	if err != nil {
		apierror.Write(w, eventError(err))
		return
	}
	accepted, dups, err := sink.Publish(r.Context(), app, topic, evs, r.Header.Get("traceparent"))
	if err != nil {
		apierror.Write(w, publishError(err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	json.NewEncoder(w).Encode(PublishResult{Accepted: accepted, Duplicates: dups})
}

// publishError maps an EventSink's typed errors to API errors; the message
// is the error's own, which says what to fix. Any other error is a 500.
func publishError(err error) error {
	switch {
	case errors.Is(err, events.ErrTopicNotFound):
		return apierror.Wrap(http.StatusNotFound, "topic_not_found", err)
	case errors.Is(err, events.ErrTopicReserved):
		return apierror.Wrap(http.StatusForbidden, "topic_reserved", err)
	case errors.Is(err, events.ErrTooLarge):
		return apierror.Wrap(http.StatusRequestEntityTooLarge, "event_too_large", err)
	case errors.Is(err, registry.ErrAppNotFound):
		return apierror.Wrap(http.StatusNotFound, "app_not_found", err)
	}
	return err
}

// eventError maps CloudEvents parse errors to API errors: what was wrong
// with which attribute of which event.
func eventError(err error) error {
	var tooLarge *cloudevents.TooLargeError
	switch {
	case errors.As(err, &tooLarge):
		return apierror.Wrap(http.StatusRequestEntityTooLarge, "event_too_large", err)
	case errors.Is(err, cloudevents.ErrUnsupportedFormat):
		return apierror.Wrap(http.StatusUnsupportedMediaType, "unsupported_event_format", err)
	}
	return apierror.Wrap(http.StatusBadRequest, "invalid_event", err)
}
