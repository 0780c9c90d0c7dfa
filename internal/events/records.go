package events

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbus-dev/nimbus/internal/store"
)

// Delivery records, packed.
//
// A trigger records a finished delivery before it acks it (see
// trigger.recordDone), so that a redelivery after a lost ack does not run
// the function again. Records are packed: the deliveries of the node that
// finish while one pack is being committed make the next pack, written as
// one message per trigger consumer on RecordsStream (subject
// RecordsSubjectPrefix + consumer; data the events' positions (pack.go), see
// appendPack) through the store's commit path, fsynced before any of their
// acks is sent. The stream keeps a pack for the duplicate window (MaxAge).
//
// A pack costs the server one message however many deliveries it holds.
// The records used to be one KV key per delivery: one more stored message
// per event, and ~320 bytes of the server's memory for its subject, for
// the whole window. RATIONALE.md ("Delivery records are packed") has the
// figures.
//
// Records are read when a trigger's loop starts (its highest recorded
// sequence, trigger.recordsHorizon) and when an event may have run before
// (a redelivery, or a sequence at or below that horizon): the trigger's
// index of recorded sequences is loaded from the stream on the first
// read, and brought up to date from the stream on every miss, so a record
// written a moment ago (by this node or another) is found.
const (
	// RecordsStream is the stream of delivery record packs.
	RecordsStream = "NIMBUS_DELIVERED"
	// RecordsSubjectPrefix + consumer name is the subject of a trigger's
	// packs.
	RecordsSubjectPrefix = "nimbus.delivered."
	// headerRecordsOf says what a pack's numbers are: "positions" (an
	// event's Position, pack.go). A pack without it was written before
	// events were packed and holds stream sequences, read as the
	// position of each message's only entry.
	headerRecordsOf = "Nimbus-Records-Of"
)

// recorder writes the packs of a Dispatcher and answers whether a
// delivery was recorded.
type recorder struct {
	c      *store.Committer
	st     jetstream.Stream
	window time.Duration
	logger *slog.Logger
	// maxPack is the largest pack data in bytes: the store's largest
	// write, less room for the subject and headers.
	maxPack int

	mu      sync.Mutex
	pending map[string][]uint64 // consumer -> positions finished since the last pack
	waiters []func(error)       // one per record in pending: called with the pack's outcome
	writing bool                // a goroutine is writing packs (write)

	imu     sync.Mutex
	indexes map[string]*recordIndex // consumer -> recorded sequences read from the stream
}

// recordIndex is what a trigger's lookups have read of its packs.
type recordIndex struct {
	mu    sync.Mutex
	built time.Time // when it started to read; older than the window, it is read again
	next  uint64    // the first RecordsStream sequence not read yet
	packs []recordPack
}

// recordPack is one pack's sequences, sorted, with their bounds.
type recordPack struct {
	lo, hi uint64
	seqs   []uint64
}

// openRecorder creates or updates RecordsStream with window as its max age.
func openRecorder(ctx context.Context, c *store.Committer, window time.Duration, logger *slog.Logger) (*recorder, error) {
	st, err := c.JetStream().CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:         RecordsStream,
		Description:  "Nimbus finished trigger deliveries: packs of event sequences per consumer",
		Subjects:     []string{RecordsSubjectPrefix + ">"},
		MaxAge:       window,
		MaxMsgs:      -1,
		MaxBytes:     -1,
		MaxConsumers: -1,
		Storage:      jetstream.FileStorage,
		Replicas:     1,
		AllowDirect:  true,
		DenyDelete:   true,
		Duplicates:   min(2*time.Minute, window),
	})
	if err != nil {
		return nil, fmt.Errorf("delivery records %s: %w", RecordsStream, err)
	}
	return &recorder{
		c: c, st: st, window: window, logger: logger,
		maxPack: c.MaxWriteBytes() - 512,
		pending: map[string][]uint64{},
		indexes: map[string]*recordIndex{},
	}, nil
}

