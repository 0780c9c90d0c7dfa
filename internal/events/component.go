package events

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nimbus-dev/nimbus/internal/events/cron"
	"github.com/nimbus-dev/nimbus/internal/model"
)

// This file is how the events package reads a revision. The Dispatcher,
// the CronSource and the BucketSource are components (see
// internal/server): each derives its own specs from a revision's triggers,
// refuses in Validate what it could not run, and is provisioned in that
// order, so the consumer of a cron or bucket trigger's topic exists before
// its source appends the first firing or change to it. A new trigger kind
// adds its case here and its source beside the others.

// ErrAppNotActive means no revision of the app is provisioned here.
var ErrAppNotActive = errors.New("app is not active")

// TriggersOf are the topic triggers of a revision, in the dispatcher's
// terms. Cron and bucket triggers are ones too: a cron firing is an event
// on the internal topic CronTopic(function, trigger) (see CronSource), a
// bucket change one on BucketTopic(bucket) (see BucketSource), which the
// dispatcher delivers with the trigger's retries and dead letter.
func TriggersOf(rev *model.Revision) []TriggerSpec {
	if rev == nil {
		return nil
	}
	var out []TriggerSpec
	for _, fn := range rev.Functions {
		for _, t := range fn.Triggers {
			spec := TriggerSpec{
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
					spec.Filter = Filter{Type: t.Filter.Type, Source: t.Filter.Source, SubjectPrefix: t.Filter.SubjectPrefix}
				}
			case model.TriggerCron:
				spec.Topic, spec.OrderingKey = CronTopic(fn.Name, t.Name), ""
			case model.TriggerBucket:
				// The key is the change event's subject.
				spec.Topic, spec.Filter = BucketTopic(t.Bucket), Filter{SubjectPrefix: t.KeyPrefix}
			default:
				continue
			}
			out = append(out, spec)
		}
	}
	return out
}

// CronSpecsOf are the cron triggers of a revision, in the cron source's
// terms. A schedule that does not parse is left out and reported, with an
// error wrapping model.ErrInvalid.
func CronSpecsOf(rev *model.Revision) ([]CronSpec, error) {
	if rev == nil {
		return nil, nil
	}
	var out []CronSpec
	var errs []error
	for _, fn := range rev.Functions {
		for _, t := range fn.Triggers {
			if t.Kind != model.TriggerCron {
				continue
			}
			sched, err := cron.Parse(t.Cron, t.Timezone)
			if err != nil {
				errs = append(errs, fmt.Errorf("%w: cron trigger %s/%s: %w", model.ErrInvalid, fn.Name, t.Name, err))
				continue
			}
			catchUp := time.Duration(t.CatchUpMS) * time.Millisecond
			if t.CatchUpMS == model.CatchUpNoLimit {
				catchUp = cron.NoLimit
			}
			out = append(out, CronSpec{App: rev.App, Function: fn.Name, ID: t.Name, Schedule: sched, CatchUp: catchUp})
		}
	}
	return out, errors.Join(errs...)
}

// BucketSpecsOf are the buckets of a revision that bucket triggers watch,
// in the bucket source's terms. A trigger on a bucket the revision does not
// declare (the manifest refuses it, so only a hand-made spec) is left out
// and reported, with an error wrapping model.ErrInvalid.
func BucketSpecsOf(rev *model.Revision) ([]BucketSpec, error) {
	if rev == nil {
		return nil, nil
	}
	var out []BucketSpec
	var errs []error
	for _, fn := range rev.Functions {
		for _, t := range fn.Triggers {
			if t.Kind != model.TriggerBucket {
				continue
			}
			if !slices.ContainsFunc(rev.Buckets, func(b model.Bucket) bool { return b.Name == t.Bucket }) {
				errs = append(errs, fmt.Errorf("%w: bucket trigger %s/%s: bucket %q is not declared; declare it under buckets: in nimbus.yaml", model.ErrInvalid, fn.Name, t.Name, t.Bucket))
				continue
			}
			spec := BucketSpec{App: rev.App, Bucket: t.Bucket}
			if !slices.Contains(out, spec) {
				out = append(out, spec)
			}
		}
	}
	return out, errors.Join(errs...)
}

// Validate checks the topic triggers of rev as Sync would, without
// touching the server. Errors wrap model.ErrInvalid.
func (d *Dispatcher) Validate(_ context.Context, rev *model.Revision) error {
	seen := map[string]bool{}
	for _, s := range TriggersOf(rev) {
		s = s.withDefaults()
		if err := s.validate(rev.App); err != nil {
			return fmt.Errorf("%w: %w", model.ErrInvalid, err)
		}
		name := consumerName(s)
		if seen[name] {
			return fmt.Errorf("%w: trigger %s/%s on %s is listed twice", model.ErrInvalid, s.Function, s.ID, s.Topic)
		}
		seen[name] = true
	}
	return nil
}

