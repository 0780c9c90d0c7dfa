package events

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime"
)

// Defaults of TriggerSpec and DispatcherOptions.
const (
	// DefaultMaxAttempts is how many times a delivery is tried before the
	// event is dead-lettered.
	DefaultMaxAttempts = 5
	// DefaultBackoff is the delay before the first retry.
	DefaultBackoff = time.Second
	// DefaultMaxBackoff caps the retry delay.
	DefaultMaxBackoff = 5 * time.Minute
	// DefaultDeadLetterTopic is the topic of an app's dead letters.
	DefaultDeadLetterTopic = "dead-letter"
	// DefaultConcurrency bounds the invocations in flight per trigger.
	DefaultConcurrency = 16
	// DefaultMaxAckPending bounds the events a trigger holds unacknowledged
	// (in flight, waiting behind their ordering key, or waiting for a
	// retry) on the server.
	DefaultMaxAckPending = 1000
	// DefaultAckWait is the consumer's ack wait; held events are kept alive
	// with InProgress every AckWait/3, so it only matters after a crash.
	DefaultAckWait = 30 * time.Second
	// oldDeliveredBucket is the KV bucket earlier versions recorded
	// finished deliveries in (<consumer>.<msgid>); see RecordsStream.
	oldDeliveredBucket = "nimbus_delivered"
)

// Headers and extensions the dispatcher adds.
const (
	// HeaderAttempt is the request header carrying the delivery attempt
	// (1 for the first).
	HeaderAttempt = "Nimbus-Attempt"
	// HeaderTrigger is the request header naming the trigger
	// (function/trigger-id).
	HeaderTrigger = "Nimbus-Trigger"

	// Extensions set on a dead-lettered event (and mirrored as headers of
	// its entry, "Nimbus-Dead-Error" and so on).
	ExtDeadError    = "nimbuserror"    // the last failure, at most 1 KiB
	ExtDeadAttempts = "nimbusattempts" // attempts made
	ExtDeadTopic    = "nimbustopic"    // the topic the event was published on
	ExtDeadFunction = "nimbusfunction" // the function that failed it
	ExtDeadTrigger  = "nimbustrigger"  // the trigger id within the function
)

// Metadata keys of trigger consumers; Sync finds an app's consumers by them.
const (
	metaApp      = "nimbus.app"
	metaFunction = "nimbus.function"
	metaTrigger  = "nimbus.trigger"
	metaTopic    = "nimbus.topic"
)

// Invoker runs one invocation of a function; *scheduler.Scheduler
// satisfies it.
type Invoker interface {
	Invoke(ctx context.Context, app, function string, req *runtime.Request) (*runtime.Response, error)
}

// Filter selects the events of a topic trigger; every set field must match
// and empty fields match anything.
type Filter struct {
	Type          string // equal to the event's type
	Source        string // equal to the event's source
	SubjectPrefix string // a prefix of the event's subject (an event without subject does not match)
}

// Match reports whether e passes the filter.
func (f Filter) Match(e *cloudevents.Event) bool {
	if f.Type != "" && e.Type != f.Type {
		return false
	}
	if f.Source != "" && e.Source != f.Source {
		return false
	}
	if f.SubjectPrefix != "" && (e.Subject == "" || !strings.HasPrefix(e.Subject, f.SubjectPrefix)) {
		return false
	}
	return true
}

