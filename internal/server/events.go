package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/nimbus-dev/nimbus/internal/apierror"
	"github.com/nimbus-dev/nimbus/internal/events"
	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
	"github.com/nimbus-dev/nimbus/internal/events/cron"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/telemetry"
)

// topicTriggers are the topic triggers of a revision, in the dispatcher's
// terms. Cron and bucket triggers are ones too: a cron firing is an event on
// the internal topic events.CronTopic(function, trigger) (see
// events.CronSource), a bucket change one on events.BucketTopic(bucket) (see
// events.BucketSource), which the dispatcher delivers with the trigger's
// retries and dead letter.
func topicTriggers(rev *model.Revision) []events.TriggerSpec {
	if rev == nil {
		return nil
	}
	var out []events.TriggerSpec
	for _, fn := range rev.Functions {
		for _, t := range fn.Triggers {
			spec := events.TriggerSpec{
				App: rev.App, Function: fn.Name, ID: t.Name,
				MaxAttempts: t.MaxAttempts,
				Backoff:     time.Duration(t.BackoffMS) * time.Millisecond,
				MaxBackoff:  time.Duration(t.MaxBackoffMS) * time.Millisecond,
				OrderingKey: t.OrderingKey,
				DeadLetter:  t.DeadLetter,
			}
			switch t.Kind {
			case model.TriggerTopic:
				spec.Topic = t.Topic
				if t.Filter != nil {
					spec.Filter = events.Filter{Type: t.Filter.Type, Source: t.Filter.Source, SubjectPrefix: t.Filter.SubjectPrefix}
				}
			case model.TriggerCron:
				spec.Topic, spec.OrderingKey = events.CronTopic(fn.Name, t.Name), ""
			case model.TriggerBucket:
				// The key is the change event's subject.
				spec.Topic, spec.Filter = events.BucketTopic(t.Bucket), events.Filter{SubjectPrefix: t.KeyPrefix}
			default:
				continue
			}
			out = append(out, spec)
		}
	}
	return out
}

// cronTriggers are the cron triggers of a revision, in the cron source's
// terms. A schedule that does not parse (the registry stores canonical,
// validated ones, so only a corrupt record) is left out and reported.
func cronTriggers(rev *model.Revision) ([]events.CronSpec, error) {
	if rev == nil {
		return nil, nil
	}
	var out []events.CronSpec
	var errs []error
	for _, fn := range rev.Functions {
		for _, t := range fn.Triggers {
			if t.Kind != model.TriggerCron {
				continue
			}
			sched, err := cron.Parse(t.Cron, t.Timezone)
			if err != nil {
				errs = append(errs, fmt.Errorf("cron trigger %s/%s: %w", fn.Name, t.Name, err))
				continue
			}
			catchUp := time.Duration(t.CatchUpMS) * time.Millisecond
			if t.CatchUpMS == model.CatchUpNoLimit {
				catchUp = cron.NoLimit
			}
			out = append(out, events.CronSpec{App: rev.App, Function: fn.Name, ID: t.Name, Schedule: sched, CatchUp: catchUp})
		}
	}
	return out, errors.Join(errs...)
}

// syncCron starts and stops the cron triggers of app (rev nil: none). It
// runs after the dispatcher's Sync, so the consumer of a cron trigger's
// topic exists before its first firing.
func (s *Server) syncCron(ctx context.Context, app string, rev *model.Revision) error {
	specs, perr := cronTriggers(rev)
	return errors.Join(perr, s.cron.Sync(ctx, app, specs))
}

