package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of CommitterOptions.
const (
	// DefaultMaxBatch is the largest number of writes in one commit. It is
	// also the server's limit on an atomic batch (nats-server
	// max_batch_size, 1,000 by default); a larger MaxBatch is clamped to it.
	DefaultMaxBatch = 1000
	// DefaultCommitTimeout bounds one commit round trip. It matches the
	// server's batch timeout (a staged batch is dropped after 10 s without
	// its commit).
	DefaultCommitTimeout = 10 * time.Second
)

// serverMaxBatch is nats-server's default limit on the number of messages in
// one atomic batch (streamMaxAtomicBatchSize).
const serverMaxBatch = 1000

// BatchHeaderReserve is the room a write leaves below the connection's max
// payload for the headers the committer adds (Nats-Batch-Id with a ~30 byte
// id, Nats-Batch-Sequence, Nats-Batch-Commit, Nats-Expected-Last-Subject-
// Sequence, Nats-TTL and header framing). Nats-Msg-Id and the write's own
// headers count in the write's size.
const BatchHeaderReserve = 256

// Errors of the commit path.
var (
	// ErrCommitterClosed means the committer is closed (or closing) and
	// takes no new units.
	ErrCommitterClosed = errors.New("store: committer is closed")
	// ErrOutcomeUnknown means the writes were sent but no answer came (the
	// caller's context ended while its commit was in flight, or the commit
	// timed out): they may or may not be stored. Retrying with the same
	// MsgID is safe within the stream's duplicate window.
	ErrOutcomeUnknown = errors.New("store: commit outcome unknown (retry with the same MsgID)")
	// ErrMultiStream means a unit's writes name more than one stream: a
	// JetStream atomic batch lives in one stream, and the commit path does
	// not yet make a unit across streams atomic (RATIONALE.md).
	ErrMultiStream = errors.New("store: a unit of work must write to one stream")
	// ErrTooManyWrites means a unit has more writes than the committer's
	// MaxBatch: a unit is one atomic batch and must fit in one.
	ErrTooManyWrites = errors.New("store: too many writes in one unit")
	// ErrWriteTooLarge means a write is larger than the connection allows
	// once the committer's headers are added; it is wrapped in a
	// *WriteError.
	ErrWriteTooLarge = errors.New("store: write too large")
	// ErrInvalidWrite means a write has no stream, an invalid subject or a
	// header the committer reserves; it is wrapped in a *WriteError.
	ErrInvalidWrite = errors.New("store: invalid write")
)

// WriteError reports which write of a unit was rejected before anything
// was sent. Nothing of that unit was written.
type WriteError struct {
	Index int   // position of the write in Unit.Writes
	Err   error // ErrWriteTooLarge or ErrInvalidWrite, wrapped with details
}

func (e *WriteError) Error() string { return fmt.Sprintf("store: write %d: %v", e.Index, e.Err) }
func (e *WriteError) Unwrap() error { return e.Err }

// Write is one message of a unit of work: a stream append or a KV update
// (see KVPut and KVDelete).
type Write struct {
	// Stream is the JetStream stream that captures Subject. Required; every
	// write of a unit names the same stream.
	Stream string
	// Subject is where the message is stored.
	Subject string
	// Header is stored with the message; the committer copies it and never
	// modifies it. Keys the committer sets (below, and the batch headers)
	// must not be in it.
	Header nats.Header
	// Data is the payload; never modified.
	Data []byte
	// MsgID is the idempotency key (Nats-Msg-Id): a write whose MsgID the
	// stream stored within its duplicate window is not stored again and
	// is reported with Result.Duplicate. Optional.
	MsgID string
	// IfLastSeq makes the write a compare-and-swap: it is stored only if
	// the last message on Subject has this stream sequence (0: no message
	// on Subject). For a KV write that is "the key's revision is n".
	// Optional: nil writes unconditionally.
	IfLastSeq *uint64
	// TTL expires the message (Nats-TTL, rounded up to whole seconds); the
	// stream must allow per-message TTL. Optional: 0 means none.
	TTL time.Duration
}

