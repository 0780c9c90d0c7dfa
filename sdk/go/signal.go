package nimbus

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// WaitForEvent waits durably for the next signal called name sent to the
// run (`nimbus wf signal APP RUN NAME -d JSON`, or POST
// /api/v1/apps/{app}/runs/{id}/signals/{name}) and returns its payload
// decoded into T. Signals are buffered: one sent before the run waits is
// kept, and successive waits for a name get its signals in the order they
// arrived, each once. timeout counts from the first time the run reaches
// this wait (a replay does not restart it); after it the wait returns an
// error matching ErrTimeout. 0 waits without a deadline. The run holds no
// instance while it waits, and a restart does not lose it.
func WaitForEvent[T any](wf *Workflow, name string, timeout time.Duration) (T, error) {
	var zero T
	if wf.inStep {
		panic("nimbus: WaitForEvent " + name + " called inside a step; wait between steps")
	}
	pos := wf.pos
	buf := make([]byte, 4096)
	var out [wire.WaitOutSize]byte
	ms := int64(0)
	if timeout > 0 {
		ms = max(timeout.Milliseconds(), 1)
	}
	var code int32
	for {
		code = hostWait(pos, name, ms, buf, &out)
		if code != wire.CodeTooLarge {
			break
		}
		buf = make([]byte, binary.LittleEndian.Uint32(out[0:4]))
	}
	if code != wire.CodeOK {
		wf.hostUnwind(pos, "wf_wait", code)
	}
	wf.pos++
	if binary.LittleEndian.Uint32(out[4:8])&wire.WaitTimedOut != 0 {
		return zero, fmt.Errorf("nimbus: wait for signal %q: %w after %s", name, ErrTimeout, timeout)
	}
	var v T
	if err := json.Unmarshal(buf[:binary.LittleEndian.Uint32(out[0:4])], &v); err != nil {
		return zero, fmt.Errorf("nimbus: signal %q: payload does not decode into %T: %w", name, v, err)
	}
	return v, nil
}

// Filter selects topic events for WaitForTopic: every key must match by
// equality. A key is a CloudEvents attribute ("type", "source",
// "subject", "id", or an extension) or "data.<field>", a top-level field
// of the event's JSON data; values compare as JSON ("data.total": 42
// matches 42 and 42.0, not "42").
type Filter map[string]any

// TopicEvent is an event WaitForTopic returns: its CloudEvents
// attributes, and its data decoded into T.
type TopicEvent[T any] struct {
	ID      string    `json:"id"`
	Source  string    `json:"source"`
	Type    string    `json:"type"`
	Subject string    `json:"subject,omitempty"`
	Time    time.Time `json:"time,omitzero"`
	Data    T         `json:"data"`
}

// WaitForTopic waits durably for the first event of topic (a topic of the
// app) published after the run first reaches this wait that matches
// filter (nil matches every event), and returns it. The function needs
// the grant `subscribe:<topic>` in nimbus.yaml (an error matching
// ErrDenied otherwise). The event is journaled with the run, so a replay
// returns the same event; timeout counts from the first time the run
// reached the wait (0: no deadline), after which the error matches
// ErrTimeout. The run holds no instance while it waits, and a restart
// does not lose the wait: events published while the node was down are
// found.
func WaitForTopic[T any](wf *Workflow, topic string, filter Filter, timeout time.Duration) (TopicEvent[T], error) {
	var zero TopicEvent[T]
	if wf.inStep {
		panic("nimbus: WaitForTopic " + topic + " called inside a step; wait between steps")
	}
	spec, err := json.Marshal(struct {
		Topic  string `json:"topic"`
		Filter Filter `json:"filter,omitempty"`
	}{topic, filter})
	if err != nil {
		return zero, fmt.Errorf("nimbus: WaitForTopic %s: filter: %w", topic, err)
	}
	pos := wf.pos
	buf := make([]byte, 4096)
	var out [wire.WaitOutSize]byte
	ms := int64(0)
	if timeout > 0 {
		ms = max(timeout.Milliseconds(), 1)
	}
	var code int32
	for {
		code = hostWaitTopic(pos, spec, ms, buf, &out)
		if code != wire.CodeTooLarge {
			break
		}
		buf = make([]byte, binary.LittleEndian.Uint32(out[0:4]))
	}
	switch code {
	case wire.CodeOK:
	case wire.CodeDenied:
		return zero, fmt.Errorf("nimbus: wait for topic %s: %w: grant it with `capabilities: [subscribe:%s]` in nimbus.yaml", topic, ErrDenied, topic)
	case wire.CodeBadArgument:
		return zero, fmt.Errorf("nimbus: wait for topic %s: %w: is the topic declared under topics:, and is every filter key an attribute or data.<field>?", topic, ErrBadArgument)
	default:
		wf.hostUnwind(pos, wire.FuncWaitTopic, code)
	}
	wf.pos++
	if binary.LittleEndian.Uint32(out[4:8])&wire.WaitTimedOut != 0 {
		return zero, fmt.Errorf("nimbus: wait for topic %s: %w after %s", topic, ErrTimeout, timeout)
	}
	var ev TopicEvent[T]
	if err := json.Unmarshal(buf[:binary.LittleEndian.Uint32(out[0:4])], &ev); err != nil {
		return zero, fmt.Errorf("nimbus: topic %s: event does not decode into %T: %w", topic, ev, err)
	}
	return ev, nil
}
