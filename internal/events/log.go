package events

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of LogConfig.
const (
	// DefaultStream is the name of the events stream.
	DefaultStream = "NIMBUS_EVENTS"
	// DefaultSubjectPrefix prefixes every event subject:
	// nimbus.events.<app>.<topic>.
	DefaultSubjectPrefix = "nimbus.events."
	// DefaultDuplicateWindow is how long a Nats-Msg-Id is remembered.
	DefaultDuplicateWindow = 10 * time.Minute
	// DefaultMaxBatch is the largest number of entries in one commit. It is
	// also the server's limit on an atomic batch (nats-server
	// max_batch_size, 1,000 by default); a larger MaxBatch is clamped to it.
	DefaultMaxBatch = 1000
	// DefaultMaxEventBytes bounds one entry (data plus headers).
	DefaultMaxEventBytes = 1 << 20
	// DefaultMaxAge is how long events are kept.
	DefaultMaxAge = 7 * 24 * time.Hour
	// DefaultCommitTimeout bounds one commit round trip. It matches the
	// server's batch timeout (a staged batch is dropped after 10 s without
	// its commit).
	DefaultCommitTimeout = 10 * time.Second
)

// serverMaxBatch is nats-server's default limit on the number of messages in
// one atomic batch (streamDefaultMaxAtomicBatchSize).
const serverMaxBatch = 1000

// batchHeaderReserve is the room kept below the connection's max payload for
// the headers the Log adds to every entry (Nats-Batch-Id with a ~30 byte id,
// Nats-Batch-Sequence, Nats-Batch-Commit and header framing). Nats-Msg-Id is
// counted in the entry's own size.
const batchHeaderReserve = 160

// Errors returned by Append.
var (
	// ErrClosed means the Log is closed (or closing) and takes no new
	// entries.
	ErrClosed = errors.New("events: log is closed")
	// ErrTooLarge means an entry is larger than the Log's MaxEventBytes
	// (see Log.MaxEventBytes); it is wrapped in an *EntryError.
	ErrTooLarge = errors.New("event too large")
	// ErrInvalidEntry means an entry has a subject outside the stream or a
	// reserved header; it is wrapped in an *EntryError.
	ErrInvalidEntry = errors.New("invalid event entry")
	// ErrTooManyEntries means one Append call carried more entries than
	// MaxBatch: one call is one atomic unit and must fit in one commit.
	ErrTooManyEntries = errors.New("events: too many entries in one append")
	// ErrOutcomeUnknown means the entries were sent but no answer came
	// (the caller's context ended while its batch was in flight, or the
	// commit timed out): they may or may not be stored. Retrying with the
	// same MsgID is safe within the duplicate window.
	ErrOutcomeUnknown = errors.New("events: append outcome unknown (retry with the same MsgID)")
)

// EntryError reports which entry of an Append call was rejected before
// anything was sent. Nothing of that call was appended.
type EntryError struct {
	Index int   // position of the entry in the Append call
	Err   error // ErrTooLarge or ErrInvalidEntry, wrapped with details
}

func (e *EntryError) Error() string { return fmt.Sprintf("events: entry %d: %v", e.Index, e.Err) }
func (e *EntryError) Unwrap() error { return e.Err }

