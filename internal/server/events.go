package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/nimbus-dev/nimbus/internal/apierror"
	"github.com/nimbus-dev/nimbus/internal/events"
	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/registry"
	"github.com/nimbus-dev/nimbus/internal/telemetry"
)

// appNotFound is the error for an app that is not deployed.
func appNotFound(app string) error {
	return apierror.New(http.StatusNotFound, "app_not_found", notDeployedError{app}.Error())
}

// notDeployedError is an app without an active revision, for callers that
// map errors themselves (Publish); it matches registry.ErrAppNotFound.
type notDeployedError struct{ app string }

func (e notDeployedError) Error() string {
	return fmt.Sprintf("app %q is not deployed; `nimbus ls` lists apps", e.app)
}

func (e notDeployedError) Is(target error) bool { return target == registry.ErrAppNotFound }

// Publish appends events to a topic of an active app. It returns once every
// event is durably stored (fsynced), with how many were duplicates of events
// already accepted (same source and id) within the duplicate window. Its
// errors are typed for the callers to map (gateway to HTTP, the capability
// service to guest codes): an *events.TopicError (events.ErrTopicNotFound,
// events.ErrTopicReserved), an error matching events.ErrTooLarge, or one
// matching registry.ErrAppNotFound.
func (s *Server) Publish(ctx context.Context, app, topic string, evs []cloudevents.Event, traceparent string) (accepted, duplicates int, err error) {
	rev := s.activeRevision(app)
	if rev == nil {
		return 0, 0, notDeployedError{app}
	}
	i := slices.IndexFunc(rev.Topics, func(t model.Topic) bool { return t.Name == topic })
	if i < 0 {
		var names []string
		for _, t := range rev.Topics {
			if t.Name != model.DeadLetterTopic {
				names = append(names, t.Name)
			}
		}
		return 0, 0, &events.TopicError{App: app, Topic: topic, Declared: names, Err: events.ErrTopicNotFound}
	}
	if topic == model.DeadLetterTopic {
		return 0, 0, &events.TopicError{App: app, Topic: topic, Err: events.ErrTopicReserved}
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
			return 0, 0, &events.EventTooLargeError{Topic: topic, Index: j, ID: e.ID, Size: len(entries[j].Data), Limit: limit}
		}
	}
	for len(entries) > 0 {
		n := min(len(entries), events.DefaultMaxBatch)
		acks, err := s.events.Append(ctx, entries[:n]...)
		if err != nil {
			if errors.Is(err, events.ErrTooLarge) {
				return accepted, duplicates, err // unwrapped: clients see its message as it is
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