// TriggerSpec is one topic trigger of an active function, resolved from the
// manifest by the caller. Zero fields take their defaults.
type TriggerSpec struct {
	App, Function, Topic string
	// ID is the trigger's stable id within the function (its name in the
	// manifest); with App, Function and Topic it names the durable
	// consumer, so a trigger that keeps them keeps its place in the topic.
	ID     string
	Filter Filter
	// MaxAttempts is how many times a delivery is tried before the event is
	// dead-lettered. Optional: default 5.
	MaxAttempts int
	// Backoff is the delay before the first retry; each further retry
	// doubles it (with ±20% jitter) up to MaxBackoff. Optional: default 1s
	// and 5m.
	Backoff, MaxBackoff time.Duration
	// OrderingKey, when set, delivers events with the same key one at a
	// time, in stream order: "event.subject", "event.source", "event.type",
	// "event.id" or "event.<extension>". Events without the attribute share
	// the empty key.
	OrderingKey string
	// DeadLetter is the topic failed events go to. Optional: default
	// "dead-letter".
	DeadLetter string
	// Async makes this the app's async invocation trigger (see AsyncEntry):
	// Topic must be AsyncTopic, and each event invokes the function it
	// names with the request it carries; outcomes are recorded in
	// InvocationsBucket. Function is only a name for the consumer.
	Async bool
}

// AsyncTrigger is the trigger delivering app's async invocations.
func AsyncTrigger(app string) TriggerSpec {
	return TriggerSpec{App: app, Function: AsyncTopic, Topic: AsyncTopic, ID: "async", Async: true}
}

func (s TriggerSpec) withDefaults() TriggerSpec {
	if s.MaxAttempts <= 0 {
		s.MaxAttempts = DefaultMaxAttempts
	}
	if s.Backoff <= 0 {
		s.Backoff = DefaultBackoff
	}
	if s.MaxBackoff <= 0 {
		s.MaxBackoff = DefaultMaxBackoff
	}
	s.MaxBackoff = max(s.MaxBackoff, s.Backoff)
	if s.DeadLetter == "" {
		s.DeadLetter = DefaultDeadLetterTopic
	}
	return s
}

func (s TriggerSpec) validate(app string) error {
	if s.App != app {
		return fmt.Errorf("trigger %s/%s: app %q, want %q", s.Function, s.ID, s.App, app)
	}
	for _, tok := range []struct{ what, v string }{{"app", s.App}, {"function", s.Function}, {"topic", s.Topic}, {"dead-letter topic", s.DeadLetter}} {
		if tok.v == "" || !validSubject(tok.v) || strings.Contains(tok.v, ".") {
			return fmt.Errorf("trigger %s/%s: %s %q must be one subject token", s.Function, s.ID, tok.what, tok.v)
		}
	}
	if s.ID == "" {
		return fmt.Errorf("trigger of %s: empty id", s.Function)
	}
	if s.Async != (s.Topic == AsyncTopic) {
		return fmt.Errorf("trigger %s/%s: only the async trigger reads topic %s", s.Function, s.ID, AsyncTopic)
	}
	if k := s.OrderingKey; k != "" && (!strings.HasPrefix(k, "event.") || len(k) == len("event.")) {
		return fmt.Errorf("trigger %s/%s: ordering key %q must be event.<attribute>", s.Function, s.ID, k)
	}
	return nil
}

// DispatcherOptions configure a Dispatcher. The zero value is usable.
type DispatcherOptions struct {
	// Logger receives delivery failures and dead letters. Optional:
	// default slog.Default().
	Logger *slog.Logger
	// Now is the clock of dead-letter records. Optional: default time.Now.
	Now func() time.Time
	// After returns a channel that fires after d; ordered triggers wait for
	// their in-process retries with it. Optional: default time.After.
	After func(d time.Duration) <-chan time.Time
	// Concurrency bounds the invocations in flight per trigger. Optional:
	// default 16.
	Concurrency int
	// WorkerLinger is how long a trigger's goroutine that finished a
	// delivery waits for the next one before it exits. Optional: default
	// 250ms.
	WorkerLinger time.Duration
	// MaxAckPending bounds the unacknowledged events per trigger (see
	// DefaultMaxAckPending). Optional: default 1000, at least Concurrency.
	MaxAckPending int
	// AckWait is the consumers' ack wait. Optional: default 30s.
	AckWait time.Duration
	// DuplicateWindow is the TTL of delivery records; use the Log's
	// duplicate window. Optional: default 2m (DefaultDuplicateWindow).
	DuplicateWindow time.Duration
	// InvocationTTL is how long async invocation records are kept.
	// Optional: default 24h.
	InvocationTTL time.Duration
	// AsyncMaxAttempts and AsyncBackoff are the retry policy of async
	// invocations (the async trigger's MaxAttempts and Backoff); a
	// function's async policy overrides them per invocation. Optional:
	// default 5 attempts, 1s first backoff (TriggerSpec's defaults).
	AsyncMaxAttempts int
	AsyncBackoff     time.Duration
}

