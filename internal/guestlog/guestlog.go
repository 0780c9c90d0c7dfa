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
	"github.com/nimbus-dev/nimbus/internal/store"
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
	// Seq is the entry's sequence in the logs stream, set by Read. It grows
	// with every entry, so it can resume a read.
	Seq uint64 `json:"-"`
}

// MaxLineBytes caps one log line. A longer line keeps its first MaxLineBytes
// bytes (cut at a UTF-8 boundary) followed by a marker saying how many bytes
// were cut.
const MaxLineBytes = 8 << 10

const (
	// bufferLines is how many lines may wait for the publisher.
	bufferLines = 4096
	// maxPending is how many publishes may wait for their ack.
	maxPending = 1024
	// stallWait is how long the publisher waits for acks when maxPending
	// are outstanding before it drops the line.
	stallWait = time.Second
	// ackTimeout bounds how long one publish waits for its ack.
	ackTimeout = 10 * time.Second
	// warnEvery rate-limits the warning about dropped lines.
	warnEvery = 10 * time.Second
)

// Writer publishes guest log lines to the logs stream without blocking the
// caller. It is safe for concurrent use. Close it before closing the store.
type Writer struct {
	js     jetstream.JetStream
	logger *slog.Logger

	mu     sync.RWMutex // guards closed and sends on lines
	closed bool
	lines  chan Entry
	done   chan struct{} // closed when the publisher goroutine has exited

	dropped  atomic.Uint64
	lastWarn atomic.Int64 // unix nanos of the last drop warning
}

// NewWriter starts a writer publishing through js's connection. It owns one
// publisher goroutine, stopped by Close.
func NewWriter(js jetstream.JetStream, logger *slog.Logger) *Writer {
	if logger == nil {
		logger = slog.Default()
	}
	w := &Writer{
		logger: logger,
		lines:  make(chan Entry, bufferLines),
		done:   make(chan struct{}),
	}
	// A JetStream context of our own, so that Close waits for our pending
	// acks only and the pending bound is ours.
	ownJS, err := jetstream.New(js.Conn(),
		jetstream.WithPublishAsyncMaxPending(maxPending),
		jetstream.WithPublishAsyncTimeout(ackTimeout),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, _ *nats.Msg, err error) {
			w.drop("publish failed", err)
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
		b, err := json.Marshal(e)
		if err != nil {
			w.drop("encode failed", err)
			continue
		}
		if _, err := w.js.PublishAsync(Subject(e.App, e.Function), b, jetstream.WithStallWait(stallWait)); err != nil {
			w.drop("publish failed", err)
		}
	}
}

// drop counts a lost line and warns at most once per warnEvery. It never
// logs the line itself.
func (w *Writer) drop(why string, err error) {
	n := w.dropped.Add(1)
	now := time.Now().UnixNano()
	last := w.lastWarn.Load()
	if now-last < int64(warnEvery) || !w.lastWarn.CompareAndSwap(last, now) {
		return
	}
	args := []any{"reason", why, "dropped_total", n}
	if err != nil {
		args = append(args, "err", err)
	}
	w.logger.Warn("guest log lines dropped", args...)
}

// Dropped reports how many lines were lost since the writer started: the
// buffer was full, the writer was closed, or the publish failed.
func (w *Writer) Dropped() uint64 { return w.dropped.Load() }

// Sink returns the LogSink of one invocation.
func (w *Writer) Sink(app, function, revision, invocation string) runtime.LogSink {
	return &sink{w: w, app: app, function: function, revision: revision, invocation: invocation}
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
		w.drop("writer closed", nil)
		return
	}
	select {
	case w.lines <- e:
	default:
		w.drop("buffer full", nil)
	}
}

type sink struct {
	w                                   *Writer
	app, function, revision, invocation string
}

var _ runtime.LogSink = (*sink)(nil)

// Log records one line; it copies line and never blocks.
func (s *sink) Log(stream, level string, line []byte) {
	s.w.enqueue(Entry{
		Time:       time.Now().UTC(),
		App:        s.app,
		Function:   s.function,
		Revision:   s.revision,
		Invocation: s.invocation,
		Stream:     stream,
		Level:      level,
		Message:    capLine(line),
	})
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

// Subject is the logs subject of one function: nimbus.logs.<app>.<function>.
// Characters that would break a subject token are replaced with '_'.
func Subject(app, function string) string {
	return store.LogsSubjectPrefix + token(app) + "." + token(function)
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
	filter := store.LogsSubjectPrefix + token(q.App) + ".*"
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
	cons, err := js.OrderedConsumer(ctx, store.LogsStream, cfg)
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
		if !inBacklog {
			if err := fn(e.Entry); err != nil {
				return err
			}
			continue
		}
		delivered++
		if tail != nil {
			tail.add(e)
		} else if err := fn(e.Entry); err != nil {
			return err
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
		parts := strings.SplitN(strings.TrimPrefix(msg.Subject(), store.LogsSubjectPrefix), ".", 2)
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
