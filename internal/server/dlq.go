package server

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/nimbus-dev/nimbus/internal/api"
	"github.com/nimbus-dev/nimbus/internal/apierror"
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
			return nil, apierror.New(http.StatusForbidden, "topic_reserved",
				fmt.Sprintf("replaying to %s would only file the events again as dead letters; name a topic with triggers", model.DeadLetterTopic))
		}
		if !slices.ContainsFunc(rev.Topics, func(t model.Topic) bool { return t.Name == req.Topic }) {
			var names []string
			for _, t := range rev.Topics {
				if t.Name != model.DeadLetterTopic {
					names = append(names, t.Name)
				}
			}
			return nil, apierror.New(http.StatusNotFound, "topic_not_found",
				fmt.Sprintf("app %s has no topic %q (declared: %s)", app, req.Topic, strings.Join(names, ", ")))
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
