package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbus-dev/nimbus/internal/store"
)

// Defaults of LogConfig.
const (
	// DefaultStream is the name of the events stream.
	DefaultStream = "NIMBUS_EVENTS"
	// DefaultSubjectPrefix prefixes every event subject:
	// nimbus.events.<app>.<topic>.
	DefaultSubjectPrefix = "nimbus.events."
	// DefaultDuplicateWindow is how long an entry's id is remembered. The
	// Log (and, for a message's own Nats-Msg-Id, the server) keeps every
	// id of the window in memory (about 110-140 bytes of live heap each,
	// measured), so the window is what an ingress burst
	// costs in RAM: see RATIONALE.md ("Events: a 2-minute duplicate
	// window and ingress back-pressure").
	DefaultDuplicateWindow = 2 * time.Minute
	// DefaultMaxBatch is the largest number of entries in one Append (and
	// in one commit of a committer of the Log's own). It is also the
	// server's limit on an atomic batch; a larger MaxBatch is clamped to it.
	DefaultMaxBatch = store.DefaultMaxBatch
	// DefaultMaxEventBytes bounds one entry (data plus headers).
	DefaultMaxEventBytes = 1 << 20
	// DefaultMaxAge is how long events are kept.
	DefaultMaxAge = 7 * 24 * time.Hour
	// DefaultCommitTimeout bounds one commit round trip of a committer of
	// the Log's own.
	DefaultCommitTimeout = store.DefaultCommitTimeout
)

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
	// same MsgID is safe within the duplicate window. It is the commit
	// path's store.ErrOutcomeUnknown.
	ErrOutcomeUnknown = store.ErrOutcomeUnknown
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
	// DuplicateWindow is how long the Log and the stream remember an
	// Entry.MsgID: an entry whose MsgID was stored within the window is
	// acknowledged as a Duplicate and not stored again. Both hold the ids
	// of the window in memory. Optional: default 2m. An existing
	// stream is updated to it at open.
	DuplicateWindow time.Duration
	// MaxBatch is the largest number of entries in one Append, and in one
	// commit of a committer of the Log's own. Optional: default 1000,
	// which is also the server's limit; larger values are clamped to 1000
	// (and to the committer's MaxBatch).
	MaxBatch int
	// MaxEventBytes bounds one entry: its data plus its headers (including
	// Nats-Msg-Id). Optional: default 1 MiB, lowered if the connection's
	// max payload (1 MB on a default server) leaves less room.
	MaxEventBytes int
	// MaxPending bounds the entries waiting for a committer of the Log's
	// own; Append blocks (until its context ends) while the queue is full.
	// Optional: default 16 * MaxBatch.
	MaxPending int
	// MaxAge is how long the stream keeps an event. Optional: default 7
	// days.
	MaxAge time.Duration
	// Replicas of the stream. Optional: default 1 (the embedded server);
	// use 3 on a cluster so an acknowledged event is on a quorum.
	Replicas int
	// CommitTimeout bounds one commit round trip of a committer of the
	// Log's own; past it the batch's callers get ErrOutcomeUnknown.
	// Optional: default 10s.
	CommitTimeout time.Duration
	// Logger receives commit failures. Optional: default slog.Default().
	Logger *slog.Logger
	// Now is the clock of WindowEvents. Optional: default time.Now.
	Now func() time.Time
	// Committer is the commit path the Log appends through. Optional:
	// default a committer of the Log's own (MaxBatch, MaxPending and
	// CommitTimeout configure it; Close closes it). A server passes the
	// store's (store.Store.Committer), so that events share it with every
	// other durable write of the node; that committer's limits then apply.
	Committer *store.Committer
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
	// Seq is the stream sequence of the entry's message; for a Duplicate,
	// of the copy stored first.
	Seq uint64
	// Index is the entry's index in its message when that message is a
	// pack (pack.go), else 0. Position(Seq, Index) is the entry's place in
	// the stream.
	Index int
	// Duplicate is true when an entry with the same MsgID was already
	// stored within the duplicate window (or earlier in the same batch);
	// this entry was not stored again.
	Duplicate bool
}