// Provision makes the app's trigger consumers those of rev (Sync), keeping
// its async trigger once the app took an async invocation. The first
// Provision of an app in this process finds out from the server whether
// its async trigger exists (it keeps its queue across restarts).
func (d *Dispatcher) Provision(ctx context.Context, rev *model.Revision) error {
	d.provMu.Lock()
	defer d.provMu.Unlock()
	d.appsMu.RLock()
	_, seen := d.revs[rev.App]
	async := d.async[rev.App]
	d.appsMu.RUnlock()
	if !seen {
		if ok, err := d.HasConsumer(ctx, AsyncTrigger(rev.App)); err == nil && ok {
			async = true
		}
	}
	triggers := TriggersOf(rev)
	if async {
		triggers = append(triggers, d.asyncTrigger(rev.App))
	}
	err := d.Sync(ctx, rev.App, triggers)
	d.appsMu.Lock()
	d.revs[rev.App], d.async[rev.App] = rev, async
	d.appsMu.Unlock()
	if err != nil {
		return fmt.Errorf("triggers of %s: %w", rev.App, err)
	}
	return nil
}

// Retire stops and deletes every trigger consumer of the app, its async
// trigger included.
func (d *Dispatcher) Retire(ctx context.Context, app string) error {
	d.provMu.Lock()
	defer d.provMu.Unlock()
	err := d.Sync(ctx, app, nil)
	d.appsMu.Lock()
	delete(d.revs, app)
	delete(d.async, app)
	d.appsMu.Unlock()
	return err
}

// asyncTrigger is app's async trigger with the node's retry defaults.
func (d *Dispatcher) asyncTrigger(app string) TriggerSpec {
	t := AsyncTrigger(app)
	t.MaxAttempts, t.Backoff = d.opts.AsyncMaxAttempts, d.opts.AsyncBackoff
	return t
}

// EnsureAsync makes sure app's async trigger consumes before an async
// invocation is appended (a new consumer starts after what was already
// appended). The first async invocation of an app creates it; it then
// lives as long as the app. It fails with ErrAppNotActive for an app not
// provisioned here.
func (d *Dispatcher) EnsureAsync(ctx context.Context, app string) error {
	d.appsMu.RLock()
	ok := d.async[app]
	d.appsMu.RUnlock()
	if ok {
		return nil
	}
	d.provMu.Lock()
	defer d.provMu.Unlock()
	d.appsMu.RLock()
	rev, async := d.revs[app], d.async[app]
	d.appsMu.RUnlock()
	if rev == nil {
		return fmt.Errorf("start async invocations of %s: %w", app, ErrAppNotActive)
	}
	if async {
		return nil
	}
	// Listed as async only once its consumer exists: until then callers
	// keep coming here.
	if err := d.Sync(ctx, app, append(TriggersOf(rev), d.asyncTrigger(app))); err != nil {
		return fmt.Errorf("start async invocations of %s: %w", app, err)
	}
	d.appsMu.Lock()
	d.async[app] = true
	d.appsMu.Unlock()
	return nil
}

// Validate checks the cron triggers of rev: a schedule that does not parse,
// or a name the source cannot use, refuses the deploy. Errors wrap
// model.ErrInvalid.
func (c *CronSource) Validate(_ context.Context, rev *model.Revision) error {
	specs, err := CronSpecsOf(rev)
	if err != nil {
		return err
	}
	for _, s := range specs {
		if err := s.validate(rev.App); err != nil {
			return fmt.Errorf("%w: %w", model.ErrInvalid, err)
		}
	}
	return nil
}

// Provision runs the cron triggers of rev and stops the app's others. A
// schedule that does not parse (only a corrupt record: Validate refuses
// it) is left out and reported; the others run.
func (c *CronSource) Provision(ctx context.Context, rev *model.Revision) error {
	specs, perr := CronSpecsOf(rev)
	return errors.Join(perr, c.Sync(ctx, rev.App, specs))
}

// Retire stops the app's cron triggers and deletes their watermarks.
func (c *CronSource) Retire(ctx context.Context, app string) error {
	return c.Sync(ctx, app, nil)
}

// Validate checks the bucket triggers of rev: each must watch a bucket the
// revision declares. Errors wrap model.ErrInvalid.
func (s *BucketSource) Validate(_ context.Context, rev *model.Revision) error {
	specs, err := BucketSpecsOf(rev)
	if err != nil {
		return err
	}
	for _, sp := range specs {
		if err := sp.validate(rev.App); err != nil {
			return fmt.Errorf("%w: %w", model.ErrInvalid, err)
		}
	}
	return nil
}

// Provision bridges the buckets rev's triggers watch and stops the app's
// other bridges. A trigger on an undeclared bucket (only a corrupt record:
// Validate refuses it) is left out and reported.
func (s *BucketSource) Provision(ctx context.Context, rev *model.Revision) error {
	specs, perr := BucketSpecsOf(rev)
	return errors.Join(perr, s.Sync(ctx, rev.App, specs))
}

// Retire stops the app's bucket bridges.
func (s *BucketSource) Retire(ctx context.Context, app string) error {
	return s.Sync(ctx, app, nil)
}
