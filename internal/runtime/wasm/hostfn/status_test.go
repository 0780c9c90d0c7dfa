package hostfn

import (
	"errors"
	"fmt"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/capability"
	"github.com/nimbus-dev/nimbus/internal/events"
	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// TestStatus: the guest's code follows the service error's type, through
// any wrapping, and never its message.
func TestStatus(t *testing.T) {
	wrap := func(kind, cause error) error { return fmt.Errorf("op: %w: %w", kind, cause) }
	for _, c := range []struct {
		err  error
		want int32
	}{
		{nil, CodeOK},
		{&capability.DeniedError{Op: "log"}, CodeDenied},
		{wrap(capability.ErrDenied, events.ErrTopicReserved), CodeDenied},
		{wrap(capability.ErrBadArgument, errors.New("x")), CodeBadArgument},
		{wrap(capability.ErrTooLarge, events.ErrTooLarge), CodeTooLarge},
		{wrap(capability.ErrUnavailable, errors.New("x")), CodeUnavailable},
		{wrap(capability.ErrNotFound, errors.New("x")), wire.CodeNotFound},
		{&capability.RevisionMismatchError{Current: 3}, wire.CodeRevisionMismatch},
		{wrap(capability.ErrNoBucket, errors.New("x")), wire.CodeNoBucket},
		{wrap(capability.ErrNoTopic, &events.TopicError{Err: events.ErrTopicNotFound}), wire.CodeNoTopic},
		{&capability.BlockedError{Host: "x", Reason: "loopback"}, wire.CodeBlocked},
		{wrap(capability.ErrTimeout, errors.New("x")), wire.CodeTimeout},
		// An error the service did not classify is a bug, whatever it says.
		{errors.New("topic_not_found"), CodeInternal},
		{&events.TopicError{Err: events.ErrTopicNotFound}, CodeInternal},
	} {
		if got := status(c.err); got != c.want {
			t.Errorf("status(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}