// LogConfig configures OpenLog. The zero value is usable: every field has a
// default.
type LogConfig struct {
	// Stream is the JetStream stream of events. Optional: default
	// "NIMBUS_EVENTS".
	Stream string
	// SubjectPrefix is what every entry's subject starts with; the stream
	// captures SubjectPrefix + ">". Optional: default "nimbus.events.".
	SubjectPrefix string
	// DuplicateWindow is how long the stream remembers a Nats-Msg-Id
	// (Entry.MsgID): an entry whose MsgID was stored within the window is
	// acknowledged as a Duplicate and not stored again. Optional: default
	// 10m.
	DuplicateWindow time.Duration
	// MaxBatch is the largest number of entries in one commit (one atomic
	// batch, one fsync). Optional: default 1000, which is also the server's
	// limit; larger values are clamped to 1000.
	MaxBatch int
	// MaxEventBytes bounds one entry: its data plus its headers (including
	// Nats-Msg-Id). Optional: default 1 MiB, lowered if the connection's
	// max payload (1 MB on a default server) leaves less room.
	MaxEventBytes int
	// MaxPending bounds the entries waiting for the committer; Append
	// blocks (until its context ends) while the queue is full. Optional:
	// default 16 * MaxBatch.
	MaxPending int
	// MaxAge is how long the stream keeps an event. Optional: default 7
	// days.
	MaxAge time.Duration
	// Replicas of the stream. Optional: default 1 (the embedded server);
	// use 3 on a cluster so an acknowledged event is on a quorum.
	Replicas int
	// CommitTimeout bounds one commit round trip; past it the batch's
	// callers get ErrOutcomeUnknown. Optional: default 10s.
	CommitTimeout time.Duration
	// Logger receives commit failures. Optional: default slog.Default().
	Logger *slog.Logger
	// KeyValue, when set, makes the Log a group committer for writes to
	// that existing JetStream KV bucket instead of an event stream: Stream
	// and SubjectPrefix become the bucket's ("KV_<bucket>", "$KV.<bucket>."),
	// the bucket's stream is only updated to allow atomic batches, and
	// MaxAge, DuplicateWindow and Replicas are the bucket's own. An entry
	// with subject "$KV.<bucket>.<key>" is a put of key.
	KeyValue string
}

// Entry is one event to append.
type Entry struct {
	// Subject is where the event is stored; it must start with the Log's
	// subject prefix (nimbus.events.<app>.<topic>).
	Subject string
	// MsgID is the idempotency key (Nats-Msg-Id), for example the hex
	// sha256 of the CloudEvent's source and id. Optional: an entry without
	// one is never deduplicated.
	MsgID string
	// Header is stored with the event. Keys starting with "Nats-" are
	// reserved for JetStream and rejected. The Log does not modify it.
	Header nats.Header
	// Data is the event's payload. The Log does not modify it.
	Data []byte
}

// Ack is the outcome of one appended entry.
type Ack struct {
	// Seq is the entry's stream sequence; for a Duplicate, the sequence of
	// the copy stored first.
	Seq uint64
	// Duplicate is true when an entry with the same MsgID was already
	// stored within the duplicate window (or earlier in the same batch);
	// this entry was not stored again.
	Duplicate bool
}

// LogStats are cumulative counters of a Log.
type LogStats struct {
	Commits    uint64 // write round trips to JetStream (atomic batches or single publishes)
	Entries    uint64 // entries acknowledged, duplicates included
	Duplicates uint64 // entries acknowledged as Duplicate
	Failed     uint64 // entries whose batch failed
	MaxBatch   int    // the largest batch committed so far, in entries
	Splits     uint64 // batches split because the server found a duplicate MsgID in them
}

// Log appends events to a JetStream stream with group commit. It is safe
// for concurrent use; see the package documentation.
type Log struct {
	js       jetstream.JetStream // for pipelined plain publishes (async acks)
	nc       *nats.Conn
	stream   string
	prefix   string
	maxBatch int
	maxEvent int
	maxPend  int
	timeout  time.Duration
	logger   *slog.Logger

	// mu guards the queue. Lock order: mu is never held while sending.
	mu      sync.Mutex
	queue   []*request
	queued  int           // entries in queue
	closing bool          // set by Close: no new requests
	space   chan struct{} // closed (and replaced) when the committer takes from the queue

	wake chan struct{} // capacity 1: the queue changed or Close was called
	done chan struct{} // closed when the committer has returned

	// abort ends in-flight commits when Close's context expires.
	abort       context.Context
	cancelAbort context.CancelFunc

	// Committer-only state.
	batchPrefix string
	batchN      uint64

	commits, entries, dups, failed, splits atomic.Uint64
	largest                                atomic.Int64
}