// DispatcherStats are cumulative counters of a Dispatcher.
type DispatcherStats struct {
	Delivered    uint64 // invocations that succeeded (and were acked)
	Failed       uint64 // invocations that failed (retried or dead-lettered)
	DeadLettered uint64 // events appended to a dead-letter topic
	Filtered     uint64 // events acked without invocation because the filter did not match
	Duplicates   uint64 // redeliveries acked without invocation because a delivery record existed
	Malformed    uint64 // entries that are not CloudEvents (dead-lettered as they are)
}

// Dispatcher delivers events to topic triggers: one durable JetStream
// consumer and one delivery loop per trigger.
//
// # Storage format
//
// An event on topic T of app A is one Log entry (EventEntry): subject
// nimbus.events.A.T, data the event in the CloudEvents JSON format
// (cloudevents.Event.AppendJSON, the traceparent extension included), no
// headers, Nats-Msg-Id = IdempotencyKey = hex sha256(source "\x00" id).
// An event re-sent with the same source and id within the Log's duplicate
// window (2 min by default) is acknowledged and not stored again.
//
// # Delivery
//
// Each trigger has a durable pull consumer on the events stream, filtered
// to its topic's subject and to its own replay subject (see Replay),
// explicit ack, DeliverNew (a new trigger gets the
// events appended after Sync created it; an existing one resumes at its
// ack floor, also after a restart). For every event the loop:
//
//   - acks and skips it when the trigger's Filter does not match;
//   - invokes the function in CloudEvents HTTP binary mode: POST /, ce-*
//     headers and Content-Type as cloudevents.WriteRequest writes them,
//     body = data, plus Nimbus-Attempt (1, 2, ...) and Nimbus-Trigger
//     (function/id); the invocation's traceparent is a child span of the
//     event's traceparent extension when it is valid (a new trace
//     otherwise), so a trace runs from publisher to subscriber;
//   - success is no error and a 2xx status: the delivery is recorded and
//     the message acked. Anything else (an error, a timeout, 3xx, 4xx, 5xx)
//     is a failure and is retried: a function that wants to drop an event
//     answers 2xx;
//   - a failed attempt n < MaxAttempts is retried after Backoff*2^(n-1)
//     (±20% jitter, capped at MaxBackoff): unordered triggers nack with
//     that delay, so the server keeps the schedule across restarts and
//     nothing waits in process; ordered triggers retry in process (see
//     trigger);
//   - after attempt MaxAttempts the event is appended to the app's
//     dead-letter topic (TriggerSpec.DeadLetter, "dead-letter") with the
//     extensions ExtDeadError, ExtDeadAttempts, ExtDeadTopic,
//     ExtDeadFunction and ExtDeadTrigger (and the same as Nimbus-Dead-*
//     entry headers), then the message is terminated. An entry that is not
//     a CloudEvent is dead-lettered at once, as it was. A trigger on the
//     dead-letter topic itself drops (and logs) what it cannot deliver
//     instead of looping.
//
// The consumer's MaxDeliver is unlimited on purpose: the dispatcher counts
// attempts (NumDelivered) and dead-letters on the last one; with MaxDeliver
// = MaxAttempts the server would silently drop an event whose dead-letter
// append failed on its last attempt.
//
// # What is guaranteed
//
// At least once: an event the Log acknowledged is invoked on every
// matching trigger until one attempt succeeds, or it is in the dead-letter
// topic. It may run more than once: a crash (or Close) during an
// invocation, or between its success and the record below, redelivers it.
// A delivery that is done (succeeded, dead-lettered, or superseded by a
// debounce) is recorded before its ack: its stream sequence goes into the
// next pack of delivery records (RecordsStream, kept for the duplicate
// window; see records.go), written through the store's commit path and
// fsynced before the ack is sent, so it survives kill -9 and power loss,
// and a redelivered event with a record is acked without running.
// Async invocations have their own records (Invocations). Effects happen
// once only when the function makes them idempotent (the event's
// source+id is its idempotency key).
//
// # Concurrency and ordering
//
// At most Concurrency invocations per trigger run at once; the reader waits
// for a free slot, so the server holds the rest. With OrderingKey, events
// of one key run one at a time in stream order, including their retries;
// other keys proceed (see the comment on trigger for how, and its limit:
// MaxAckPending).
type Dispatcher struct {
	js     jetstream.JetStream
	log    *Log
	inv    Invoker
	opts   DispatcherOptions
	logger *slog.Logger

	syncMu  sync.Mutex // serializes Sync and Close; held while loops start and stop
	recs    *recorder  // delivery records (records.go)
	records *Invocations
	running sync.Map            // position -> attempt, async invocations running here
	loops   map[string]*trigger // consumer name -> running loop
	closed  bool

	// The dispatcher as a component (see component.go): the revision of
	// each app provisioned here, and whether the app's async trigger
	// consumes. provMu serializes Provision, Retire and EnsureAsync (it is
	// taken before syncMu); appsMu guards revs and async, which are written
	// holding both, so either one is enough to read them.
	provMu sync.Mutex
	appsMu sync.RWMutex
	revs   map[string]*model.Revision
	async  map[string]bool

	nDelivered, failed, dead, filtered, dups, malformed atomic.Uint64
	workersStarted                                      atomic.Uint64 // goroutines trigger.spawn started (tests see reuse)

	// onRecorded, if set (tests only, before Sync), is called once a
	// delivery record is on disk, before the ack.
	onRecorded func(*trigger, *delivery)
	// onAsyncRecorded, if set (tests only, before Sync), is called once an
	// async invocation's final record is stored, with its id.
	onAsyncRecorded func(id string)
}