// KVStream returns the stream of a JetStream KV bucket.
func KVStream(bucket string) string { return "KV_" + bucket }

// KVSubject returns the subject of key in a JetStream KV bucket.
func KVSubject(bucket, key string) string { return "$KV." + bucket + "." + key }

// kvOperation is JetStream KV's header marking a delete (KV-Operation: DEL).
const kvOperation = "KV-Operation"

// KVPut is the write of value under key in a JetStream KV bucket.
func KVPut(bucket, key string, value []byte) Write {
	return Write{Stream: KVStream(bucket), Subject: KVSubject(bucket, key), Data: value}
}

// KVDelete is the write that deletes key from a JetStream KV bucket (a
// delete marker, as jetstream.KeyValue.Delete writes it).
func KVDelete(bucket, key string) Write {
	return Write{Stream: KVStream(bucket), Subject: KVSubject(bucket, key), Header: nats.Header{kvOperation: []string{"DEL"}}}
}

// Unit is a unit of work: writes to one stream committed together, in
// order, all or none (see the package documentation for the one
// exception, duplicates).
type Unit struct {
	Writes []Write
	// Counters, if set, are updated with this unit's share of each commit
	// (for a caller's own metrics). Optional.
	Counters *Counters
}

// Result is the outcome of one write.
type Result struct {
	// Seq is the write's stream sequence (for a KV write, its revision);
	// for a Duplicate, the sequence of the copy stored first.
	Seq uint64
	// Duplicate is true when a write with the same MsgID was already
	// stored within the duplicate window (or earlier in the same commit);
	// this one was not stored again.
	Duplicate bool
}

// CommitStats are cumulative counters of commits.
type CommitStats struct {
	Commits    uint64 // write round trips to JetStream (atomic batches or single publishes)
	Writes     uint64 // writes acknowledged, duplicates included
	Duplicates uint64 // writes acknowledged as Duplicate
	Failed     uint64 // writes whose commit failed
	MaxBatch   int    // the largest batch committed so far, in writes
	Splits     uint64 // batches the server rejected and the committer split to isolate the cause
}

// Counters accumulate CommitStats; the zero value is ready. Safe for
// concurrent use.
type Counters struct {
	commits, writes, dups, failed, splits atomic.Uint64
	largest                               atomic.Int64
}

// Stats returns the counters.
func (c *Counters) Stats() CommitStats {
	return CommitStats{
		Commits:    c.commits.Load(),
		Writes:     c.writes.Load(),
		Duplicates: c.dups.Load(),
		Failed:     c.failed.Load(),
		MaxBatch:   int(c.largest.Load()),
		Splits:     c.splits.Load(),
	}
}

// add records one round trip of n writes (d duplicates among them).
func (c *Counters) add(n, d int, err error) {
	c.commits.Add(1)
	if err != nil {
		c.failed.Add(uint64(n))
		return
	}
	c.writes.Add(uint64(n))
	c.dups.Add(uint64(d))
	for {
		cur := c.largest.Load()
		if int64(n) <= cur || c.largest.CompareAndSwap(cur, int64(n)) {
			return
		}
	}
}

// CommitterOptions configure NewCommitter. The zero value is usable.
type CommitterOptions struct {
	// MaxBatch is the largest number of writes in one commit (one atomic
	// batch, one fsync). Optional: default 1000, which is also the
	// server's limit; larger values are clamped to 1000.
	MaxBatch int
	// MaxPending bounds the writes waiting for commit on one stream;
	// Commit blocks (until its context ends) while that queue is full.
	// Optional: default 16 * MaxBatch.
	MaxPending int
	// CommitTimeout bounds one commit round trip; past it the units of
	// that commit get ErrOutcomeUnknown. Optional: default 10s.
	CommitTimeout time.Duration
	// Logger receives commit failures. Optional: default slog.Default().
	Logger *slog.Logger
	// CheckSpace, if set, is asked before each commit is sent; an error
	// fails the commit's units with it and nothing is sent (the store's
	// free-space reserve, ErrDiskFull). Optional.
	CheckSpace func() error
	// StreamStopped, if set, is asked before each commit to a stream; an
	// error (the stream can take no write until the server restarts)
	// fails the commit's units with it at once, instead of after the
	// commit timeout. Optional.
	StreamStopped func(stream string) error
}

