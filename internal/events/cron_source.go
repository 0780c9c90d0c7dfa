package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
	"github.com/nimbus-dev/nimbus/internal/events/cron"
)

// Cron trigger constants.
const (
	// CronBucket is the KV bucket of cron watermarks: key
	// <app>.<function>.<trigger>, value the last tick handled (RFC 3339,
	// nanoseconds). File storage, synchronous writes.
	CronBucket = "nimbus_cron"
	// CronEventType is the type of the CloudEvent of a cron firing.
	CronEventType = "dev.nimbus.cron.tick"
	// cronRetryMin and cronRetryMax bound the delay before a failed append
	// is tried again.
	cronRetryMin = time.Second
	cronRetryMax = time.Minute
)

// CronTopic is the internal topic a cron trigger's firings are appended to:
// "_cron_<function>_<trigger>". Names in a manifest are lower-case letters,
// digits and '-', starting with a letter, so the topic is one subject token,
// never a user topic (those cannot start with '_'), and '_' as separator
// keeps function "a-b" trigger "c" apart from function "a" trigger "b-c".
func CronTopic(function, trigger string) string { return "_cron_" + function + "_" + trigger }

// CronEventSource returns the CloudEvents source of a cron trigger's firings:
// "/nimbus/<app>/cron/<function>/<trigger>".
func CronEventSource(app, function, trigger string) string {
	return "/nimbus/" + app + "/cron/" + function + "/" + trigger
}

// CronSpec is one cron trigger of an active function.
type CronSpec struct {
	App, Function string
	// ID is the trigger's name within the function; with App and Function
	// it names the watermark, so a trigger that keeps its name keeps it.
	ID string
	// Schedule is the parsed schedule (cron.Parse). Required.
	Schedule *cron.Schedule
	// CatchUp is how old the latest missed tick may be and still fire once
	// after downtime: cron.NoLimit always, 0 only on time (within
	// cron.Grace).
	CatchUp time.Duration
}

// CronOptions configure a CronSource. The zero value is usable.
type CronOptions struct {
	// Logger receives firings that failed or were skipped. Optional:
	// default slog.Default().
	Logger *slog.Logger
	// Now is the clock. Optional: default time.Now.
	Now func() time.Time
	// After returns a channel that fires after d; loops sleep until the next
	// tick with it. Optional: default time.After. Tests inject both to skip
	// time.
	After func(d time.Duration) <-chan time.Time
}

// CronSource fires cron triggers.
//
// # How a firing is delivered
//
// A firing is not an invocation: it is an event APPENDED to the event log,
// on the app's internal topic CronTopic(function, trigger), and the
// function receives it through an ordinary topic trigger (TriggerSpec with
// that Topic, the cron trigger's MaxAttempts, Backoff and DeadLetter) that
// the caller registers with the Dispatcher. So delivery, retries with
// backoff, dead letters and at-least-once are the Dispatcher's, not
// re-implemented here, and the firing is durable once appended.
//
// The event: type CronEventType, source CronEventSource(app, function, trigger),
// id cron.TickID(tick), time the tick, data application/json
// {"tick": "<RFC 3339>", "schedule": "<spec>", "timezone": "<zone>"},
// no headers. Its
// Nats-Msg-Id is IdempotencyKey (source and id), so two nodes, or a node
// restarted between appending and storing its watermark, that fire the
// same tick store one event (within the log's duplicate window).
//
// # Watermarks and catch-up
//
// Each trigger's watermark, the last tick handled, lives in the KV bucket
// CronBucket. Sync stores the current time as the watermark of a trigger
// it sees for the first time (a new trigger owes nothing before it
// existed), keeps an existing one (a restart catches up), and deletes the
// watermarks of the app's triggers no longer listed. One goroutine per
// trigger asks cron.Due, fires if due (append, then store the tick as the
// watermark), and sleeps until the next tick. Ticks missed while no server
// ran collapse into one firing for the latest of them, within the catch-up
// window; older ones are skipped and logged. A failed append is retried
// (1s doubling to 1m) while the tick is still due.
type CronSource struct {
	js     jetstream.JetStream
	log    *Log
	opts   CronOptions
	logger *slog.Logger

	mu     sync.Mutex // serializes Sync and Close; held while loops start and stop
	kv     jetstream.KeyValue
	loops  map[string]*cronLoop // watermark key -> running loop
	closed bool
}

// cronLoop is one trigger's goroutine; stop ends it and waits.
type cronLoop struct {
	spec CronSpec
	stop chan struct{}
	done chan struct{}
}

// ErrCronClosed is returned by CronSource.Sync after Close.
var ErrCronClosed = errors.New("events: cron scheduler is closed")

