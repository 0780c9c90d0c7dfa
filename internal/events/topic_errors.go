package events

import (
	"errors"
	"fmt"
	"strings"
)

// Errors of a publish refused for its topic. Callers branch on them with
// errors.Is; gateway and api map them to HTTP (topic_not_found 404,
// topic_reserved 403), the capability service to guest status codes. An
// event over its topic's size limit matches ErrTooLarge.
var (
	// ErrTopicNotFound means the app declares no topic of that name.
	ErrTopicNotFound = errors.New("topic not found")
	// ErrTopicReserved means only Nimbus appends to the topic: the
	// dead-letter topic, written with failed deliveries.
	ErrTopicReserved = errors.New("topic is reserved")
)

// TopicError is a publish refused for its topic; it matches its Err,
// ErrTopicNotFound or ErrTopicReserved. The message says what to do.
type TopicError struct {
	App   string
	Topic string
	// Declared lists the topics the app declares that a publisher may
	// use, for ErrTopicNotFound.
	Declared []string
	// Replay is set when the topic was named as where to replay dead
	// letters, not to publish to.
	Replay bool
	Err    error
}

func (e *TopicError) Error() string {
	switch {
	case errors.Is(e.Err, ErrTopicReserved) && e.Replay:
		return fmt.Sprintf("replaying to %s would only file the events again as dead letters; name a topic with triggers", e.Topic)
	case errors.Is(e.Err, ErrTopicReserved):
		return fmt.Sprintf("%s is written by Nimbus with failed deliveries; publish to another topic", e.Topic)
	case e.Replay:
		return fmt.Sprintf("app %s has no topic %q (declared: %s)", e.App, e.Topic, strings.Join(e.Declared, ", "))
	}
	return fmt.Sprintf("app %s has no topic %q (declared: %s); topics are declared under topics: in nimbus.yaml",
		e.App, e.Topic, strings.Join(e.Declared, ", "))
}

func (e *TopicError) Unwrap() error { return e.Err }

// EventTooLargeError is an event over its topic's max_event_size; it
// matches ErrTooLarge.
type EventTooLargeError struct {
	Topic string
	// Index is the event's position in its batch.
	Index int
	// ID is the event's id.
	ID string
	// Size is the event's size as stored, in bytes.
	Size int
	// Limit is the topic's max_event_size in bytes.
	Limit int64
}

func (e *EventTooLargeError) Error() string {
	return fmt.Sprintf("event %d (id %q) is %d bytes, over topic %s's max_event_size of %d bytes", e.Index, e.ID, e.Size, e.Topic, e.Limit)
}

func (e *EventTooLargeError) Unwrap() error { return ErrTooLarge }