// LogStats are cumulative counters of a Log.
type LogStats struct {
	Commits    uint64 // write round trips to JetStream that carried entries of this Log (atomic batches or single publishes)
	Messages   uint64 // messages acknowledged (a pack is one), duplicates included
	Packs      uint64 // packs stored
	Entries    uint64 // entries acknowledged, duplicates included
	Duplicates uint64 // entries acknowledged as Duplicate
	Failed     uint64 // entries whose commit failed
	MaxBatch   int    // the largest batch committed so far, in entries
	Splits     uint64 // batches split because the server refused part of them (a duplicate MsgID)
}

// Log appends events to a JetStream stream through the commit path
// (store.Committer) with group commit. It is safe for concurrent use; see
// the package documentation.
type Log struct {
	c        *store.Committer
	own      bool // c is the Log's own: Close closes it
	stream   string
	prefix   string
	maxBatch int
	maxEvent int
	logger   *slog.Logger
	counters store.Counters
	window   time.Duration
	now      func() time.Time
	dedupe   *idIndex // the ids stored within the window, and where (dedupe.go)
	maxPack  int      // the largest pack's data, in bytes

	entries, dups, packs, failed atomic.Uint64
	perMsg                       sync.Map // subject -> *perMessage: entries per message appended

	// mu guards closing; active counts the Append calls under way (Add
	// only while not closing).
	mu      sync.Mutex
	closing bool
	active  sync.WaitGroup

	// gmu guards gathered and gathering: single entries waiting for the
	// Log's own group commit (gather), and whether a goroutine commits them.
	gmu       sync.Mutex
	gathered  []*gatheredCall
	gathering bool

	// abort ends the Append calls under way when Close's context expires.
	abort       context.Context
	cancelAbort context.CancelFunc
}

// OpenLog creates or updates the events stream (file storage, synchronous
// writes on a SyncAlways server, atomic publish allowed, duplicate window)
// and returns the Log. Close stops it.
func OpenLog(ctx context.Context, js jetstream.JetStream, cfg LogConfig) (*Log, error) {
	if cfg.Stream == "" {
		cfg.Stream = DefaultStream
	}
	if cfg.SubjectPrefix == "" {
		cfg.SubjectPrefix = DefaultSubjectPrefix
	}
	if !strings.HasSuffix(cfg.SubjectPrefix, ".") || !store.ValidSubject(strings.TrimSuffix(cfg.SubjectPrefix, ".")) {
		return nil, fmt.Errorf("open event log: subject prefix %q must be a literal subject ending in '.'", cfg.SubjectPrefix)
	}
	if cfg.DuplicateWindow <= 0 {
		cfg.DuplicateWindow = DefaultDuplicateWindow
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.MaxEventBytes <= 0 {
		cfg.MaxEventBytes = DefaultMaxEventBytes
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = DefaultMaxAge
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c, own := cfg.Committer, false
	if c == nil {
		var err error
		c, err = store.NewCommitter(js, store.CommitterOptions{
			MaxBatch: cfg.MaxBatch, MaxPending: cfg.MaxPending, CommitTimeout: cfg.CommitTimeout, Logger: cfg.Logger,
		})
		if err != nil {
			return nil, fmt.Errorf("open event log: %w", err)
		}
		own = true
	}
	maxEvent := min(cfg.MaxEventBytes, c.MaxWriteBytes())

	_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
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
		MaxMsgSize: int32(maxEvent + store.BatchHeaderReserve),
	})
	if err != nil {
		if own {
			_ = c.Close(ctx)
		}
		return nil, fmt.Errorf("open event log: stream %s: %w", cfg.Stream, err)
	}
	dedupe := newIDIndex(cfg.DuplicateWindow)
	begin := time.Now()
	msgs, ids, err := dedupe.loadWindow(ctx, js, cfg.Stream, cfg.Now())
	if err != nil {
		if own {
			_ = c.Close(ctx)
		}
		return nil, fmt.Errorf("open event log: read the ids of the last %v back from %s: %w", cfg.DuplicateWindow, cfg.Stream, err)
	}
	if msgs > 0 {
		cfg.Logger.Info("event log: ids of the duplicate window read back", "stream", cfg.Stream, "messages", msgs, "ids", ids, "took", time.Since(begin).Round(time.Millisecond))
	}
	abort, cancel := context.WithCancel(context.Background())
	l := &Log{
		c:           c,
		own:         own,
		stream:      cfg.Stream,
		prefix:      cfg.SubjectPrefix,
		maxBatch:    min(cfg.MaxBatch, c.MaxBatch()),
		maxEvent:    maxEvent,
		logger:      cfg.Logger.With("component", "events.log", "stream", cfg.Stream),
		window:      cfg.DuplicateWindow,
		now:         cfg.Now,
		dedupe:      dedupe,
		maxPack:     maxEvent - packHeaderReserve,
		abort:       abort,
		cancelAbort: cancel,
	}
	return l, nil
}

