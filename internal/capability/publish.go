package capability

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nimbus-dev/nimbus/internal/events"
	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/telemetry"
	"github.com/nimbus-dev/nimbus/internal/workflow"
)

// Publisher is what the publish service needs of the events; the server
// (*server.Server) implements it. Publish returns only when every event is
// durably stored (fsynced). Where the caller is at fault its errors match
// events.ErrTopicNotFound, events.ErrTopicReserved or events.ErrTooLarge
// (an app that is not deployed matches registry.ErrAppNotFound).
type Publisher interface {
	Publish(ctx context.Context, app, topic string, evs []cloudevents.Event, traceparent string) (accepted, duplicates int, err error)
	// CheckPublish answers what Publish of e would for the topic, the
	// event's size and the app's back-pressure, without publishing: a
	// journaled step's publish is checked when the step makes it and
	// published after the step commits, where it must not fail.
	CheckPublish(ctx context.Context, app, topic string, e *cloudevents.Event) error
}

// PublishService appends events to the topics of the caller's app
// (capability "publish", scoped per topic: "publish:orders"). Nothing opens
// the dead-letter topic to a function, whatever it is granted.
//
// An event is durable when Publish returns, except inside a workflow step
// with journaled effects (the default): there it is checked, buffered and
// published once, after the step commits (workflow/effects.go). Elsewhere it is not
// transactional with the invocation: it stays published if the function fails afterwards or is
// retried (then it may be published again; a fixed id makes the copy a
// duplicate, stored once).
type PublishService struct {
	*guard
	pub Publisher
	fx  StepEffects // nil: no workflow engine
}

// Publish appends one event, in the CloudEvents JSON format, to topic and
// reports whether it was a duplicate of one already accepted (same source
// and id). An event without a source gets DefaultSource; one without a
// traceparent extension gets a child of the caller's. An event that does
// not decode is ErrBadArgument and writes one warning per topic and
// invocation to the caller's log. Publish is done with event when it
// returns.
func (s *PublishService) Publish(ctx context.Context, call *Caller, topic string, event []byte) (duplicate bool, err error) {
	const op = "publish"
	switch {
	case !model.ValidName(topic):
		return false, fail(op, ErrBadArgument, fmt.Errorf("%q is not a topic name", topic))
	case topic == model.DeadLetterTopic:
		// Refused before any grant is looked at: no grant opens it, so
		// the denial must not suggest one.
		return false, fail(op, ErrDenied, &events.TopicError{App: appOf(call), Topic: topic, Err: events.ErrTopicReserved})
	}
	if err := s.check(call, op, publishGrant(topic)); err != nil {
		return false, err
	}
	if s.pub == nil {
		return false, fail(op, ErrUnavailable, errors.New("no publisher in this process"))
	}
	e, err := DecodeEvent(event, DefaultSource(call.App, call.Function))
	if err != nil {
		if call.first("\x00invalid " + topic) { // grants never start with NUL
			call.log("warn", fmt.Sprintf("nimbus.publish to %q: invalid event: %s", topic, err))
		}
		return false, fail(op, ErrBadArgument, err)
	}
	journaled := s.fx != nil && s.fx.InJournaledStep(call.App, call.InvocationID)
	if _, ok := e.Extensions["traceparent"]; !ok && (call.TraceParent != "" || journaled) {
		// The trace runs from this invocation to every subscriber; the
		// publish is a span of the invocation's trace. A buffered event
		// gets it now (a new trace without one), so that it is checked
		// as it will be published.
		e.Extensions["traceparent"] = telemetry.Continue(call.TraceParent).String()
	}
	if journaled {
		// Published once the step commits, with this source and id
		// (workflow/effects.go); a duplicate is not known yet. What the
		// publish could fail on then is checked now: the step's attempt
		// fails instead.
		if err := s.pub.CheckPublish(ctx, call.App, topic, &e); err != nil {
			return false, s.publishError(call, topic, err)
		}
		b, err := e.MarshalJSON()
		if err != nil {
			return false, fail(op, ErrBadArgument, err)
		}
		if !s.fx.BufferEffect(call.App, call.InvocationID, workflow.Effect{Op: workflow.EffectPublish, Topic: topic, Event: b}) {
			return false, fail(op, ErrUnavailable, errors.New("the journaled step ended while the event was checked"))
		}
		return false, nil
	}
	_, dups, err := s.pub.Publish(ctx, call.App, topic, []cloudevents.Event{e}, call.TraceParent)
	if err != nil {
		return false, s.publishError(call, topic, err)
	}
	return dups > 0, nil
}

func appOf(call *Caller) string {
	if call == nil {
		return ""
	}
	return call.App
}

// publishError classifies a publisher error; what the caller cannot act on
// is logged and becomes ErrUnavailable.
func (s *PublishService) publishError(call *Caller, topic string, err error) error {
	const op = "publish"
	switch {
	case errors.Is(err, events.ErrTopicNotFound):
		return fail(op, ErrNoTopic, err)
	case errors.Is(err, events.ErrTopicReserved):
		return fail(op, ErrDenied, err)
	case errors.Is(err, events.ErrTooLarge):
		return fail(op, ErrTooLarge, err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled),
		errors.Is(err, events.ErrBackpressure): // the function fails and is retried later: back-pressure reaches its trigger
		return fail(op, ErrUnavailable, err)
	}
	s.failed(call, "publish host function failed", op, err, "topic", topic)
	return fail(op, ErrUnavailable, err)
}

// DefaultSource is the source of an event a function publishes without one.
func DefaultSource(app, function string) string {
	return "/nimbus/" + app + "/" + function
}

// DecodeEvent reads one event in the CloudEvents JSON format, as a function
// passes it to publish, and validates it. An event without a source gets
// source. The event always has a non-nil Extensions map and shares no
// memory with b. Errors are cloudevents' *SyntaxError or *AttributeError.
func DecodeEvent(b []byte, source string) (cloudevents.Event, error) {
	var e cloudevents.Event
	err := e.UnmarshalJSON(b)
	var ae *cloudevents.AttributeError
	if errors.As(err, &ae) && ae.Attribute == "source" && strings.HasPrefix(ae.Problem, "missing") {
		// The source is validated before the type and the rest: read the
		// event again with the default source in front. A source present
		// but empty is a duplicate member then, which is an error.
		i := strings.IndexByte(string(b), '{') // present: the error was not a syntax error
		withSource := make([]byte, 0, len(b)+len(source)+16)
		withSource = append(withSource, b[:i+1]...)
		withSource = append(withSource, `"source":`...)
		withSource = appendQuoted(withSource, source)
		withSource = append(withSource, ',')
		withSource = append(withSource, b[i+1:]...)
		err = e.UnmarshalJSON(withSource)
	}
	if err != nil {
		return cloudevents.Event{}, err
	}
	if e.Extensions == nil {
		e.Extensions = map[string]string{}
	}
	return e, nil
}

// appendQuoted appends s as a JSON string; app and function names are
// DNS labels, but nothing here relies on it.
func appendQuoted(dst []byte, s string) []byte {
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c < 0x20:
			dst = append(dst, fmt.Sprintf(`\u%04x`, c)...)
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}