// NewCronSource returns a CronSource appending firings to log (on js's
// stream). It starts nothing until Sync.
func NewCronSource(js jetstream.JetStream, log *Log, opts CronOptions) *CronSource {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.After == nil {
		opts.After = time.After
	}
	return &CronSource{
		js: js, log: log, opts: opts,
		logger: opts.Logger.With("component", "events.cron"),
		loops:  map[string]*cronLoop{},
	}
}

func cronKey(app, function, trigger string) string { return app + "." + function + "." + trigger }

func (s CronSpec) validate(app string) error {
	if s.App != app {
		return fmt.Errorf("cron trigger %s/%s: app %q, want %q", s.Function, s.ID, s.App, app)
	}
	for _, tok := range []struct{ what, v string }{{"app", s.App}, {"function", s.Function}, {"trigger", s.ID}} {
		if tok.v == "" || !validSubject(tok.v) || strings.ContainsAny(tok.v, "._") {
			return fmt.Errorf("cron trigger %s/%s: %s %q must be one subject token without '_'", s.Function, s.ID, tok.what, tok.v)
		}
	}
	if s.Schedule == nil {
		return fmt.Errorf("cron trigger %s/%s: no schedule", s.Function, s.ID)
	}
	return nil
}

// same reports whether two specs describe the same trigger behaviour.
func (s CronSpec) same(o CronSpec) bool {
	return s.App == o.App && s.Function == o.Function && s.ID == o.ID && s.CatchUp == o.CatchUp &&
		s.Schedule.String() == o.Schedule.String()
}

// Sync makes the app's running cron triggers match specs: it starts a loop
// for each new or changed one (storing the current time as the watermark
// of a trigger that has none), and stops the loops of, and deletes the
// watermarks of, the app's triggers not listed (also those left by an
// earlier process). Sync(ctx, app, nil) removes them all.
func (c *CronSource) Sync(ctx context.Context, app string, specs []CronSpec) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrCronClosed
	}
	if err := c.ensureBucket(ctx); err != nil {
		return err
	}
	want := map[string]CronSpec{}
	for _, s := range specs {
		if err := s.validate(app); err != nil {
			return fmt.Errorf("sync cron triggers of %s: %w", app, err)
		}
		key := cronKey(s.App, s.Function, s.ID)
		if _, dup := want[key]; dup {
			return fmt.Errorf("sync cron triggers of %s: trigger %s/%s listed twice", app, s.Function, s.ID)
		}
		want[key] = s
	}

	var errs []error
	for key, s := range want {
		if l := c.loops[key]; l != nil {
			if l.spec.same(s) {
				continue
			}
			l.halt()
			delete(c.loops, key)
		}
		last, err := c.watermark(ctx, key)
		if err != nil {
			errs = append(errs, fmt.Errorf("cron trigger %s/%s: %w", s.Function, s.ID, err))
			continue
		}
		l := &cronLoop{spec: s, stop: make(chan struct{}), done: make(chan struct{})}
		c.loops[key] = l
		go c.run(l, key, last)
	}

	for key, l := range c.loops {
		if _, ok := want[key]; !ok && l.spec.App == app {
			l.halt()
			delete(c.loops, key)
		}
	}
	// Delete the watermarks of removed triggers, running here or not, so a
	// trigger re-created later with the same name owes nothing before then.
	lister, err := c.kv.ListKeysFiltered(ctx, app+".>")
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("sync cron triggers of %s: list watermarks: %w", app, err))...)
	}
	var stale []string
	for key := range lister.Keys() {
		if _, ok := want[key]; !ok {
			stale = append(stale, key)
		}
	}
	for _, key := range stale {
		if err := c.kv.Purge(ctx, key); err != nil {
			errs = append(errs, fmt.Errorf("sync cron triggers of %s: delete watermark %s: %w", app, key, err))
		}
	}
	return errors.Join(errs...)
}

// watermark returns the stored watermark of key, storing now first when
// there is none.
func (c *CronSource) watermark(ctx context.Context, key string) (time.Time, error) {
	for range 3 {
		e, err := c.kv.Get(ctx, key)
		if err == nil {
			t, perr := time.Parse(time.RFC3339Nano, string(e.Value()))
			if perr != nil {
				return time.Time{}, fmt.Errorf("watermark %s: %w", key, perr)
			}
			return t, nil
		}
		if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return time.Time{}, fmt.Errorf("watermark %s: %w", key, err)
		}
		now := c.opts.Now()
		if _, err := c.kv.Create(ctx, key, []byte(now.UTC().Format(time.RFC3339Nano))); err == nil {
			return now, nil
		} else if !errors.Is(err, jetstream.ErrKeyExists) {
			return time.Time{}, fmt.Errorf("watermark %s: %w", key, err)
		}
		// Created concurrently (another node): read it.
	}
	return time.Time{}, fmt.Errorf("watermark %s: created and deleted concurrently", key)
}