// Committer is the commit path of Nimbus: it commits units of work to
// JetStream streams with group commit. It is safe for concurrent use; see
// the package documentation.
type Committer struct {
	js       jetstream.JetStream // for pipelined plain publishes (async acks)
	mgmt     jetstream.JetStream // for stream info and updates
	nc       *nats.Conn
	maxBatch int
	maxPend  int
	maxWrite int
	timeout  time.Duration
	logger   *slog.Logger
	space    func() error // CommitterOptions.CheckSpace; nil checks nothing
	stopped  func(stream string) error

	// mu guards lanes, every lane's queue and closing. It is never held
	// while sending.
	mu      sync.Mutex
	lanes   map[string]*lane
	closing bool
	wg      sync.WaitGroup // lane goroutines

	// abort ends in-flight commits when Close's context expires.
	abort       context.Context
	cancelAbort context.CancelFunc

	batchPrefix string
	batchN      atomic.Uint64

	stats Counters
}

// lane is the queue and committer goroutine of one stream: commits to one
// stream are serialized (one atomic batch at a time), commits to
// different streams run in parallel.
type lane struct {
	c       *Committer
	stream  string
	queue   []*pending
	queued  int           // writes in queue
	space   chan struct{} // closed (and replaced) when the lane takes from the queue
	running bool          // a goroutine is committing this lane

	// Lane goroutine only.
	atomicOK bool // the stream allows atomic batches (checked or set)
}

// pending is one Commit call waiting for its batch.
type pending struct {
	u       *Unit
	state   atomic.Int32  // pPending -> pTaken (lane) or pAbandoned (caller)
	done    chan struct{} // closed by the lane after results/err are set
	results []Result
	err     error
}

const (
	pPending int32 = iota
	pTaken
	pAbandoned
)

// NewCommitter returns a committer publishing on js's connection. It starts
// no goroutine until units arrive, and its goroutines end when their
// queues are empty; Close stops it for good.
func NewCommitter(js jetstream.JetStream, opts CommitterOptions) (*Committer, error) {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = DefaultMaxBatch
	}
	opts.MaxBatch = min(opts.MaxBatch, serverMaxBatch)
	if opts.MaxPending <= 0 {
		opts.MaxPending = 16 * opts.MaxBatch
	}
	opts.MaxPending = max(opts.MaxPending, opts.MaxBatch)
	if opts.CommitTimeout <= 0 {
		opts.CommitTimeout = DefaultCommitTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	nc := js.Conn()
	maxWrite := int(nc.MaxPayload()) - BatchHeaderReserve
	if maxWrite <= 0 {
		return nil, fmt.Errorf("committer: connection max payload %d is too small", nc.MaxPayload())
	}
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, fmt.Errorf("committer: batch id prefix: %w", err)
	}
	ajs, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4*kvPlainBatchMax))
	if err != nil {
		return nil, fmt.Errorf("committer: %w", err)
	}
	abort, cancel := context.WithCancel(context.Background())
	return &Committer{
		js:          ajs,
		mgmt:        js,
		nc:          nc,
		maxBatch:    opts.MaxBatch,
		maxPend:     opts.MaxPending,
		maxWrite:    maxWrite,
		space:       opts.CheckSpace,
		stopped:     opts.StreamStopped,
		timeout:     opts.CommitTimeout,
		logger:      opts.Logger.With("component", "store.committer"),
		lanes:       map[string]*lane{},
		abort:       abort,
		cancelAbort: cancel,
		batchPrefix: hex.EncodeToString(rnd[:]),
	}, nil
}

