package server

import (
	"context"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbus-dev/nimbus/internal/events"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/workflow"
)

// workflowTopics is what workflow topic waits read (workflow.Topics):
// the event log's stream, one topic's subject at a time.
type workflowTopics struct{ s *Server }

var _ workflow.Topics = workflowTopics{}

// Position is the events stream's last sequence: every event stored
// later, on any topic, has a greater one.
func (w workflowTopics) Position(ctx context.Context, app, topic string) (uint64, error) {
	rev := w.s.active.get(app)
	if rev == nil {
		return 0, appNotFound(app)
	}
	if !slices.ContainsFunc(rev.Topics, func(t model.Topic) bool { return t.Name == topic }) {
		return 0, fmt.Errorf("%w: app %s has no topic %q (declared: %v): declare it under topics: in nimbus.yaml", workflow.ErrInvalid, app, topic, publicTopics(rev))
	}
	st, err := w.s.store.JetStream().Stream(ctx, w.s.events.Stream())
	if err != nil {
		return 0, fmt.Errorf("topic %s/%s: %w", app, topic, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("topic %s/%s: %w", app, topic, err)
	}
	return info.State.LastSeq, nil
}

// Follow reads the topic's events after the sequence after with an
// ordered consumer (no state on the server beyond its life), waiting for
// new ones.
func (w workflowTopics) Follow(ctx context.Context, app, topic string, after uint64, fn func(seq uint64, event []byte) bool) error {
	cons, err := w.s.store.JetStream().OrderedConsumer(ctx, w.s.events.Stream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{events.SubjectFor(events.DefaultSubjectPrefix, app, topic)},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    after + 1,
	})
	if err != nil {
		return fmt.Errorf("follow topic %s/%s: %w", app, topic, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("follow topic %s/%s: %w", app, topic, err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("follow topic %s/%s: %w", app, topic, err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("follow topic %s/%s: %w", app, topic, err)
		}
		// A pack's events all have its sequence: they were stored at once.
		goOn := true
		err = events.Entries(md.Sequence.Stream, msg.Headers(), msg.Data(), func(_ uint64, ev []byte) bool {
			goOn = fn(md.Sequence.Stream, ev)
			return goOn
		})
		if err != nil {
			w.s.logger.Warn("workflow topic: skipped a malformed message", "app", app, "topic", topic, "seq", md.Sequence.Stream, "error", err)
		}
		if !goOn {
			return nil
		}
	}
}
