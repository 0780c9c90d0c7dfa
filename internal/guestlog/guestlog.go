package guestlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbus-dev/nimbus/internal/runtime"
)

// Entry is one line a guest wrote.
type Entry struct {
	Time       time.Time `json:"time"`
	App        string    `json:"app"`
	Function   string    `json:"function"`
	Revision   string    `json:"revision,omitempty"`
	Invocation string    `json:"invocation,omitempty"`
	// Stream is "stdout", "stderr" or "log" (the log host function).
	Stream string `json:"stream"`
	// Level is the level given to the log host function; empty for stdout
	// and stderr.
	Level   string `json:"level,omitempty"`
	Message string `json:"message"`
	// Run is the workflow run whose activation wrote the line; empty for
	// other invocations.
	Run string `json:"run,omitempty"`
	// Step is the step of the run that was running when the line was
	// written; nil outside steps (the workflow's own code).
	Step *Step `json:"step,omitempty"`
	// Seq is the entry's sequence in the logs stream, set by Read. It grows
	// with every entry, so it can resume a read.
	Seq uint64 `json:"-"`
}

// Step is the workflow step a line was written in.
type Step struct {
	Name string `json:"name"`
	// Position is the step's position in the run's journal, from 0.
	Position int `json:"position"`
	// Attempt is the attempt of the step running, from 1.
	Attempt int `json:"attempt"`
}

// MaxLineBytes caps one log line. A longer line keeps its first MaxLineBytes
// bytes (cut at a UTF-8 boundary) followed by a marker saying how many bytes
// were cut.
const MaxLineBytes = 8 << 10

// SubjectPrefix prefixes every log subject: nimbus.applogs.<app>.<function>.
// It is outside nimbus.logs.>, which the shared store.LegacyLogsStream
// of earlier versions owns in older data directories: JetStream does not let two
// streams overlap.
const SubjectPrefix = "nimbus.applogs."

// StreamPrefix prefixes the name of every app's logs stream.
const StreamPrefix = "NIMBUS_LOGS_"

// Defaults of Config. docs/observability.md explains the figures.
const (
	DefaultInvocationLines   = 1000
	DefaultInvocationBytes   = 1 << 20
	DefaultAppLinesPerSecond = 1000
	DefaultAppBytesPerSecond = 1 << 20
	DefaultAppMaxBytes       = 128 << 20
	DefaultAppMaxAge         = 7 * 24 * time.Hour
	// AppBurstSeconds is how many seconds of its rate an app may write at
	// once: its token buckets hold that much.
	AppBurstSeconds = 5
)

// Reasons a line is dropped: the reason label of
// nimbus_guest_log_dropped_lines_total.
const (
	ReasonInvocationBudget = "invocation_budget"
	ReasonAppRate          = "app_rate"
	ReasonBufferFull       = "buffer_full"
	ReasonPublishFailed    = "publish_failed"
	ReasonWriterClosed     = "writer_closed"
	ReasonEncodeFailed     = "encode_failed"
	ReasonDiskFull         = "disk_full"
)

// DropCounter counts dropped lines by app and reason (one of the Reason
// constants). *telemetry.Metrics implements it as
// nimbus_guest_log_dropped_lines_total{app,reason}.
type DropCounter interface {
	GuestLogDropped(app, reason string)
}