// JetStream returns the JetStream context the committer was made with.
func (c *Committer) JetStream() jetstream.JetStream { return c.mgmt }

// MaxWriteBytes returns the largest write (data, the write's headers and
// Nats-Msg-Id) the committer accepts.
func (c *Committer) MaxWriteBytes() int { return c.maxWrite }

// MaxBatch returns the largest number of writes in one commit, and so in
// one unit.
func (c *Committer) MaxBatch() int { return c.maxBatch }

// Stats returns the committer's counters over every stream.
func (c *Committer) Stats() CommitStats { return c.stats.Stats() }

// Commit stores the writes of u and returns one Result per write, in order,
// once every write is durably stored (fsynced; on a quorum with Replicas
// 3) or reported as a duplicate. u is committed in one atomic batch,
// together with the units of concurrent callers to the same stream (one
// write, one fsync); a unit that fails (a compare-and-swap that does not
// hold, a write the server refuses) fails alone: the others of its batch
// are committed without it.
//
// Errors: a *WriteError (wrapping ErrWriteTooLarge or ErrInvalidWrite)
// when a write is rejected before anything is sent; ErrMultiStream;
// ErrTooManyWrites; ErrCommitterClosed; the commit's error (wrapping the
// server's *jetstream.APIError where there is one, for example a
// wrong-last-sequence error for a failed compare-and-swap) when nothing of
// u was stored; ErrOutcomeUnknown (wrapping ctx.Err() or the timeout)
// when ctx ended after u was sent. If ctx ends before u was taken for a
// commit, ctx.Err() is returned and nothing was sent. u must not be
// modified until Commit returns.
func (c *Committer) Commit(ctx context.Context, u *Unit) ([]Result, error) {
	n := len(u.Writes)
	if n == 0 {
		return nil, nil
	}
	if n > c.maxBatch {
		return nil, fmt.Errorf("%w: %d writes, at most %d", ErrTooManyWrites, n, c.maxBatch)
	}
	stream := u.Writes[0].Stream
	for i := range u.Writes {
		w := &u.Writes[i]
		if w.Stream != stream {
			return nil, fmt.Errorf("%w: write %d is to %s, write 0 to %s", ErrMultiStream, i, w.Stream, stream)
		}
		if err := c.check(w); err != nil {
			return nil, &WriteError{Index: i, Err: err}
		}
	}
	p := &pending{u: u, done: make(chan struct{})}
	for {
		c.mu.Lock()
		if c.closing {
			c.mu.Unlock()
			return nil, ErrCommitterClosed
		}
		l := c.lanes[stream]
		if l == nil {
			l = &lane{c: c, stream: stream, space: make(chan struct{})}
			c.lanes[stream] = l
		}
		// An empty queue always takes a unit, so a unit of MaxBatch writes
		// cannot wait forever.
		if l.queued == 0 || l.queued+n <= c.maxPend {
			l.queue = append(l.queue, p)
			l.queued += n
			if !l.running {
				l.running = true
				c.wg.Add(1)
				go l.run()
			}
			c.mu.Unlock()
			break
		}
		space := l.space
		c.mu.Unlock()
		select {
		case <-space:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	select {
	case <-p.done:
		return p.results, p.err
	case <-ctx.Done():
		if p.state.CompareAndSwap(pPending, pAbandoned) {
			// The lane skips it: nothing of this unit is sent.
			return nil, ctx.Err()
		}
		// Already taken: the batch goes on for the other callers.
		return nil, fmt.Errorf("%w: %w", ErrOutcomeUnknown, ctx.Err())
	}
}

// check validates one write before it is queued.
func (c *Committer) check(w *Write) error {
	if w.Stream == "" {
		return fmt.Errorf("%w: no stream", ErrInvalidWrite)
	}
	if !ValidSubject(w.Subject) {
		return fmt.Errorf("%w: subject %q must be a literal subject", ErrInvalidWrite, w.Subject)
	}
	size := len(w.Data)
	if w.MsgID != "" {
		if strings.ContainsAny(w.MsgID, "\r\n") {
			return fmt.Errorf("%w: MsgID contains a line break", ErrInvalidWrite)
		}
		size += len(nats.MsgIdHdr) + len(w.MsgID) + 4
	}
	for k, vs := range w.Header {
		if reservedHeader(k) {
			return fmt.Errorf("%w: header %q is set by the committer", ErrInvalidWrite, k)
		}
		for _, v := range vs {
			size += len(k) + len(v) + 4 // "k: v\r\n"
		}
	}
	if w.TTL < 0 {
		return fmt.Errorf("%w: negative TTL", ErrInvalidWrite)
	}
	if size > c.maxWrite {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrWriteTooLarge, size, c.maxWrite)
	}
	return nil
}

// reservedHeader reports whether the committer sets header k itself.
func reservedHeader(k string) bool {
	switch strings.ToLower(k) {
	case strings.ToLower(nats.MsgIdHdr), strings.ToLower(hdrBatchID), strings.ToLower(hdrBatchSeq),
		strings.ToLower(hdrBatchCommit), strings.ToLower(jetstream.ExpectedLastSubjSeqHeader),
		strings.ToLower(jetstream.MsgTTLHeader):
		return true
	}
	return false
}

// ValidSubject reports whether s is a literal NATS subject: non-empty
// tokens separated by '.', no wildcards, no whitespace.
func ValidSubject(s string) bool {
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

// Close stops taking units, commits everything already queued and waits
// for the lanes. If ctx ends first, in-flight and queued units fail
// (queued ones with ErrCommitterClosed, in-flight ones with
// ErrOutcomeUnknown), Close still waits for the lanes to return, and
// reports ctx.Err(). It is safe to call more than once.
func (c *Committer) Close(ctx context.Context) error {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	done := make(chan struct{})
	go func() { c.wg.Wait(); close(done) }()
	select {
	case <-done:
		c.cancelAbort()
		return nil
	case <-ctx.Done():
		c.cancelAbort()
		<-done
		return fmt.Errorf("close committer: %w", ctx.Err())
	}
}

// run commits the lane's queue until it is empty.
func (l *lane) run() {
	defer l.c.wg.Done()
	for {
		ps := l.take()
		if ps == nil {
			return
		}
		if l.c.abort.Err() != nil {
			for _, p := range ps {
				p.err = ErrCommitterClosed
				close(p.done)
			}
			continue
		}
		l.commit(ps)
	}
}

// take removes units from the head of the queue, up to maxBatch writes,
// marking each taken; units their caller abandoned are dropped. When the
// queue is empty it marks the lane idle and returns nil.
func (l *lane) take() []*pending {
	c := l.c
	c.mu.Lock()
	defer c.mu.Unlock()
	var ps []*pending
	for len(ps) == 0 && len(l.queue) > 0 {
		ps = l.takeLocked()
	}
	if len(ps) == 0 {
		l.running = false
		return nil
	}
	return ps
}

// takeLocked is one pass of take; c.mu is held.
func (l *lane) takeLocked() []*pending {
	c := l.c
	n, i := 0, 0
	var ps []*pending
	for ; i < len(l.queue); i++ {
		p := l.queue[i]
		w := len(p.u.Writes)
		if n > 0 && n+w > c.maxBatch {
			break
		}
		l.queued -= w
		if !p.state.CompareAndSwap(pPending, pTaken) {
			continue // abandoned by its caller
		}
		ps = append(ps, p)
		n += w
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
	return ps
}

// batchID returns a fresh atomic batch id (at most 64 characters).
func (c *Committer) batchID() string {
	return c.batchPrefix + "-" + strconv.FormatUint(c.batchN.Add(1), 36)
}