// Committer returns the commit path the Log appends through.
func (l *Log) Committer() *store.Committer { return l.c }

// Stream returns the name of the events stream.
func (l *Log) Stream() string { return l.stream }

// MaxEventBytes returns the effective limit on one entry (data plus headers,
// Nats-Msg-Id included).
func (l *Log) MaxEventBytes() int { return l.maxEvent }

// DuplicateWindow returns how long the stream remembers an entry's MsgID.
func (l *Log) DuplicateWindow() time.Duration { return l.window }

// WindowEvents returns how many ids the Log's duplicate index holds: the
// ids of entries stored within the last duplicate window (read back at
// open too), which it and, for messages of their own, the server keep in
// memory.
func (l *Log) WindowEvents() int { return l.dedupe.count(l.now()) }

// Stats returns the Log's counters.
func (l *Log) Stats() LogStats {
	st := l.counters.Stats()
	return LogStats{
		Commits:    st.Commits,
		Messages:   st.Writes,
		Packs:      l.packs.Load(),
		Entries:    l.entries.Load(),
		Duplicates: l.dups.Load(),
		Failed:     l.failed.Load(),
		MaxBatch:   st.MaxBatch,
		Splits:     st.Splits,
	}
}

// Append stores entries and returns one Ack per entry, in order, once every
// entry is durably stored (fsynced; on a quorum with Replicas 3) or
// reported as a duplicate. The entries of one call without headers go, per
// subject, into packs (one message for up to MaxPackEntries of them, see
// pack.go); the call's messages are committed as one unit, with the
// messages of concurrent callers: all of them are stored or none is. An
// entry whose MsgID the Log stored within the duplicate window (or that
// repeats an earlier entry of the call) is not sent: its Ack is a
// Duplicate naming the stored copy. A call that shares an id with a call
// under way waits for that call's outcome first (dedupe.go).
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
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		return nil, ErrClosed
	}
	l.active.Add(1)
	l.mu.Unlock()
	defer l.active.Done()

	var plan appendPlan
	for {
		busy := l.dedupe.reserve(l.now(), entries, &plan)
		if busy == nil {
			break
		}
		select {
		case <-busy.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-l.abort.Done():
			return nil, ErrClosed
		}
	}
	if gatherable(entries, &plan) {
		acks, err := l.gather(ctx, entries, &plan)
		if err != nil {
			return nil, err
		}
		return l.finish(entries, &plan, acks), nil
	}
	// Entries with headers (dead letters, replays), or nothing new.
	writes, places, packs := l.layout(entries, &plan)
	l.observeWrites(writes)
	var results []store.Result
	if len(writes) > 0 {
		u := &store.Unit{Writes: writes, Counters: &l.counters}
		// Close's abort ends the call as the caller's context would.
		cctx, cancel := context.WithCancel(ctx)
		stop := context.AfterFunc(l.abort, cancel)
		var err error
		results, err = l.c.Commit(cctx, u)
		stop()
		cancel()
		if err != nil {
			l.dedupe.settle(l.now(), &plan, nil)
			l.failed.Add(uint64(len(entries)))
			return nil, l.appendErr(ctx, err, places)
		}
	}
	acks, stored := sentAcks(entries, &plan, places, results)
	l.dedupe.settle(l.now(), &plan, stored)
	l.packs.Add(uint64(packs))
	return l.finish(entries, &plan, acks), nil
}