// NewDispatcher returns a Dispatcher delivering the events of log (appended
// on js's stream) to inv. It starts nothing until Sync.
func NewDispatcher(js jetstream.JetStream, log *Log, inv Invoker, opts DispatcherOptions) *Dispatcher {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.After == nil {
		opts.After = time.After
	}
	if opts.WorkerLinger <= 0 {
		opts.WorkerLinger = defaultWorkerLinger
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = DefaultConcurrency
	}
	if opts.MaxAckPending <= 0 {
		opts.MaxAckPending = DefaultMaxAckPending
	}
	opts.MaxAckPending = max(opts.MaxAckPending, opts.Concurrency)
	if opts.AckWait <= 0 {
		opts.AckWait = DefaultAckWait
	}
	if opts.DuplicateWindow <= 0 {
		opts.DuplicateWindow = DefaultDuplicateWindow
	}
	return &Dispatcher{
		js: js, log: log, inv: inv, opts: opts,
		logger: opts.Logger.With("component", "events.dispatch"),
		loops:  map[string]*trigger{},
		revs:   map[string]*model.Revision{},
		async:  map[string]bool{},
	}
}

// Stats returns the Dispatcher's counters.
func (d *Dispatcher) Stats() DispatcherStats {
	return DispatcherStats{
		Delivered: d.nDelivered.Load(), Failed: d.failed.Load(), DeadLettered: d.dead.Load(),
		Filtered: d.filtered.Load(), Duplicates: d.dups.Load(), Malformed: d.malformed.Load(),
	}
}