// Config configures a Writer. The zero value is usable: every field has a
// default.
type Config struct {
	// Logger receives the writer's own warnings. Optional: default
	// slog.Default().
	Logger *slog.Logger
	// Metrics counts dropped lines by app and reason. Optional: default nil
	// counts them in Dropped only.
	Metrics DropCounter
	// InvocationLines and InvocationBytes are the budget of one invocation:
	// lines past either are counted, not stored, and one marker entry says
	// how many when the invocation ends. Optional: default 1000 lines and
	// 1MiB.
	InvocationLines int
	InvocationBytes int64
	// AppLinesPerSecond and AppBytesPerSecond are the rate budget of one app
	// on this node (token buckets holding AppBurstSeconds of rate), so that
	// many invocations together cannot flood the node's log path either.
	// Optional: default 1000 lines/s and 1MiB/s.
	AppLinesPerSecond float64
	AppBytesPerSecond float64
	// AppMaxBytes and AppMaxAge bound each app's logs stream; past them the
	// app's own oldest entries go, never another app's. Optional: default
	// 128MiB and 7 days.
	AppMaxBytes int64
	AppMaxAge   time.Duration
	// Now is the clock of the rate budget. Optional: default time.Now.
	Now func() time.Time
	// CheckSpace, if set, is asked before each line is published; a line
	// is dropped (reason disk_full) while it returns an error, so that a
	// full disk never reaches the logs streams (nats-server stops a
	// stream whose write failed until it restarts). Optional: the store's
	// CheckSpace.
	CheckSpace func() error
}

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.InvocationLines <= 0 {
		c.InvocationLines = DefaultInvocationLines
	}
	if c.InvocationBytes <= 0 {
		c.InvocationBytes = DefaultInvocationBytes
	}
	if c.AppLinesPerSecond <= 0 {
		c.AppLinesPerSecond = DefaultAppLinesPerSecond
	}
	if c.AppBytesPerSecond <= 0 {
		c.AppBytesPerSecond = DefaultAppBytesPerSecond
	}
	if c.AppMaxBytes <= 0 {
		c.AppMaxBytes = DefaultAppMaxBytes
	}
	if c.AppMaxAge <= 0 {
		c.AppMaxAge = DefaultAppMaxAge
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

const (
	// bufferLines is how many lines may wait for the publisher.
	bufferLines = 4096
	// maxPending is how many publishes may wait for their ack.
	maxPending = 1024
	// stallWait is how long the publisher waits for acks when maxPending
	// are outstanding before it drops the line.
	stallWait = time.Second
	// ackTimeout bounds how long one publish waits for its ack, and one
	// stream creation.
	ackTimeout = 10 * time.Second
	// warnEvery rate-limits the warning about dropped lines.
	warnEvery = 10 * time.Second
	// retryStream is how long the publisher waits before trying again to
	// create an app's stream that it failed to create; lines of the app
	// are dropped meanwhile.
	retryStream = time.Second
)

// Writer publishes guest log lines to the logs streams without blocking the
// caller. It is safe for concurrent use. Close it before closing the store.
type Writer struct {
	js     jetstream.JetStream
	cfg    Config
	logger *slog.Logger

	mu     sync.RWMutex // guards closed and sends on lines
	closed bool
	lines  chan Entry
	done   chan struct{} // closed when the publisher goroutine has exited

	appsMu sync.Mutex
	apps   map[string]*appState

	streamsMu sync.Mutex
	// streams holds the apps whose stream exists (true) or failed to be
	// created (false, at streamFailed[app]).
	streams      map[string]bool
	streamFailed map[string]time.Time

	dropped  atomic.Uint64
	lastWarn atomic.Int64 // unix nanos of the last drop warning
}

// NewWriter is New with the default Config and logger.
func NewWriter(js jetstream.JetStream, logger *slog.Logger) *Writer {
	return New(js, Config{Logger: logger})
}

// New starts a writer publishing through js's connection. It owns one
// publisher goroutine, stopped by Close.
func New(js jetstream.JetStream, cfg Config) *Writer {
	cfg = cfg.withDefaults()
	w := &Writer{
		cfg:          cfg,
		logger:       cfg.Logger,
		lines:        make(chan Entry, bufferLines),
		done:         make(chan struct{}),
		apps:         map[string]*appState{},
		streams:      map[string]bool{},
		streamFailed: map[string]time.Time{},
	}
	// A JetStream context of our own, so that Close waits for our pending
	// acks only and the pending bound is ours.
	ownJS, err := jetstream.New(js.Conn(),
		jetstream.WithPublishAsyncMaxPending(maxPending),
		jetstream.WithPublishAsyncTimeout(ackTimeout),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) {
			app := appOfSubject(m.Subject)
			if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
				w.forgetStream(app) // deleted under us: create it again
			}
			w.drop(app, ReasonPublishFailed, err)
		}),
	)
	if err != nil {
		// Only invalid options fail here; ours are constants.
		panic(fmt.Sprintf("guestlog: jetstream context: %v", err))
	}
	w.js = ownJS
	go w.publish()
	return w
}

