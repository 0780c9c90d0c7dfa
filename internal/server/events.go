package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/nimbus-dev/nimbus/internal/apierror"
	"github.com/nimbus-dev/nimbus/internal/events"
	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/telemetry"
)

// appNotFound is the error for an app that is not deployed.
func appNotFound(app string) error {
	return apierror.New(http.StatusNotFound, "app_not_found", fmt.Sprintf("app %q is not deployed; `nimbus ls` lists apps", app))
}

// Publish appends events to a topic of an active app. It returns once every
// event is durably stored (fsynced), with how many were duplicates of events
// already accepted (same source and id) within the duplicate window.
func (s *Server) Publish(ctx context.Context, app, topic string, evs []cloudevents.Event, traceparent string) (accepted, duplicates int, err error) {
	rev := s.activeRevision(app)
	if rev == nil {
		return 0, 0, appNotFound(app)
	}
	i := slices.IndexFunc(rev.Topics, func(t model.Topic) bool { return t.Name == topic })
	if i < 0 {
		var names []string
		for _, t := range rev.Topics {
			if t.Name != model.DeadLetterTopic {
				names = append(names, t.Name)
			}
		}
		return 0, 0, apierror.New(http.StatusNotFound, "topic_not_found",
			fmt.Sprintf("app %s has no topic %q (declared: %s); topics are declared under topics: in nimbus.yaml", app, topic, strings.Join(names, ", ")))
	}
	if topic == model.DeadLetterTopic {
		return 0, 0, apierror.New(http.StatusForbidden, "topic_reserved",
			fmt.Sprintf("%s is written by Nimbus with failed deliveries; publish to another topic", topic))
	}
	limit := rev.Topics[i].MaxEventBytes
	entries := make([]events.Entry, len(evs))
	for j := range evs {
		e := &evs[j]
		if e.Extensions == nil {
			e.Extensions = map[string]string{}
		}
		if _, ok := e.Extensions["traceparent"]; !ok {
			// The trace runs from the publisher to every subscriber.
			e.Extensions["traceparent"] = telemetry.Continue(traceparent).String()
		}
		entries[j] = events.EventEntry(app, topic, e)
		if limit > 0 && int64(len(entries[j].Data)) > limit {
			return 0, 0, apierror.New(http.StatusRequestEntityTooLarge, "event_too_large",
				fmt.Sprintf("event %d (id %q) is %d bytes, over topic %s's max_event_size of %d bytes", j, e.ID, len(entries[j].Data), topic, limit))
		}
	}
	for len(entries) > 0 {
		n := min(len(entries), events.DefaultMaxBatch)
		acks, err := s.events.Append(ctx, entries[:n]...)
		if err != nil {
			if errors.Is(err, events.ErrTooLarge) {
				return accepted, duplicates, apierror.Wrap(http.StatusRequestEntityTooLarge, "event_too_large", err)
			}
			return accepted, duplicates, fmt.Errorf("publish to %s/%s: %w", app, topic, err)
		}
		for _, a := range acks {
			accepted++
			if a.Duplicate {
				duplicates++
			}
		}
		entries = entries[n:]
	}
	return accepted, duplicates, nil
}