// record adds pos (an event's Position) to consumer's next pack and waits until that pack is
// committed (nil), fails (the commit's error), or ctx ends (ctx's error;
// the pack may still be written).
func (r *recorder) record(ctx context.Context, consumer string, pos uint64) error {
	ch := make(chan error, 1)
	r.recordThen(consumer, pos, func(err error) { ch <- err })
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// recordThen adds pos to consumer's next pack and calls then with the
// outcome of its commit (nil once it is on disk), on the goroutine that
// writes packs: then must not block.
func (r *recorder) recordThen(consumer string, pos uint64, then func(error)) {
	r.mu.Lock()
	r.pending[consumer] = append(r.pending[consumer], pos)
	r.waiters = append(r.waiters, then)
	if !r.writing {
		r.writing = true
		go r.write()
	}
	r.mu.Unlock()
}

// write commits packs until nothing is pending: whatever was recorded
// while one pack was in flight is the next one, so packs grow with load
// and nothing waits for a timer.
func (r *recorder) write() {
	for {
		r.mu.Lock()
		if len(r.waiters) == 0 {
			r.writing = false
			r.mu.Unlock()
			return
		}
		pending, waiters := r.pending, r.waiters
		r.pending, r.waiters = map[string][]uint64{}, nil
		r.mu.Unlock()

		err := r.commit(pending)
		for _, then := range waiters {
			then(err)
		}
		r.forgetOldIndexes()
	}
}

// commit writes pending as packs: one message per consumer (more when one
// would exceed the largest write), as few units as the batch limit allows.
// Packs need no unit of their own: a lookup reads them as one set per
// consumer, whatever unit wrote them.
func (r *recorder) commit(pending map[string][]uint64) error {
	var writes []store.Write
	for _, consumer := range slices.Sorted(maps.Keys(pending)) {
		seqs := pending[consumer]
		slices.Sort(seqs)
		seqs = slices.Compact(seqs)
		for len(seqs) > 0 {
			data, n := appendPack(nil, seqs, r.maxPack)
			writes = append(writes, store.Write{Stream: RecordsStream, Subject: RecordsSubjectPrefix + consumer, Data: data, Header: recordsHeader})
			seqs = seqs[n:]
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*store.DefaultCommitTimeout)
	defer cancel()
	for len(writes) > 0 {
		n := min(len(writes), r.c.MaxBatch())
		if _, err := r.c.Commit(ctx, &store.Unit{Writes: writes[:n]}); err != nil {
			return fmt.Errorf("delivery records: %w", err)
		}
		writes = writes[n:]
	}
	return nil
}

// recordsHeader marks the packs written now (headerRecordsOf).
var recordsHeader = nats.Header{headerRecordsOf: []string{"positions"}}

// appendPack appends to b the encoding of the longest prefix of seqs
// (sorted, no duplicates) that fits in max bytes, and returns how many it
// took (at least one). The encoding: uvarint of the first sequence, then
// uvarint of each difference to the previous one.
func appendPack(b []byte, seqs []uint64, max int) ([]byte, int) {
	var prev uint64
	used := 0
	for i, s := range seqs {
		var tmp [binary.MaxVarintLen64]byte
		n := binary.PutUvarint(tmp[:], s-prev)
		if i > 0 && used+n > max {
			return b, i
		}
		b = append(b, tmp[:n]...)
		used += n
		prev = s
	}
	return b, len(seqs)
}

// decodePack reads a pack written by appendPack.
func decodePack(data []byte) (recordPack, error) {
	var p recordPack
	var prev uint64
	for len(data) > 0 {
		d, n := binary.Uvarint(data)
		if n <= 0 {
			return recordPack{}, errors.New("malformed delivery record pack")
		}
		data = data[n:]
		prev += d
		p.seqs = append(p.seqs, prev)
	}
	if len(p.seqs) > 0 {
		p.lo, p.hi = p.seqs[0], p.seqs[len(p.seqs)-1]
	}
	return p, nil
}

// done reports whether consumer recorded the delivery of the event at
// position pos. It reads the packs it has not read yet when pos is not
// among those it has.
func (r *recorder) done(ctx context.Context, consumer string, pos uint64) (bool, error) {
	idx := r.index(consumer)
	idx.mu.Lock()
	defer idx.mu.Unlock()
	if idx.has(pos) {
		return true, nil
	}
	if err := r.read(ctx, consumer, idx); err != nil {
		return false, err
	}
	return idx.has(pos), nil
}

// highest returns the largest event position consumer recorded within
// the window, 0 for none, reading the packs it has not read yet.
func (r *recorder) highest(ctx context.Context, consumer string) (uint64, error) {
	idx := r.index(consumer)
	idx.mu.Lock()
	defer idx.mu.Unlock()
	if err := r.read(ctx, consumer, idx); err != nil {
		return 0, err
	}
	var hi uint64
	for i := range idx.packs {
		hi = max(hi, idx.packs[i].hi)
	}
	return hi, nil
}

// index returns consumer's index, a new one when it has none or when
// its own is older than the window (the stream no longer holds what it
// read first, and neither should memory).
func (r *recorder) index(consumer string) *recordIndex {
	r.imu.Lock()
	defer r.imu.Unlock()
	idx := r.indexes[consumer]
	if idx == nil || time.Since(idx.built) > r.window {
		idx = &recordIndex{built: time.Now(), next: 1}
		r.indexes[consumer] = idx
	}
	return idx
}

// forgetOldIndexes drops the indexes older than the window, read once for
// a redelivery and not needed since.
func (r *recorder) forgetOldIndexes() {
	r.imu.Lock()
	defer r.imu.Unlock()
	for c, idx := range r.indexes {
		if time.Since(idx.built) > r.window {
			delete(r.indexes, c)
		}
	}
}

// read adds to idx the packs of consumer from idx.next to the end of the
// stream. idx.mu is held.
func (r *recorder) read(ctx context.Context, consumer string, idx *recordIndex) error {
	subject := RecordsSubjectPrefix + consumer
	for {
		m, err := r.st.GetMsg(ctx, idx.next, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("delivery records of %s: %w", consumer, err)
		}
		idx.next = m.Sequence + 1
		p, err := decodePack(m.Data)
		if err != nil {
			r.logger.Warn("delivery records: skipped a pack", "consumer", consumer, "seq", m.Sequence, "err", err)
			continue
		}
		if m.Header.Get(headerRecordsOf) == "" {
			for i, s := range p.seqs { // stream sequences, sorted: so are their positions
				p.seqs[i] = Position(s, 0)
			}
			p.lo, p.hi = Position(p.lo, 0), Position(p.hi, 0)
		}
		if len(p.seqs) > 0 {
			idx.packs = append(idx.packs, p)
		}
	}
}

func (idx *recordIndex) has(seq uint64) bool {
	for i := range idx.packs {
		p := &idx.packs[i]
		if seq < p.lo || seq > p.hi {
			continue
		}
		j := sort.Search(len(p.seqs), func(j int) bool { return p.seqs[j] >= seq })
		if j < len(p.seqs) && p.seqs[j] == seq {
			return true
		}
	}
	return false
}