// gatherable reports whether the entries p sends can join the Log's own
// group commit (gather): there is one, and none has headers.
func gatherable(entries []Entry, p *appendPlan) bool {
	n := 0
	for i := range entries {
		if p.kind[i] != planNew {
			continue
		}
		if entries[i].Header != nil {
			return false
		}
		n++
	}
	return n > 0
}

// sentAcks makes the acks of the entries p sent (places and results of
// their writes) and the positions of their ids.
func sentAcks(entries []Entry, p *appendPlan, places []place, results []store.Result) (acks []Ack, stored map[string]uint64) {
	acks = make([]Ack, len(entries))
	stored = make(map[string]uint64, len(p.owned))
	for i := range entries {
		if p.kind[i] != planNew {
			continue
		}
		pl := places[i]
		r := results[pl.write]
		acks[i] = Ack{Seq: r.Seq, Index: pl.index, Duplicate: r.Duplicate}
		if id := entries[i].MsgID; id != "" {
			stored[id] = Position(r.Seq, pl.index)
		}
	}
	return acks, stored
}

// finish fills in the acks of the entries p did not send (copies stored
// earlier, or earlier in the same call) and counts the call.
func (l *Log) finish(entries []Entry, p *appendPlan, acks []Ack) []Ack {
	for i := range entries {
		switch p.kind[i] {
		case planStored:
			acks[i] = Ack{Seq: PositionSeq(p.pos[i]), Index: PositionIndex(p.pos[i]), Duplicate: true}
		case planSameBatch:
			acks[i] = acks[p.of[i]]
			acks[i].Duplicate = true
		}
	}
	dups := 0
	for _, a := range acks {
		if a.Duplicate {
			dups++
		}
	}
	l.entries.Add(uint64(len(entries)))
	l.dups.Add(uint64(dups))
	return acks
}

// gatheredCall is an Append waiting for gather's commit.
type gatheredCall struct {
	entries []Entry
	plan    *appendPlan
	taken   bool // a commit took it (guarded by Log.gmu)
	done    chan gatherResult
}

type gatherResult struct {
	acks []Ack // of the entries the call sent
	err  error
}

// gather appends the entries plan sends through the Log's own group
// commit: the calls that arrive while one commit is in flight make the
// next one, their entries packed per subject together. Many concurrent
// publishes, single events or batches, then cost the server one message
// per subject and commit instead of one each (RATIONALE.md, "Events: one
// message per batch"). A lone call is committed at once: nothing waits
// for a timer. The call's entries stay one atomic unit: the commit is.
func (l *Log) gather(ctx context.Context, entries []Entry, plan *appendPlan) ([]Ack, error) {
	g := &gatheredCall{entries: entries, plan: plan, done: make(chan gatherResult, 1)}
	l.gmu.Lock()
	l.gathered = append(l.gathered, g)
	if !l.gathering {
		l.gathering = true
		go l.commitGathered()
	}
	l.gmu.Unlock()
	var cause error
	select {
	case r := <-g.done:
		return r.acks, r.err
	case <-ctx.Done():
		cause = ctx.Err()
	case <-l.abort.Done():
		cause = ErrClosed
	}
	l.gmu.Lock()
	if !g.taken {
		if i := slices.Index(l.gathered, g); i >= 0 {
			l.gathered = slices.Delete(l.gathered, i, i+1)
		}
		l.gmu.Unlock()
		l.dedupe.settle(l.now(), plan, nil)
		return nil, cause // nothing was sent
	}
	l.gmu.Unlock()
	// Sent: the commit settles the reservation when it ends.
	return nil, fmt.Errorf("events: %w: %w", ErrOutcomeUnknown, cause)
}