// publish runs until lines is closed and drained.
func (w *Writer) publish() {
	defer close(w.done)
	for e := range w.lines {
		if w.cfg.CheckSpace != nil {
			if err := w.cfg.CheckSpace(); err != nil {
				w.drop(e.App, ReasonDiskFull, err)
				continue
			}
		}
		if err := w.ensureStream(e.App); err != nil {
			w.drop(e.App, ReasonPublishFailed, err)
			continue
		}
		b, err := json.Marshal(e)
		if err != nil {
			w.drop(e.App, ReasonEncodeFailed, err)
			continue
		}
		if _, err := w.js.PublishAsync(Subject(e.App, e.Function), b, jetstream.WithStallWait(stallWait)); err != nil {
			w.drop(e.App, ReasonPublishFailed, err)
		}
	}
}

// ensureStream creates (or updates to this writer's limits) the logs stream
// of app the first time the writer publishes for it. Only the publisher
// goroutine calls it.
func (w *Writer) ensureStream(app string) error {
	w.streamsMu.Lock()
	ok, failedAt := w.streams[app], w.streamFailed[app]
	w.streamsMu.Unlock()
	if ok {
		return nil
	}
	if !failedAt.IsZero() && w.cfg.Now().Sub(failedAt) < retryStream {
		return fmt.Errorf("logs stream of %s: creation failed %s ago", app, w.cfg.Now().Sub(failedAt).Round(time.Millisecond))
	}
	ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
	defer cancel()
	_, err := w.js.CreateOrUpdateStream(ctx, streamConfig(app, w.cfg))
	w.streamsMu.Lock()
	defer w.streamsMu.Unlock()
	if err != nil {
		w.streamFailed[app] = w.cfg.Now()
		return fmt.Errorf("logs stream of %s: %w", app, err)
	}
	delete(w.streamFailed, app)
	w.streams[app] = true
	return nil
}

func (w *Writer) forgetStream(app string) {
	w.streamsMu.Lock()
	delete(w.streams, app)
	w.streamsMu.Unlock()
}

// streamConfig is the logs stream of one app. Each app has its own stream so
// that its limits evict only its own entries: JetStream's byte limit is per
// stream (per-subject limits count messages only).
func streamConfig(app string, cfg Config) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        StreamName(app),
		Description: "Nimbus guest logs of app " + app + ": " + SubjectPrefix + "<app>.<function>",
		Subjects:    []string{SubjectPrefix + token(app) + ".>"},
		Storage:     jetstream.FileStorage,
		Replicas:    1,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      cfg.AppMaxAge,
		MaxBytes:    cfg.AppMaxBytes,
		// A log line is not worth an fsync: the stream is flushed in the
		// background even though the server runs with SyncAlways. Only
		// allowed on R1 file streams.
		PersistMode: jetstream.AsyncPersistMode,
	}
}

// drop counts a lost line of app and warns at most once per warnEvery. It
// never logs the line itself.
func (w *Writer) drop(app, reason string, err error) {
	n := w.dropped.Add(1)
	if w.cfg.Metrics != nil {
		w.cfg.Metrics.GuestLogDropped(app, reason)
	}
	if reason == ReasonInvocationBudget || reason == ReasonAppRate {
		return // expected, visible in the marker and the metric
	}
	now := time.Now().UnixNano()
	last := w.lastWarn.Load()
	if now-last < int64(warnEvery) || !w.lastWarn.CompareAndSwap(last, now) {
		return
	}
	args := []any{"app", app, "reason", reason, "dropped_total", n}
	if err != nil {
		args = append(args, "err", err)
	}
	w.logger.Warn("guest log lines dropped", args...)
}

// Dropped reports how many lines were not stored since the writer started,
// for any reason: over a budget, the buffer was full, the writer was
// closed, or the publish failed.
func (w *Writer) Dropped() uint64 { return w.dropped.Load() }

