package hostfn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/tetratelabs/wazero/api"

	"github.com/nimbus-dev/nimbus/internal/apierror"
	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/telemetry"
	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// Publisher is what the publish function needs of the events; the server
// (*server.Server) implements it. Publish returns only when every event is
// durably stored (fsynced). Its errors are *apierror.Error with the codes
// topic_not_found, topic_reserved, event_too_large and app_not_found where
// the caller is at fault.
type Publisher interface {
	Publish(ctx context.Context, app, topic string, evs []cloudevents.Event, traceparent string) (accepted, duplicates int, err error)
}

// The guest ABI and the registry agree on the dead-letter topic's name.
var _ = [1]struct{}{}[len(wire.DeadLetterTopic)-len(model.DeadLetterTopic)]

// PublishProvider provides publish (capability "publish", scoped per topic:
// "publish:orders"), which appends one CloudEvent to a topic of the calling
// app. Its signature is specified in sdk/go/wire.
//
// The event is durable when the call returns. It is not transactional with
// the invocation: it stays published even if the function fails afterwards
// or is retried (then it may be published again; a fixed id makes the copy a
// duplicate, stored once).
type PublishProvider struct {
	// Publisher stores the events. Optional: nil makes every call return
	// CodeUnavailable once its arguments are checked.
	Publisher Publisher
	// Logger receives publisher failures. Optional: default discards.
	Logger *slog.Logger
}

// Capability implements Provider.
func (PublishProvider) Capability() string { return CapPublish }

// Functions implements Provider.
func (p PublishProvider) Functions() []Function {
	i32 := api.ValueTypeI32
	return []Function{{
		Name:    wire.FuncPublish,
		Params:  []api.ValueType{i32, i32, i32, i32, i32},
		Results: []api.ValueType{i32},
		Fn:      p.publish,
		Scope:   topicScope,
	}}
}

// topicScope decodes the topic, which must be a valid name before grants
// are checked. The dead-letter topic is refused here, before any grant is
// looked at: no grant opens it, so the denial log must not suggest one.
func topicScope(mod api.Module, stack []uint64) (string, bool, int32) {
	t, code := stringArg(mod.Memory(), stack[0], stack[1], wire.PublishMaxTopicLen)
	switch {
	case code != CodeOK:
		return "", true, code
	case !validName(t):
		return "", true, CodeBadArgument
	case t == wire.DeadLetterTopic:
		return "", true, CodeDenied
	}
	return t, true, CodeOK
}

// publish(topic_ptr, topic_len, event_ptr, event_len, out_ptr) -> status
func (p PublishProvider) publish(ctx context.Context, call *Call, mod api.Module, stack []uint64) {
	stack[0] = api.EncodeI32(p.doPublish(ctx, call, mod.Memory(), stack))
}

func (p PublishProvider) doPublish(ctx context.Context, call *Call, mem api.Memory, stack []uint64) int32 {
	topic, code := stringArg(mem, stack[0], stack[1], wire.PublishMaxTopicLen)
	if code != CodeOK {
		return code
	}
	raw, code := bytesArg(mem, stack[2], stack[3], wire.PublishMaxEventLen)
	if code != CodeOK {
		return code
	}
	out, code := outArg(mem, stack[4], wire.PublishOutSize)
	if code != CodeOK {
		return code
	}
	if p.Publisher == nil {
		return CodeUnavailable
	}
	// DecodeEvent copies raw, a view into guest memory.
	e, err := DecodeEvent(raw, DefaultSource(call.App, call.Function))
	if err != nil {
		if call.firstDenial("\x00invalid " + topic) { // one line per topic and invocation
			call.log("log", "warn", fmt.Sprintf("nimbus.publish to %q: invalid event: %s", topic, err))
		}
		return CodeBadArgument
	}
	if _, ok := e.Extensions["traceparent"]; !ok && call.TraceParent != "" {
		// The trace runs from this invocation to every subscriber; the
		// publish is a span of the invocation's trace.
		e.Extensions["traceparent"] = telemetry.Continue(call.TraceParent).String()
	}
	_, dups, err := p.Publisher.Publish(ctx, call.App, topic, []cloudevents.Event{e}, call.TraceParent)
	if err != nil {
		return p.code(call, topic, err)
	}
	var flags uint32
	if dups > 0 {
		flags = wire.PublishDuplicate
	}
	mem.WriteUint32Le(out, flags)
	mem.WriteUint32Le(out+4, 0)
	return CodeOK
}

// DefaultSource is the source of an event a function publishes without one.
func DefaultSource(app, function string) string {
	return "/nimbus/" + app + "/" + function
}

// DecodeEvent reads one event in the CloudEvents JSON format, as a guest
// passes it to publish, and validates it. An event without a source gets
// source. The event always has a non-nil Extensions map. Errors are
// cloudevents' *SyntaxError or *AttributeError.
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

// code maps a publisher error to a status code.
func (p PublishProvider) code(call *Call, topic string, err error) int32 {
	var ae *apierror.Error
	if errors.As(err, &ae) {
		switch ae.Code {
		case "topic_not_found":
			return wire.CodeNoTopic
		case "topic_reserved":
			return CodeDenied
		case "event_too_large":
			return CodeTooLarge
		}
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return CodeUnavailable
	}
	logger := p.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger.Warn("publish host function failed", "app", call.App, "function", call.Function, "invocation", call.InvocationID,
		"topic", topic, "err", err)
	return CodeUnavailable
}