// request is one Append call waiting for its batch.
type request struct {
	entries []Entry
	state   atomic.Int32  // reqPending -> reqTaken (committer) or reqAbandoned (caller)
	done    chan struct{} // closed by the committer after acks/err are set
	acks    []Ack
	err     error
}

const (
	reqPending int32 = iota
	reqTaken
	reqAbandoned
)

// OpenLog creates or updates the events stream (file storage, synchronous
// writes on a SyncAlways server, atomic publish allowed, duplicate window)
// and starts the Log's committer. Close stops it.
func OpenLog(ctx context.Context, js jetstream.JetStream, cfg LogConfig) (*Log, error) {
	if cfg.KeyValue != "" {
		cfg.Stream, cfg.SubjectPrefix = "KV_"+cfg.KeyValue, "$KV."+cfg.KeyValue+"."
	}
	if cfg.Stream == "" {
		cfg.Stream = DefaultStream
	}
	if cfg.SubjectPrefix == "" {
		cfg.SubjectPrefix = DefaultSubjectPrefix
	}
	if !strings.HasSuffix(cfg.SubjectPrefix, ".") || !validSubject(strings.TrimSuffix(cfg.SubjectPrefix, ".")) {
		return nil, fmt.Errorf("open event log: subject prefix %q must be a literal subject ending in '.'", cfg.SubjectPrefix)
	}
	if cfg.DuplicateWindow <= 0 {
		cfg.DuplicateWindow = DefaultDuplicateWindow
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	cfg.MaxBatch = min(cfg.MaxBatch, serverMaxBatch)
	if cfg.MaxEventBytes <= 0 {
		cfg.MaxEventBytes = DefaultMaxEventBytes
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 16 * cfg.MaxBatch
	}
	cfg.MaxPending = max(cfg.MaxPending, cfg.MaxBatch)
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = DefaultMaxAge
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.CommitTimeout <= 0 {
		cfg.CommitTimeout = DefaultCommitTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	nc := js.Conn()
	maxEvent := cfg.MaxEventBytes
	if mp := int(nc.MaxPayload()) - batchHeaderReserve; mp < maxEvent {
		maxEvent = mp
	}
	if maxEvent <= 0 {
		return nil, fmt.Errorf("open event log: connection max payload %d is too small", nc.MaxPayload())
	}

	var err error
	if cfg.KeyValue != "" {
		err = allowAtomic(ctx, js, cfg.Stream)
	} else {
		_, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
			Name:        cfg.Stream,
			Description: "Nimbus events: " + cfg.SubjectPrefix + "<app>.<topic>",
			Subjects:    []string{cfg.SubjectPrefix + ">"},
			Storage:     jetstream.FileStorage,
			Replicas:    cfg.Replicas,
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			MaxAge:      cfg.MaxAge,
			Duplicates:  cfg.DuplicateWindow,
			// One Append of many entries, and one group commit of many callers,
			// is one atomic batch: one write and one fsync (doc.go).
			AllowAtomicPublish: true,
			// Defence in depth: Append checks sizes before anything is sent.
			MaxMsgSize: int32(maxEvent + batchHeaderReserve),
		})
	}
	if err != nil {
		return nil, fmt.Errorf("open event log: stream %s: %w", cfg.Stream, err)
	}

	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("open event log: batch id prefix: %w", err)
	}
	ajs, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4*plainBatchMax))
	if err != nil {
		return nil, fmt.Errorf("open event log: %w", err)
	}
	abort, cancel := context.WithCancel(context.Background())
	l := &Log{
		js:          ajs,
		nc:          nc,
		stream:      cfg.Stream,
		prefix:      cfg.SubjectPrefix,
		maxBatch:    cfg.MaxBatch,
		maxEvent:    maxEvent,
		maxPend:     cfg.MaxPending,
		timeout:     cfg.CommitTimeout,
		logger:      cfg.Logger.With("component", "events.log", "stream", cfg.Stream),
		space:       make(chan struct{}),
		wake:        make(chan struct{}, 1),
		done:        make(chan struct{}),
		abort:       abort,
		cancelAbort: cancel,
		batchPrefix: hex.EncodeToString(rnd[:]),
	}
	go l.run()
	return l, nil
}