// bucketTriggers are the buckets of a revision that bucket triggers watch,
// in the bucket source's terms. A trigger on a bucket the revision does not
// declare (the manifest refuses it, so only a hand-made spec) is left out
// and reported.
func bucketTriggers(rev *model.Revision) ([]events.BucketSpec, error) {
	if rev == nil {
		return nil, nil
	}
	var out []events.BucketSpec
	var errs []error
	for _, fn := range rev.Functions {
		for _, t := range fn.Triggers {
			if t.Kind != model.TriggerBucket {
				continue
			}
			if !slices.ContainsFunc(rev.Buckets, func(b model.Bucket) bool { return b.Name == t.Bucket }) {
				errs = append(errs, fmt.Errorf("bucket trigger %s/%s: bucket %q is not declared; declare it under buckets: in nimbus.yaml", fn.Name, t.Name, t.Bucket))
				continue
			}
			spec := events.BucketSpec{App: rev.App, Bucket: t.Bucket}
			if !slices.Contains(out, spec) {
				out = append(out, spec)
			}
		}
	}
	return out, errors.Join(errs...)
}

// syncBuckets starts and stops the bucket bridges of app (rev nil: none).
// Like syncCron it runs after the dispatcher's Sync, so the consumers of
// the buckets' topics exist before the first change is appended.
func (s *Server) syncBuckets(ctx context.Context, app string, rev *model.Revision) error {
	specs, perr := bucketTriggers(rev)
	return errors.Join(perr, s.kvtrig.Sync(ctx, app, specs))
}

// appNotFound is the error for an app that is not deployed.
func appNotFound(app string) error {
	return apierror.New(http.StatusNotFound, "app_not_found", fmt.Sprintf("app %q is not deployed; `nimbus ls` lists apps", app))
}

// Publish appends events to a topic of an active app. It returns once every
// event is durably stored (fsynced), with how many were duplicates of events
// already accepted (same source and id) within the duplicate window.
func (s *Server) Publish(ctx context.Context, app, topic string, evs []cloudevents.Event, traceparent string) (accepted, duplicates int, err error) {
	rev := s.activeRevision(app)
	if rev == nil {
		return 0, 0, appNotFound(app)
	}
	i := slices.IndexFunc(rev.Topics, func(t model.Topic) bool { return t.Name == topic })
	if i < 0 {
		var names []string
		for _, t := range rev.Topics {
			if t.Name != model.DeadLetterTopic {
				names = append(names, t.Name)
			}
		}
		return 0, 0, apierror.New(http.StatusNotFound, "topic_not_found",
			fmt.Sprintf("app %s has no topic %q (declared: %s); topics are declared under topics: in nimbus.yaml", app, topic, strings.Join(names, ", ")))
	}
	if topic == model.DeadLetterTopic {
		return 0, 0, apierror.New(http.StatusForbidden, "topic_reserved",
			fmt.Sprintf("%s is written by Nimbus with failed deliveries; publish to another topic", topic))
	}
	limit := rev.Topics[i].MaxEventBytes
	entries := make([]events.Entry, len(evs))
	for j := range evs {
		e := &evs[j]
		if e.Extensions == nil {
			e.Extensions = map[string]string{}
		}
		if _, ok := e.Extensions["traceparent"]; !ok {
			// The trace runs from the publisher to every subscriber.
			e.Extensions["traceparent"] = telemetry.Continue(traceparent).String()
		}
		entries[j] = events.EventEntry(app, topic, e)
		if limit > 0 && int64(len(entries[j].Data)) > limit {
			return 0, 0, apierror.New(http.StatusRequestEntityTooLarge, "event_too_large",
				fmt.Sprintf("event %d (id %q) is %d bytes, over topic %s's max_event_size of %d bytes", j, e.ID, len(entries[j].Data), topic, limit))
		}
	}
	for len(entries) > 0 {
		n := min(len(entries), events.DefaultMaxBatch)
		acks, err := s.events.Append(ctx, entries[:n]...)
		if err != nil {
			if errors.Is(err, events.ErrTooLarge) {
				return accepted, duplicates, apierror.Wrap(http.StatusRequestEntityTooLarge, "event_too_large", err)
			}
			return accepted, duplicates, fmt.Errorf("publish to %s/%s: %w", app, topic, err)
		}
		for _, a := range acks {
			accepted++
			if a.Duplicate {
				duplicates++
			}
		}
		entries = entries[n:]
	}
	return accepted, duplicates, nil
}