// commitGathered commits the gathered calls until none is left.
func (l *Log) commitGathered() {
	for {
		l.gmu.Lock()
		n, size := 0, 0
		// At most maxBatch entries (and so writes: a unit must fit in one
		// commit, and entries of many subjects, or too big to share a
		// message, are a write each), and at least one call (at most
		// maxBatch entries itself).
		for n < len(l.gathered) && (n == 0 || size+len(l.gathered[n].entries) <= l.maxBatch) {
			size += len(l.gathered[n].entries)
			n++
		}
		if n == 0 {
			l.gathering = false
			l.gmu.Unlock()
			return
		}
		calls := slices.Clone(l.gathered[:n])
		l.gathered = slices.Delete(l.gathered, 0, n)
		for _, g := range calls {
			g.taken = true
		}
		l.gmu.Unlock()
		l.commitCalls(calls)
	}
}

// commitCalls commits the entries gathered calls send as one unit and
// answers each call.
func (l *Log) commitCalls(calls []*gatheredCall) {
	type origin struct{ call, entry int }
	var all []Entry
	var from []origin
	for ci, g := range calls {
		for i := range g.entries {
			if g.plan.kind[i] == planNew {
				all = append(all, g.entries[i])
				from = append(from, origin{ci, i})
			}
		}
	}
	writes, places, packs := l.layout(all, &appendPlan{kind: make([]uint8, len(all))}) // every one is new
	l.observeWrites(writes)
	ctx, cancel := context.WithCancel(context.Background())
	stop := context.AfterFunc(l.abort, cancel)
	results, err := l.c.Commit(ctx, &store.Unit{Writes: writes, Counters: &l.counters})
	stop()
	cancel()
	now := l.now()
	// Each call's places, in its own entries' indexes.
	callPlaces := make([][]place, len(calls))
	for ci, g := range calls {
		callPlaces[ci] = make([]place, len(g.entries))
	}
	for k, o := range from {
		callPlaces[o.call][o.entry] = places[k]
	}
	if err != nil {
		err = l.appendErr(context.Background(), err, places)
		ee, _ := errors.AsType[*EntryError](err)
		for ci, g := range calls {
			l.failed.Add(uint64(len(g.entries)))
			gerr := err
			if ee != nil {
				if o := from[ee.Index]; o.call == ci {
					gerr = &EntryError{Index: o.entry, Err: ee.Err}
				} else {
					gerr = fmt.Errorf("events: not stored: an entry committed with them was refused: %w", ee.Err)
				}
			}
			l.dedupe.settle(now, g.plan, nil)
			g.done <- gatherResult{err: gerr}
		}
		return
	}
	for ci, g := range calls {
		acks, stored := sentAcks(g.entries, g.plan, callPlaces[ci], results)
		l.dedupe.settle(now, g.plan, stored)
		g.done <- gatherResult{acks: acks}
	}
	l.packs.Add(uint64(packs))
}

// observeWrites folds the messages about to be appended into their
// subjects' entries per message.
func (l *Log) observeWrites(writes []store.Write) {
	for i := range writes {
		l.observePerMsg(writes[i].Subject, max(1, packCount(writes[i].Header)))
	}
}

// observePerMsg folds a message of n entries appended to subject into
// its moving average (about the last 16 messages).
func (l *Log) observePerMsg(subject string, n int) {
	v, ok := l.perMsg.Load(subject)
	if !ok {
		v, _ = l.perMsg.LoadOrStore(subject, new(perMessage))
	}
	v.(*perMessage).observe(n, 16)
}

// EntriesPerMessage returns about how many entries a message appended to
// subject holds lately: 1 when its entries are not packed, up to
// MaxPackEntries. Consumers count messages; this turns their counts into
// events.
func (l *Log) EntriesPerMessage(subject string) float64 {
	v, ok := l.perMsg.Load(subject)
	if !ok {
		return 1
	}
	per, _ := v.(*perMessage).value()
	return per
}

// place is where layout put an entry: its write (-1 for an entry not
// sent), and its index in that write when the write is a pack.
type place struct{ write, index int }