// Sink returns the LogSink of one invocation. It enforces the invocation's
// budget and the app's rate budget, and implements runtime.LogFlusher:
// Flush writes the marker of what it dropped.
func (w *Writer) Sink(app, function, revision, invocation string) runtime.LogSink {
	return &sink{w: w, app: w.app(app), entry: Entry{App: app, Function: function, Revision: revision, Invocation: invocation}}
}

// TaggedSink is Sink whose lines are tagged by tag, called as each line
// is written (on the goroutine writing it): a workflow activation's lines
// carry the run and the step running at that moment.
func (w *Writer) TaggedSink(app, function, revision, invocation string, tag func(*Entry)) runtime.LogSink {
	return &sink{w: w, app: w.app(app), entry: Entry{App: app, Function: function, Revision: revision, Invocation: invocation}, tag: tag}
}

// Close stops accepting lines and waits, until ctx is done, for the pending
// ones to be published and acknowledged.
func (w *Writer) Close(ctx context.Context) error {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.lines)
	}
	w.mu.Unlock()
	select {
	case <-w.done:
	case <-ctx.Done():
		return fmt.Errorf("close guest log writer: %w", ctx.Err())
	}
	select {
	case <-w.js.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("close guest log writer: waiting for %d acks: %w", w.js.PublishAsyncPending(), ctx.Err())
	}
}

func (w *Writer) enqueue(e Entry) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		w.drop(e.App, ReasonWriterClosed, nil)
		return
	}
	select {
	case w.lines <- e:
	default:
		w.drop(e.App, ReasonBufferFull, nil)
	}
}

// capLine drops one trailing newline and truncates to MaxLineBytes.
func capLine(line []byte) string {
	line = trimNewline(line)
	if len(line) <= MaxLineBytes {
		return string(line)
	}
	cut := MaxLineBytes
	// Back up to a rune boundary (at most 3 bytes) so the cut is valid UTF-8.
	for i := 0; i < utf8.UTFMax && cut > 0 && !utf8.RuneStart(line[cut]); i++ {
		cut--
	}
	return fmt.Sprintf("%s… [truncated %d bytes]", line[:cut], len(line)-cut)
}

func trimNewline(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
		if n := len(b); n > 0 && b[n-1] == '\r' {
			b = b[:n-1]
		}
	}
	return b
}

// Subject is the logs subject of one function:
// nimbus.applogs.<app>.<function>. Characters that would break a subject
// token are replaced with '_'.
func Subject(app, function string) string {
	return SubjectPrefix + token(app) + "." + token(function)
}

// StreamName is the name of app's logs stream: NIMBUS_LOGS_<app>, with
// characters a stream name cannot hold replaced with '_'.
func StreamName(app string) string {
	return StreamPrefix + strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, token(app))
}

// appOfSubject is the app token of a logs subject.
func appOfSubject(subject string) string {
	app, _, _ := strings.Cut(strings.TrimPrefix(subject, SubjectPrefix), ".")
	return app
}

func token(s string) string {
	if s == "" {
		return "_"
	}
	return strings.Map(func(r rune) rune {
		if r == '.' || r == '*' || r == '>' || r <= ' ' || r == 0x7f {
			return '_'
		}
		return r
	}, s)
}

// Query selects entries to Read.
type Query struct {
	// App is required.
	App string
	// Function selects one function; "" means all functions of App.
	Function string
	// Since skips entries stored before it. Zero means from the oldest kept
	// entry.
	Since time.Time
	// Limit keeps only the last Limit entries of those stored when Read
	// starts (like tail -n). Zero means all. Entries arriving later (Follow)
	// are all delivered.
	Limit int
	// Follow keeps Read streaming new entries until its context is done.
	Follow bool
	// Run keeps the lines of one workflow run (Entry.Run); "" keeps all.
	// Limit counts the lines kept.
	Run string
}