// Invocation returns the state of the async invocation id: its record,
// or "running" when an attempt runs on this node before any record, or
// "queued" while its event waits. It returns ErrNoRecord for an id that
// names no async invocation (never accepted, or older than the records'
// TTL and the stream's retention).
func (d *Dispatcher) Invocation(ctx context.Context, id string) (*Invocation, error) {
	seq, index, ok := ParseAsyncID(id)
	if !ok {
		return nil, ErrNoRecord
	}
	id = AsyncID(seq, index) // "inv-5.0" is "inv-5"
	if err := d.openRecords(ctx); err != nil {
		return nil, err
	}
	inv, err := d.records.Get(ctx, id)
	if !errors.Is(err, ErrNoRecord) {
		return inv, err
	}
	inv, found, err := QueuedInvocation(ctx, d.js, d.log.Stream(), d.log.prefix, seq, index)
	if err != nil || !found {
		return nil, errors.Join(err, ErrNoRecord)
	}
	if a, ok := d.running.Load(Position(seq, index)); ok {
		inv.State, inv.Attempts = StateRunning, a.(int)
	}
	return inv, nil
}

// InvocationByKey returns the id of a finished async invocation of
// app/function accepted with idempotency key key, while its record exists.
func (d *Dispatcher) InvocationByKey(ctx context.Context, app, function, key string) (string, bool, error) {
	if err := d.openRecords(ctx); err != nil {
		return "", false, err
	}
	return d.records.ByKey(ctx, app, function, key)
}

// HasConsumer reports whether the durable consumer of trigger s exists on
// the server (created by this process or an earlier one).
func (d *Dispatcher) HasConsumer(ctx context.Context, s TriggerSpec) (bool, error) {
	_, err := d.js.Consumer(ctx, d.log.Stream(), consumerName(s.withDefaults()))
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return false, nil
	}
	return err == nil, err
}

// ErrDispatcherClosed is returned by Sync after Close.
var ErrDispatcherClosed = errors.New("events: dispatcher is closed")

// Sync makes the app's trigger consumers match triggers: it creates (or
// updates) a durable consumer and starts a delivery loop for each, and
// stops the loops of and deletes the consumers of the app's triggers that
// are not listed (also those left by an earlier process). Sync(ctx, app,
// nil) removes them all (deactivate). A new trigger receives the events
// appended after Sync created its consumer; an existing one resumes where
// it was.
func (d *Dispatcher) Sync(ctx context.Context, app string, triggers []TriggerSpec) error {
	d.syncMu.Lock()
	defer d.syncMu.Unlock()
	if d.closed {
		return ErrDispatcherClosed
	}
	if err := d.ensureBucket(ctx); err != nil {
		return err
	}
	want := map[string]TriggerSpec{}
	for _, s := range triggers {
		s = s.withDefaults()
		if err := s.validate(app); err != nil {
			return fmt.Errorf("sync triggers of %s: %w", app, err)
		}
		name := consumerName(s)
		if _, dup := want[name]; dup {
			return fmt.Errorf("sync triggers of %s: trigger %s/%s on %s listed twice", app, s.Function, s.ID, s.Topic)
		}
		want[name] = s
	}

	var errs []error
	for name, s := range want {
		if l := d.loops[name]; l != nil {
			if l.spec == s {
				continue
			}
			l.stop()
			delete(d.loops, name)
		}
		cons, err := d.js.CreateOrUpdateConsumer(ctx, d.log.Stream(), d.consumerConfig(name, s))
		if err != nil {
			errs = append(errs, fmt.Errorf("trigger %s/%s: consumer %s: %w", s.Function, s.ID, name, err))
			continue
		}
		d.loops[name] = d.start(name, s, cons)
	}

	// Remove the app's other consumers, running here or left over.
	for name, l := range d.loops {
		if _, ok := want[name]; !ok && l.spec.App == app {
			l.stop()
			delete(d.loops, name)
		}
	}
	st, err := d.js.Stream(ctx, d.log.Stream())
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("sync triggers of %s: %w", app, err))...)
	}
	lister := st.ListConsumers(ctx)
	var stale []string
	for info := range lister.Info() {
		if info.Config.Metadata[metaApp] == app {
			if _, ok := want[info.Name]; !ok {
				stale = append(stale, info.Name)
			}
		}
	}
	if err := lister.Err(); err != nil {
		errs = append(errs, fmt.Errorf("sync triggers of %s: list consumers: %w", app, err))
	}
	for _, name := range stale {
		if err := st.DeleteConsumer(ctx, name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			errs = append(errs, fmt.Errorf("sync triggers of %s: delete consumer %s: %w", app, name, err))
		}
	}
	return errors.Join(errs...)
}

