// Package captest holds test doubles for the capability services' backends
// that run on real JetStream: tests of the services and of their runtime
// adapters share them instead of each writing its own.
package captest

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/capability"
	"github.com/nimbus-dev/nimbus/internal/events"
	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/store"
)

// Publisher stands in for the server's Publish (tested in internal/server)
// over a real event log: declared topics, the dead-letter topic reserved,
// typed errors as the server returns them.
type Publisher struct {
	Log *events.Log
	// Topics are the app's declared topics.
	Topics []string
}

var _ capability.Publisher = (*Publisher)(nil)

// CheckPublish implements capability.Publisher: a topic not in Topics is
// events.ErrTopicNotFound.
func (p *Publisher) CheckPublish(_ context.Context, app, topic string, _ *cloudevents.Event) error {
	if !slices.Contains(p.Topics, topic) {
		return &events.TopicError{App: app, Topic: topic, Declared: p.Topics, Err: events.ErrTopicNotFound}
	}
	return nil
}

// Publish implements capability.Publisher.
func (p *Publisher) Publish(ctx context.Context, app, topic string, evs []cloudevents.Event, _ string) (int, int, error) {
	switch {
	case topic == model.DeadLetterTopic:
		return 0, 0, &events.TopicError{App: app, Topic: topic, Err: events.ErrTopicReserved}
	case !slices.Contains(p.Topics, topic):
		return 0, 0, &events.TopicError{App: app, Topic: topic, Declared: p.Topics, Err: events.ErrTopicNotFound}
	}
	entries := make([]events.Entry, len(evs))
	for i := range evs {
		entries[i] = events.EventEntry(app, topic, &evs[i])
	}
	acks, err := p.Log.Append(ctx, entries...)
	if err != nil {
		return 0, 0, err
	}
	dups := 0
	for _, a := range acks {
		if a.Duplicate {
			dups++
		}
	}
	return len(acks), dups, nil
}

// OpenLog starts an embedded store in a temporary directory and opens the
// event log on it; both close when the test ends.
func OpenLog(t testing.TB) (*store.Store, *events.Log) {
	t.Helper()
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(ctx, store.Options{DataDir: t.TempDir(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	l, err := events.OpenLog(ctx, st.JetStream(), events.LogConfig{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(context.Background()) })
	return st, l
}