// Read calls fn for each entry matching q, in the order they were written.
// Without Follow it returns once the entries stored when it started have
// been delivered; with Follow it returns nil when ctx is done. An error from
// fn stops Read and is returned.
func Read(ctx context.Context, js jetstream.JetStream, q Query, fn func(Entry) error) error {
	if q.App == "" {
		return errors.New("read logs: app is required")
	}
	if q.Limit < 0 {
		return fmt.Errorf("read logs: limit %d is negative", q.Limit)
	}
	filter := SubjectPrefix + token(q.App) + ".*"
	if q.Function != "" {
		filter = Subject(q.App, q.Function)
	}
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	}
	if !q.Since.IsZero() {
		since := q.Since
		cfg.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		cfg.OptStartTime = &since
	}
	stream := StreamName(q.App)
	cons, err := js.OrderedConsumer(ctx, stream, cfg)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		// The app has not logged yet. A plain read has nothing to show;
		// a follow creates the stream (with the default limits, which the
		// first Writer to publish replaces with its own) and waits on it.
		if !q.Follow {
			return nil
		}
		if _, err := js.CreateStream(ctx, streamConfig(q.App, Config{}.withDefaults())); err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return fmt.Errorf("read logs of %s: create stream: %w", q.App, err)
		}
		cons, err = js.OrderedConsumer(ctx, stream, cfg)
	}
	if err != nil {
		return fmt.Errorf("read logs of %s: %w", q.App, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("read logs of %s: %w", q.App, err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()

	// The consumer was created by Messages: its pending count is the backlog
	// at the start of the read.
	var backlog uint64
	if info := cons.CachedInfo(); info != nil {
		backlog = info.NumPending
	}
	var tail *ring
	if q.Limit > 0 {
		tail = newRing(q.Limit)
	}
	if backlog == 0 && !q.Follow {
		return nil
	}
	inBacklog := backlog > 0
	var delivered uint64
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				if q.Follow {
					return nil
				}
				return fmt.Errorf("read logs of %s: %w", q.App, ctx.Err())
			}
			return fmt.Errorf("read logs of %s: %w", q.App, err)
		}
		e := decode(msg)
		keep := q.Run == "" || e.Run == q.Run
		if !inBacklog {
			if !keep {
				continue
			}
			if err := fn(e.Entry); err != nil {
				return err
			}
			continue
		}
		delivered++
		switch {
		case !keep:
		case tail != nil:
			tail.add(e)
		default:
			if err := fn(e.Entry); err != nil {
				return err
			}
		}
		// Caught up with what was stored when the read began (or with the
		// stream, if some of that expired meanwhile).
		if delivered >= backlog || e.pending == 0 {
			inBacklog = false
			if tail != nil {
				for _, e := range tail.entries() {
					if err := fn(e.Entry); err != nil {
						return err
					}
				}
			}
			if !q.Follow {
				return nil
			}
		}
	}
}

// decoded is an entry with the consumer's pending count after it.
type decoded struct {
	Entry
	pending uint64
}

// decode turns a message into an entry. A message that is not an entry (a
// raw publish to a logs subject) becomes an entry with the raw text.
func decode(msg jetstream.Msg) decoded {
	var d decoded
	if err := json.Unmarshal(msg.Data(), &d.Entry); err != nil {
		d.Entry = Entry{Message: capLine(msg.Data())}
		parts := strings.SplitN(strings.TrimPrefix(msg.Subject(), SubjectPrefix), ".", 2)
		if len(parts) == 2 {
			d.App, d.Function = parts[0], parts[1]
		}
	}
	if meta, err := msg.Metadata(); err == nil {
		d.Seq = meta.Sequence.Stream
		d.pending = meta.NumPending
		if d.Time.IsZero() {
			d.Time = meta.Timestamp
		}
	} else {
		d.pending = 1 // unknown: do not end the backlog on this message
	}
	return d
}

// ring keeps the last n entries; it grows up to n as entries arrive.
type ring struct {
	n    int
	buf  []decoded
	next int // oldest entry once len(buf) == n
}

func newRing(n int) *ring { return &ring{n: n} }

func (r *ring) add(e decoded) {
	if len(r.buf) < r.n {
		r.buf = append(r.buf, e)
		return
	}
	r.buf[r.next] = e
	r.next = (r.next + 1) % r.n
}

func (r *ring) entries() []decoded {
	out := make([]decoded, 0, len(r.buf))
	out = append(out, r.buf[r.next:]...)
	return append(out, r.buf[:r.next]...)
}
