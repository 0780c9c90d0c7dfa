package server

import (
	"context"
	"fmt"
	"slices"

	"github.com/nimbus-dev/nimbus/internal/api"
	"github.com/nimbus-dev/nimbus/internal/events"
	"github.com/nimbus-dev/nimbus/internal/model"
)

var _ api.DeadLetterQueue = (*Server)(nil)

// deadLetterTopics are the topics a revision's triggers dead-letter to:
// model.DeadLetterTopic and every other one a trigger names.
func deadLetterTopics(rev *model.Revision) []string {
	topics := []string{model.DeadLetterTopic}
	if rev == nil {
		return topics
	}
	for _, fn := range rev.Functions {
		for _, t := range fn.Triggers {
			if t.DeadLetter != "" && !slices.Contains(topics, t.DeadLetter) {
				topics = append(topics, t.DeadLetter)
			}
		}
	}
	return topics
}

// DeadLetters implements api.DeadLetterQueue: the dead letters on the
// dead-letter topics of app's active revision.
func (s *Server) DeadLetters(ctx context.Context, app string, q events.DeadLetterQuery) (*events.DeadLetterPage, error) {
	if _, err := s.reg.App(ctx, app); err != nil {
		return nil, err
	}
	q.Topics = deadLetterTopics(s.activeRevision(app))
	return s.deliver.DeadLetters(ctx, app, q)
}

// ReplayDeadLetters implements api.DeadLetterQueue. It holds the deploy lock:
// a trigger found to exist stays until its dead letters are replayed to it.
func (s *Server) ReplayDeadLetters(ctx context.Context, app string, req api.ReplayRequest) ([]events.ReplayResult, error) {
	s.deployMu.Lock()
	defer s.deployMu.Unlock()
	rev := s.activeRevision(app)
	if rev == nil {
		return nil, appNotFound(app)
	}
	if req.Topic != "" {
		if req.Topic == model.DeadLetterTopic {
			return nil, &events.TopicError{App: app, Topic: req.Topic, Replay: true, Err: events.ErrTopicReserved}
		}
		if !slices.ContainsFunc(rev.Topics, func(t model.Topic) bool { return t.Name == req.Topic }) {
			return nil, &events.TopicError{App: app, Topic: req.Topic, Declared: publicTopics(rev), Replay: true, Err: events.ErrTopicNotFound}
		}
	}
	opts := events.ReplayOptions{Topic: req.Topic}
	if req.All {
		res, err := s.deliver.ReplayAll(ctx, app, deadLetterTopics(rev), opts)
		if err != nil {
			return res, fmt.Errorf("replay dead letters of %s: %w", app, err)
		}
		return res, nil
	}
	return s.deliver.Replay(ctx, app, req.Seqs, opts), nil
}
