package nimbus

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// ErrTopicNotFound means the app declares no topic of that name in
// nimbus.yaml.
var ErrTopicNotFound = errors.New("topic not found")

// Event is a CloudEvents 1.0 event to publish. Type is required; the other
// attributes have defaults.
type Event struct {
	// ID identifies the event within its source. Optional: default a random
	// 128-bit hex id. Set it to make a publish idempotent: an event with the
	// same source and id published again within the topic's duplicate window
	// is stored and delivered once.
	ID string
	// Source is a URI-reference. Optional: default "/nimbus/APP/FUNCTION".
	Source string
	// Type is required, such as "com.example.order.created".
	Type string
	// Subject is optional, such as the order's id.
	Subject string
	// DataContentType is Data's media type. Optional: default
	// "application/json" when Data is valid JSON, else
	// "application/octet-stream".
	DataContentType string
	// DataSchema is an absolute URI. Optional.
	DataSchema string
	// Data is the payload. Optional.
	Data []byte
	// Extensions are extension attributes: names of lower-case letters and
	// digits. Optional. A "traceparent" set here is kept; otherwise the
	// event continues the invocation's trace.
	Extensions map[string]string
	// Time is when the occurrence happened. Optional: zero means absent.
	Time time.Time
}

// Publish appends e to topic, a topic of the function's app declared under
// topics: in nimbus.yaml. It needs the capability "publish:TOPIC"; without
// it the error wraps ErrDenied. No function may publish to the dead-letter
// topic.
//
// When Publish returns nil the event is on disk (fsynced) and will be
// delivered to every matching trigger. duplicate reports that an event with
// the same source and id was already accepted, so this one was not stored
// again. A publish is not transactional with the invocation: it stays
// published even if the function fails afterwards, and a retried invocation
// publishes again (give the event a fixed ID to make the second one a
// duplicate).
//
// Errors wrap ErrDenied, ErrTopicNotFound, ErrBadArgument (an invalid
// event: the reason is in the function's log), ErrTooLarge (over 1MiB or
// the topic's max_event_size) or ErrUnavailable.
func Publish(topic string, e Event) (duplicate bool, err error) {
	if e.Type == "" {
		return false, fmt.Errorf("nimbus: publish %s: %w: the event needs a type, such as \"com.example.order.created\"", topic, ErrBadArgument)
	}
	if e.ID == "" {
		e.ID = newID()
	}
	ev := AppendEventJSON(nil, &e)
	var out [wire.PublishOutSize]byte
	code := hostPublish(topic, ev, &out)
	switch code {
	case wire.CodeOK:
		return binary.LittleEndian.Uint32(out[:4])&wire.PublishDuplicate != 0, nil
	case wire.CodeNoTopic:
		return false, fmt.Errorf("nimbus: publish %s: %w: declare it under topics: in nimbus.yaml", topic, ErrTopicNotFound)
	case wire.CodeDenied:
		if topic == wire.DeadLetterTopic {
			return false, fmt.Errorf("nimbus: publish %s: %w: only Nimbus writes the dead-letter topic", topic, ErrDenied)
		}
	case wire.CodeBadArgument:
		return false, fmt.Errorf("nimbus: publish %s: %w: invalid topic name or event (the reason is in the function's log)", topic, ErrBadArgument)
	}
	return false, codeError("publish "+topic, "publish:"+topic, code)
}

func newID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand, Go 1.24+)
	return hex.EncodeToString(b[:])
}

// AppendEventJSON appends e in the CloudEvents JSON event format to dst,
// as Publish passes it to the host: specversion "1.0"; source left out
// when empty (the host fills it in); data as JSON when the content type is
// JSON and Data is valid JSON, as a string when the content type is text
// and Data valid UTF-8, as data_base64 otherwise. It does not validate e:
// the host does.
func AppendEventJSON(dst []byte, e *Event) []byte {
	ct := e.DataContentType
	if ct == "" && e.Data != nil {
		ct = "application/octet-stream"
		if json.Valid(e.Data) {
			ct = "application/json"
		}
	}
	dst = append(dst, `{"specversion":"1.0"`...)
	dst = member(dst, "id", e.ID)
	if e.Source != "" {
		dst = member(dst, "source", e.Source)
	}
	dst = member(dst, "type", e.Type)
	if e.Subject != "" {
		dst = member(dst, "subject", e.Subject)
	}
	if ct != "" {
		dst = member(dst, "datacontenttype", ct)
	}
	if e.DataSchema != "" {
		dst = member(dst, "dataschema", e.DataSchema)
	}
	if !e.Time.IsZero() {
		dst = member(dst, "time", e.Time.Format(time.RFC3339Nano))
	}
	for _, k := range slices.Sorted(maps.Keys(e.Extensions)) {
		dst = member(dst, k, e.Extensions[k])
	}
	if e.Data != nil {
		switch {
		case isJSONType(ct) && json.Valid(e.Data):
			dst = append(dst, `,"data":`...)
			dst = append(dst, e.Data...)
		case isTextType(ct) && utf8.Valid(e.Data):
			dst = member(dst, "data", string(e.Data))
		default:
			dst = append(dst, `,"data_base64":"`...)
			dst = base64.StdEncoding.AppendEncode(dst, e.Data)
			dst = append(dst, '"')
		}
	}
	return append(dst, '}')
}

func member(dst []byte, name, v string) []byte {
	q, _ := json.Marshal(name) // strings always marshal
	dst = append(dst, ',')
	dst = append(dst, q...)
	dst = append(dst, ':')
	q, _ = json.Marshal(v)
	return append(dst, q...)
}

// mediaType is ct without parameters, lower-cased.
func mediaType(ct string) string {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.ToLower(strings.TrimSpace(mt))
}

func isJSONType(ct string) bool {
	mt := mediaType(ct)
	return mt == "application/json" || mt == "text/json" || strings.HasSuffix(mt, "/json") || strings.HasSuffix(mt, "+json")
}

func isTextType(ct string) bool {
	mt := mediaType(ct)
	return strings.HasPrefix(mt, "text/") || strings.HasSuffix(mt, "/xml") || strings.HasSuffix(mt, "+xml")
}