// Close stops every delivery loop and waits for them (and their in-flight
// invocations) to return. Events in flight that did not finish stay
// unacknowledged and are redelivered later. ctx bounds the wait.
func (d *Dispatcher) Close(ctx context.Context) error {
	d.syncMu.Lock()
	d.closed = true
	loops := d.loops
	d.loops = map[string]*trigger{}
	d.syncMu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		for _, l := range loops {
			wg.Go(l.stop)
		}
		wg.Wait()
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("close dispatcher: %w", ctx.Err())
	}
	return err
}

// openRecords opens the invocation records (once) unless d is closed.
func (d *Dispatcher) openRecords(ctx context.Context) error {
	d.syncMu.Lock()
	defer d.syncMu.Unlock()
	if d.closed {
		return ErrDispatcherClosed
	}
	return d.ensureBucket(ctx)
}

func (d *Dispatcher) ensureBucket(ctx context.Context) error {
	if d.recs != nil && d.records != nil {
		return nil
	}
	// Data directories of earlier versions hold the delivery records as a
	// KV bucket, one key per delivery. Its records are at most one
	// duplicate window old, and losing them can only cause a second run,
	// which at-least-once allows: it is deleted, not read.
	if err := d.js.DeleteStream(ctx, "KV_"+oldDeliveredBucket); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("delivery records: delete the old bucket %s: %w", oldDeliveredBucket, err)
	}
	recs, err := openRecorder(ctx, d.log.Committer(), d.opts.DuplicateWindow, d.logger)
	if err != nil {
		return err
	}
	d.recs = recs
	d.records, err = OpenInvocations(ctx, d.log.Committer(), d.opts.InvocationTTL)
	return err
}

func (d *Dispatcher) consumerConfig(name string, s TriggerSpec) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       name,
		Description:   fmt.Sprintf("Nimbus trigger %s/%s#%s on topic %s", s.App, s.Function, s.ID, s.Topic),
		DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       d.opts.AckWait,

		// The topic, and the trigger's own replay subject (deadletter.go).
		FilterSubjects: []string{SubjectFor(d.log.prefix, s.App, s.Topic), ReplaySubject(d.log.prefix, s.App, name)},

		// Unlimited: the dispatcher counts attempts itself (NumDelivered) and
		// dead-letters on the last one. With MaxDeliver = MaxAttempts the
		// server would silently drop an event whose dead-letter append
		// failed on the last attempt; here it comes back and the append is
		// tried again.
		MaxDeliver:    -1,
		MaxAckPending: d.opts.MaxAckPending,
		Metadata: map[string]string{
			metaApp: s.App, metaFunction: s.Function, metaTrigger: s.ID, metaTopic: s.Topic,
		},
	}
}

// consumerName is the durable name of a trigger's consumer: readable parts
// and a hash of the identity (app, function, id, topic), so that any id is
// a valid name and a trigger moved to another topic gets a new consumer.
func consumerName(s TriggerSpec) string {
	h := sha256.Sum256([]byte(s.App + "\x00" + s.Function + "\x00" + s.ID + "\x00" + s.Topic))
	return "trigger_" + nameToken(s.App) + "_" + nameToken(s.Function) + "_" + hex.EncodeToString(h[:8])
}

