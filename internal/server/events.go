package server

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/nimbus-dev/nimbus/internal/events"
	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/registry"
	"github.com/nimbus-dev/nimbus/internal/telemetry"
)

// notFoundError is a lookup miss of the server's (an app not deployed, a
// function its active revision lacks, an unknown async invocation) with a
// message that says what to do; it matches its sentinel
// (registry.ErrAppNotFound, registry.ErrFunctionNotFound,
// events.ErrNoRecord), which the edge maps to a 404.
type notFoundError struct {
	msg      string
	sentinel error
}

func (e *notFoundError) Error() string        { return e.msg }
func (e *notFoundError) Is(target error) bool { return target == e.sentinel }

// appNotFound is the error for an app that is not deployed.
func appNotFound(app string) error {
	return &notFoundError{fmt.Sprintf("app %q is not deployed; `nimbus ls` lists apps", app), registry.ErrAppNotFound}
}

// Publish appends events to a topic of an active app. It returns once every
// event is durably stored (fsynced), with how many were duplicates of events
// already accepted (same source and id) within the duplicate window. Its
// errors are typed for the callers to map (gateway to HTTP, the capability
// service to guest codes): an *events.TopicError (events.ErrTopicNotFound,
// events.ErrTopicReserved), an error matching events.ErrTooLarge, one
// matching registry.ErrAppNotFound, or an *events.BackpressureError when
// the app's triggers lag too far behind or the node holds too many ids in
// the duplicate window (nothing was stored; retry after its RetryAfter).
func (s *Server) Publish(ctx context.Context, app, topic string, evs []cloudevents.Event, traceparent string) (accepted, duplicates int, err error) {
	return s.publish(ctx, app, topic, evs, traceparent, true)
}

// CheckPublish answers what Publish of e would for the topic, the event's
// size and the app's back-pressure, without publishing it
// (capability.Publisher). e gets its traceparent, as Publish gives it.
func (s *Server) CheckPublish(ctx context.Context, app, topic string, e *cloudevents.Event) error {
	entries, err := s.publishEntries(app, topic, []cloudevents.Event{*e}, "")
	if err != nil {
		return err
	}
	if err := s.events.Check(&entries[0]); err != nil {
		return err
	}
	return s.ingress.Admit(ctx, app, 1)
}

// publish is Publish; admit false skips the back-pressure check (the
// event of a committed workflow step, checked when the step made it).
func (s *Server) publish(ctx context.Context, app, topic string, evs []cloudevents.Event, traceparent string, admit bool) (accepted, duplicates int, err error) {
	entries, err := s.publishEntries(app, topic, evs, traceparent)
	if err != nil {
		return 0, 0, err
	}
	if admit {
		if err := s.ingress.Admit(ctx, app, len(entries)); err != nil {
			return 0, 0, err
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

// publishEntries checks that app publishes to topic, a topic it declares,
// and makes the entries of evs, each within the topic's size limit. An
// event without a traceparent gets a child of traceparent.
func (s *Server) publishEntries(app, topic string, evs []cloudevents.Event, traceparent string) ([]events.Entry, error) {
	rev := s.activeRevision(app)
	if rev == nil {
		return nil, appNotFound(app)
	}
	i := slices.IndexFunc(rev.Topics, func(t model.Topic) bool { return t.Name == topic })
	if i < 0 {
		return nil, &events.TopicError{App: app, Topic: topic, Declared: publicTopics(rev), Err: events.ErrTopicNotFound}
	}
	if topic == model.DeadLetterTopic {
		return nil, &events.TopicError{App: app, Topic: topic, Err: events.ErrTopicReserved}
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
			return nil, &events.EventTooLargeError{Topic: topic, Index: j, ID: e.ID, Size: len(entries[j].Data), Limit: limit}
		}
	}
	return entries, nil
}

// publicTopics are the topics of rev a publisher may name: all but the
// dead-letter topic.
func publicTopics(rev *model.Revision) []string {
	var names []string
	for _, t := range rev.Topics {
		if t.Name != model.DeadLetterTopic {
			names = append(names, t.Name)
		}
	}
	return names
}