// layout makes the writes of the entries plan sends: entries without
// headers that go to one subject are packed (as many as fit in a pack,
// see pack.go), the others are single writes. Writes follow the order of
// their first entry.
func (l *Log) layout(entries []Entry, p *appendPlan) (writes []store.Write, places []place, packs int) {
	places = make([]place, len(entries))
	for i := range places {
		places[i].write = -1 // not sent (a duplicate)
	}
	bySubject := map[string][]int{}
	var subjects []string
	for i := range entries {
		if p.kind[i] != planNew {
			continue
		}
		e := &entries[i]
		if e.Header != nil {
			places[i] = place{write: len(writes)}
			writes = append(writes, l.single(e))
			continue
		}
		if _, ok := bySubject[e.Subject]; !ok {
			subjects = append(subjects, e.Subject)
		}
		bySubject[e.Subject] = append(bySubject[e.Subject], i)
	}
	for _, subj := range subjects {
		idx := bySubject[subj]
		for len(idx) > 0 {
			// The longest run that fits in one pack.
			n, size := 0, 0
			for n < len(idx) && n < MaxPackEntries {
				es := packEntrySize(&entries[idx[n]])
				if n > 0 && size+es > l.maxPack {
					break
				}
				size += es
				n++
			}
			if n == 1 {
				places[idx[0]] = place{write: len(writes)}
				writes = append(writes, l.single(&entries[idx[0]]))
				idx = idx[1:]
				continue
			}
			run := make([]*Entry, n)
			data := make([]byte, 0, size)
			for k := range n {
				run[k] = &entries[idx[k]]
				data = appendPackEntry(data, run[k])
				places[idx[k]] = place{write: len(writes), index: k}
			}
			writes = append(writes, store.Write{
				Stream: l.stream, Subject: subj, Data: data, MsgID: packMsgID(run),
				Header: nats.Header{HeaderPack: []string{strconv.Itoa(n)}},
			})
			packs++
			idx = idx[n:]
		}
	}
	return writes, places, packs
}

// single is the write of an entry stored as a message of its own.
func (l *Log) single(e *Entry) store.Write {
	return store.Write{Stream: l.stream, Subject: e.Subject, Header: e.Header, Data: e.Data, MsgID: e.MsgID}
}

// appendErr maps the commit path's error of an Append; places (layout's)
// turn a write's index into the index of its first entry.
func (l *Log) appendErr(ctx context.Context, err error, places []place) error {
	var we *store.WriteError
	switch {
	case errors.As(err, &we):
		idx := we.Index
		for i, p := range places {
			if p.write == we.Index && p.index == 0 {
				idx = i
				break
			}
		}
		we = &store.WriteError{Index: idx, Err: we.Err}
		if errors.Is(err, store.ErrWriteTooLarge) {
			return &EntryError{Index: we.Index, Err: fmt.Errorf("%w: %w", ErrTooLarge, we.Err)}
		}
		return &EntryError{Index: we.Index, Err: fmt.Errorf("%w: %w", ErrInvalidEntry, we.Err)}
	case errors.Is(err, store.ErrCommitterClosed):
		return ErrClosed
	case ctx.Err() == nil && l.abort.Err() != nil && !errors.Is(err, ErrOutcomeUnknown):
		// Aborted by Close before the commit took it: nothing sent.
		return ErrClosed
	}
	return fmt.Errorf("events: %w", err)
}

// Check answers what Append would for e's subject, id, headers and size,
// without appending it.
func (l *Log) Check(e *Entry) error { return l.check(e) }

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

// validSubject reports whether s is a literal NATS subject.
func validSubject(s string) bool { return store.ValidSubject(s) }

// Close stops taking entries, waits for the Append calls under way (their
// entries are committed, not dropped) and, if the Log has a committer of
// its own, closes it. If ctx ends first, the calls under way fail (those
// not yet taken for a commit with ErrClosed, in-flight ones with
// ErrOutcomeUnknown), Close still waits for them to return, and reports
// ctx.Err(). It is safe to call more than once.
func (l *Log) Close(ctx context.Context) error {
	l.mu.Lock()
	l.closing = true
	l.mu.Unlock()
	done := make(chan struct{})
	go func() { l.active.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		l.cancelAbort()
		<-done
		err = fmt.Errorf("close event log: %w", ctx.Err())
	}
	l.cancelAbort()
	if l.own {
		if cerr := l.c.Close(ctx); cerr != nil && err == nil {
			err = fmt.Errorf("close event log: %w", cerr)
		}
	}
	return err
}
