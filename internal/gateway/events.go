package gateway

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/nimbus-dev/nimbus/internal/apierror"
	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
)

// EventSink accepts events for a topic; the server implements it. Publish
// returns only when every event is durably stored. Its errors are typed:
// events.ErrTopicNotFound, events.ErrTopicReserved, events.ErrTooLarge and
// registry.ErrAppNotFound are the client's to fix (apierror.From answers
// them).
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

// ServeEvents reads CloudEvents from r and publishes them to app/topic,
// its body charged to app (ChargeBody). The 202 answer means every event
// is on disk.
func ServeEvents(w http.ResponseWriter, r *http.Request, sink EventSink, app, topic string) {
	// A body over every ingress limit is a 413 from ReadRequest before it
	// costs any budget.
	if r.ContentLength <= ingressLimits.MaxBatchBytes {
		if err := ChargeBody(r, app); err != nil {
			apierror.Write(w, err)
			return
		}
	}
	evs, _, err := ingressLimits.ReadRequest(r)
	if err != nil {
		apierror.Write(w, eventError(err))
		return
	}
	accepted, dups, err := sink.Publish(r.Context(), app, topic, evs, r.Header.Get("traceparent"))
	if err != nil {
		apierror.Write(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	json.NewEncoder(w).Encode(PublishResult{Accepted: accepted, Duplicates: dups})
}

// eventError answers an error of reading events from a request. Every
// one is the client's: apierror.From knows the size and format ones; any
// other is an invalid event, with what was wrong with which attribute of
// which event.
func eventError(err error) error {
	if e := apierror.From(err); e.Status != http.StatusInternalServerError {
		return e
	}
	return apierror.Wrap(http.StatusBadRequest, "invalid_event", err)
}