func nameToken(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			b[i] = '-'
		}
	}
	if len(b) > 32 {
		b = b[:32]
	}
	return string(b)
}

// SubjectFor is the stream subject of an app's topic: prefix + app + "." +
// topic (prefix is the Log's, "nimbus.events." by default).
func SubjectFor(prefix, app, topic string) string { return prefix + app + "." + topic }

// IdempotencyKey is the Nats-Msg-Id of an event: the hex sha256 of its
// source, a NUL byte and its id, so an event re-sent within the duplicate
// window is stored once.
func IdempotencyKey(e *cloudevents.Event) string {
	h := sha256.New()
	h.Write([]byte(e.Source))
	h.Write([]byte{0})
	h.Write([]byte(e.ID))
	return hex.EncodeToString(h.Sum(nil))
}

// EventEntry is the log entry of an event on an app's topic:
// subject nimbus.events.<app>.<topic>, data the event
// in the CloudEvents JSON format, MsgID its IdempotencyKey, no headers
// (the storage format, see Dispatcher). The subject uses the default
// prefix. The event should be valid (ingress validated it).
func EventEntry(app, topic string, e *cloudevents.Event) Entry {
	return Entry{
		Subject: SubjectFor(DefaultSubjectPrefix, app, topic),
		MsgID:   IdempotencyKey(e),
		Data:    e.AppendJSON(make([]byte, 0, 256+len(e.Data)+len(e.Data)/3)),
	}
}

// DecodeEntry reads the event of a stored entry's data.
func DecodeEntry(data []byte) (*cloudevents.Event, error) {
	e := new(cloudevents.Event)
	if err := e.UnmarshalJSON(data); err != nil {
		return nil, fmt.Errorf("decode event: %w", err)
	}
	return e, nil
}

// deadLetterEntry is the entry of an event that failed delivery: the event
// with the Ext* extensions added, on the trigger's dead-letter topic. Its
// MsgID is derived from the trigger and the event's place in the stream
// (its sequence, and its index when it is an entry of a pack), so a dead
// letter appended twice (crash before Term) is stored once.
func (d *Dispatcher) deadLetterEntry(t *trigger, dl *delivery, raw []byte, attempts int, cause string) Entry {
	s, e := t.spec, dl.event
	if len(cause) > 1024 {
		cause = cause[:1024]
	}
	cause = printable(cause)
	hdr := nats.Header{}
	hdr.Set("Nimbus-Dead-Error", cause)
	hdr.Set("Nimbus-Dead-Attempts", fmt.Sprint(attempts))
	hdr.Set("Nimbus-Dead-Topic", s.Topic)
	hdr.Set("Nimbus-Dead-Function", s.Function)
	hdr.Set("Nimbus-Dead-Trigger", s.ID)
	id := sha256.Sum256(fmt.Appendf(nil, "dead-letter\x00%s\x00%s", t.name, t.where(dl)))
	ent := Entry{Subject: SubjectFor(d.log.prefix, s.App, s.DeadLetter), MsgID: hex.EncodeToString(id[:]), Header: hdr}
	if e == nil {
		ent.Data = raw // not a CloudEvent: kept as it was, the headers say why
		return ent
	}
	de := *e
	de.Extensions = maps.Clone(e.Extensions)
	if de.Extensions == nil {
		de.Extensions = map[string]string{}
	}
	de.Extensions[ExtDeadError] = cause
	de.Extensions[ExtDeadAttempts] = fmt.Sprint(attempts)
	de.Extensions[ExtDeadTopic] = s.Topic
	de.Extensions[ExtDeadFunction] = s.Function
	de.Extensions[ExtDeadTrigger] = s.ID
	ent.Data = de.AppendJSON(nil)
	return ent
}

// printable replaces control characters (not allowed in extension values
// or header lines) with spaces.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}