// allowAtomic turns on atomic batch publish on an existing stream.
func allowAtomic(ctx context.Context, js jetstream.JetStream, stream string) error {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return err
	}
	cfg := st.CachedInfo().Config
	if cfg.AllowAtomicPublish {
		return nil
	}
	cfg.AllowAtomicPublish = true
	_, err = js.UpdateStream(ctx, cfg)
	return err
}

// Stream returns the name of the events stream.
func (l *Log) Stream() string { return l.stream }

// MaxEventBytes returns the effective limit on one entry (data plus headers,
// Nats-Msg-Id included).
func (l *Log) MaxEventBytes() int { return l.maxEvent }

// Stats returns the Log's counters.
func (l *Log) Stats() LogStats {
	return LogStats{
		Commits:    l.commits.Load(),
		Entries:    l.entries.Load(),
		Duplicates: l.dups.Load(),
		Failed:     l.failed.Load(),
		MaxBatch:   int(l.largest.Load()),
		Splits:     l.splits.Load(),
	}
}

// Append stores entries and returns one Ack per entry, in order, once every
// entry is durably stored (fsynced; on a quorum with Replicas 3) or
// reported as a duplicate. The entries of one call are committed in one
// atomic batch, together with the entries of concurrent callers: all of
// them are stored or none is, unless the server rejects the batch for a
// duplicate MsgID, in which case the Log splits it (see doc.go).
//
// Errors: an *EntryError (wrapping ErrTooLarge or ErrInvalidEntry) when an
// entry is rejected before anything is sent; ErrTooManyEntries; ErrClosed;
// the commit's error (wrapping the server's *jetstream.APIError where there
// is one) when the batch failed and nothing of it was stored;
// ErrOutcomeUnknown (wrapping ctx.Err() or the timeout) when the call's
// context ended after its batch was sent. If ctx ends before the committer
// took the call, ctx.Err() is returned and nothing was sent.
func (l *Log) Append(ctx context.Context, entries ...Entry) ([]Ack, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	if len(entries) > l.maxBatch {
		return nil, fmt.Errorf("%w: %d entries, at most %d", ErrTooManyEntries, len(entries), l.maxBatch)
	}
	for i := range entries {
		if err := l.check(&entries[i]); err != nil {
			return nil, &EntryError{Index: i, Err: err}
		}
	}
	r := &request{entries: entries, done: make(chan struct{})}
	for {
		l.mu.Lock()
		if l.closing {
			l.mu.Unlock()
			return nil, ErrClosed
		}
		// An empty queue always takes a request, so a call of MaxBatch
		// entries cannot wait forever.
		if l.queued == 0 || l.queued+len(entries) <= l.maxPend {
			l.queue = append(l.queue, r)
			l.queued += len(entries)
			l.mu.Unlock()
			break
		}
		space := l.space
		l.mu.Unlock()
		select {
		case <-space:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	select {
	case l.wake <- struct{}{}:
	default:
	}

	select {
	case <-r.done:
		return r.acks, r.err
	case <-ctx.Done():
		if r.state.CompareAndSwap(reqPending, reqAbandoned) {
			// The committer skips it: nothing of this call is sent.
			return nil, ctx.Err()
		}
		// Already taken: the batch goes on for the other callers.
		return nil, fmt.Errorf("%w: %w", ErrOutcomeUnknown, ctx.Err())
	}
}

// check validates one entry before it is queued.
func (l *Log) check(e *Entry) error {
	if !strings.HasPrefix(e.Subject, l.prefix) || !validSubject(e.Subject) {
		return fmt.Errorf("%w: subject %q must be a literal subject under %s", ErrInvalidEntry, e.Subject, l.prefix)
	}
	size := len(e.Data)
	if e.MsgID != "" {
		if strings.ContainsAny(e.MsgID, "\r\n") {
			return fmt.Errorf("%w: MsgID contains a line break", ErrInvalidEntry)
		}
		size += len(nats.MsgIdHdr) + len(e.MsgID) + 4
	}
	for k, vs := range e.Header {
		if len(k) >= 5 && strings.EqualFold(k[:5], "Nats-") {
			return fmt.Errorf("%w: header %q is reserved for JetStream", ErrInvalidEntry, k)
		}
		if k == "" || strings.ContainsAny(k, ": \r\n") {
			return fmt.Errorf("%w: header name %q", ErrInvalidEntry, k)
		}
		for _, v := range vs {
			if strings.ContainsAny(v, "\r\n") {
				return fmt.Errorf("%w: header %q has a line break in its value", ErrInvalidEntry, k)
			}
			size += len(k) + len(v) + 4 // "k: v\r\n"
		}
	}
	if size > l.maxEvent {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, size, l.maxEvent)
	}
	return nil
}

// validSubject reports whether s is a literal NATS subject: non-empty
// tokens separated by '.', no wildcards, no whitespace.
func validSubject(s string) bool {
	if s == "" {
		return false
	}
	for tok := range strings.SplitSeq(s, ".") {
		if tok == "" || tok == "*" || tok == ">" {
			return false
		}
		if strings.ContainsAny(tok, " \t\r\n*>") {
			return false
		}
	}
	return true
}

// Close stops taking entries, commits everything already queued, stops the
// committer and waits for it. If ctx ends first, in-flight and queued
// appends fail (queued ones with ErrClosed, in-flight ones with
// ErrOutcomeUnknown), Close still waits for the committer to return, and
// reports ctx.Err(). It is safe to call more than once.
func (l *Log) Close(ctx context.Context) error {
	l.mu.Lock()
	l.closing = true
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
	select {
	case <-l.done:
		l.cancelAbort()
		return nil
	case <-ctx.Done():
		l.cancelAbort()
		<-l.done
		return fmt.Errorf("close event log: %w", ctx.Err())
	}
}

// run is the committer: the one goroutine that writes to the stream. It
// returns when the Log is closing and the queue is empty, or on abort.
func (l *Log) run() {
	defer close(l.done)
	for {
		reqs, closing := l.take()
		if len(reqs) > 0 {
			if l.abort.Err() != nil {
				l.release(reqs, nil, ErrClosed)
				continue
			}
			l.commit(reqs)
			continue
		}
		if closing {
			return
		}
		<-l.wake
	}
}

// take removes requests from the head of the queue, up to maxBatch entries,
// marking each taken; requests their caller abandoned are dropped.
func (l *Log) take() ([]*request, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, i := 0, 0
	var reqs []*request
	for ; i < len(l.queue); i++ {
		r := l.queue[i]
		if n > 0 && n+len(r.entries) > l.maxBatch {
			break
		}
		l.queued -= len(r.entries)
		if !r.state.CompareAndSwap(reqPending, reqTaken) {
			continue // abandoned by its caller
		}
		reqs = append(reqs, r)
		n += len(r.entries)
	}
	if i > 0 {
		clear(l.queue[:i])
		l.queue = l.queue[i:]
		if len(l.queue) == 0 {
			l.queue = nil
		}
		close(l.space)
		l.space = make(chan struct{})
	}
	return reqs, l.closing
}

// release wakes the callers of reqs: each gets its slice of acks, or err.
func (l *Log) release(reqs []*request, acks []Ack, err error) {
	off := 0
	for _, r := range reqs {
		if err == nil {
			r.acks = acks[off : off+len(r.entries) : off+len(r.entries)]
		} else {
			r.err = err
		}
		off += len(r.entries)
		close(r.done)
	}
}