// Close stops every loop and waits for them; ctx bounds the wait. A loop in
// the middle of an append finishes it (the Log bounds it).
func (c *CronSource) Close(ctx context.Context) error {
	c.mu.Lock()
	c.closed = true
	loops := c.loops
	c.loops = map[string]*cronLoop{}
	c.mu.Unlock()
	for _, l := range loops {
		close(l.stop)
	}
	for _, l := range loops {
		select {
		case <-l.done:
		case <-ctx.Done():
			return fmt.Errorf("close cron scheduler: %w", ctx.Err())
		}
	}
	return nil
}

func (l *cronLoop) halt() {
	close(l.stop)
	<-l.done
}

func (c *CronSource) ensureBucket(ctx context.Context) error {
	if c.kv != nil {
		return nil
	}
	kv, err := c.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      CronBucket,
		Description: "Nimbus cron watermarks: <app>.<function>.<trigger> -> last tick handled",
		Storage:     jetstream.FileStorage,
		History:     1,
	})
	if err != nil {
		return fmt.Errorf("cron watermarks %s: %w", CronBucket, err)
	}
	c.kv = kv
	return nil
}

// run is one trigger's loop. last is its watermark.
func (c *CronSource) run(l *cronLoop, key string, last time.Time) {
	defer close(l.done)
	s := l.spec
	logger := c.logger.With("app", s.App, "function", s.Function, "trigger", s.ID)
	// ctx ends when the loop is stopped, so an append or a KV write in
	// flight does not hold Sync or Close.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-l.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	retry := cronRetryMin
	for {
		now := c.opts.Now()
		fire, tick, next := cron.Due(s.Schedule, last, now, s.CatchUp)
		wait := next.Sub(now)
		failed := false
		switch {
		case fire:
			if err := c.fire(ctx, s, tick); err != nil {
				if ctx.Err() != nil {
					return
				}
				logger.Error("cron firing failed; retrying", "tick", cron.TickID(tick), "retry_in", retry, "error", err)
				wait, retry, failed = retry, min(2*retry, cronRetryMax), true
				break
			}
			retry = cronRetryMin
			last = tick
			if err := c.store(ctx, key, tick); err != nil && ctx.Err() == nil {
				// The event is appended; a restart may append it again,
				// which the log deduplicates.
				logger.Warn("cron watermark not stored", "tick", cron.TickID(tick), "error", err)
			}
		case !tick.IsZero():
			logger.Warn("cron tick missed beyond the catch-up window; skipped", "tick", cron.TickID(tick), "catch_up", s.CatchUp)
			last = tick
			if err := c.store(ctx, key, tick); err != nil && ctx.Err() == nil {
				logger.Warn("cron watermark not stored", "tick", cron.TickID(tick), "error", err)
			}
		}
		if next.IsZero() && !failed {
			return // the schedule has no more ticks
		}
		select {
		case <-l.stop:
			return
		case <-c.opts.After(max(wait, 0)):
		}
	}
}

func (c *CronSource) store(ctx context.Context, key string, tick time.Time) error {
	_, err := c.kv.Put(ctx, key, []byte(tick.UTC().Format(time.RFC3339Nano)))
	return err
}

// CronEvent is the event of a firing of s at tick.
func CronEvent(s CronSpec, tick time.Time) *cloudevents.Event {
	data, _ := json.Marshal(struct {
		Tick     string `json:"tick"`
		Schedule string `json:"schedule"`
		Timezone string `json:"timezone"`
	}{cron.TickID(tick), s.Schedule.String(), s.Schedule.Location().String()})
	return &cloudevents.Event{
		SpecVersion:     cloudevents.SpecVersion,
		ID:              cron.TickID(tick),
		Source:          CronEventSource(s.App, s.Function, s.ID),
		Type:            CronEventType,
		DataContentType: "application/json",
		Time:            tick.UTC(),
		Data:            data,
	}
}

// fire appends the event of tick.
func (c *CronSource) fire(ctx context.Context, s CronSpec, tick time.Time) error {
	e := CronEvent(s, tick)
	_, err := c.log.Append(ctx, Entry{
		Subject: SubjectFor(c.log.prefix, s.App, CronTopic(s.Function, s.ID)),
		MsgID:   IdempotencyKey(e),
		Data:    e.AppendJSON(nil),
	})
	if err != nil {
		return fmt.Errorf("append cron event %s: %w", cron.TickID(tick), err)
	}
	return nil
}
