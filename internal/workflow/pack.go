package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbus-dev/nimbus/internal/store"
)

// The log side of the journal: every durable change of a run (entries, a
// new record, or both) waits in its app's queue; the app's packer commits
// everything waiting as one message on the log (one plain fsynced
// publish, whatever the number of runs in it), then keeps each change in
// memory (appLog.runs) until the materializer has written it to the run's
// views. The engine is the log's only writer, so it checks the conditions
// of conditional changes itself, in memory, when it queues them: a start
// needs "no record", a control change "the record is still at version v"
// (journal.recordAt), a record written by the run's own activation "the
// record is not final" (a terminated run stays terminated).

// appLog is the log of one app's runs.
type appLog struct {
	j    *journal
	app  string
	view jetstream.Stream // StreamName(app), set by open
	log  jetstream.Stream // LogStreamName(app), set by open

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the packer and the materializer

	openMu sync.Mutex
	opened atomic.Bool
	// viewMu is held to write views (materializeOnce), and read-held by
	// a scan of every record (journal.records).
	viewMu sync.RWMutex

	kick    chan struct{} // wakes the packer
	matKick chan struct{} // wakes the materializer

	// mu guards everything below. It is never held across a commit; a
	// reader may hold it for a copy.
	mu     sync.Mutex
	closed bool
	runs   map[string]*pend // runs with changes queued or not materialized
	queue  []*change
	// lastSeq is the log's last sequence (the expected last sequence of
	// the next pack); matSeq the last one materialized; matGen counts
	// materializations (a run that leaves runs has its views written).
	lastSeq, matSeq, matGen uint64
	unmat                   int // changes committed, not materialized
}

// pend is what the log holds of one run in memory.
type pend struct {
	rec    *Run   // the last record committed and not materialized, or nil
	recVer uint64 // its version: the log sequence of its pack
	ents   []Entry
	seqs   []uint64 // the log sequence of each of ents
	// queued counts changes waiting for a pack or in one, queuedRec those
	// of them that write the record; last is the done channel of the
	// latest (closed when it is settled).
	queued, queuedRec int
	last              chan struct{}
	// deferred is a change of the run alone whose condition held, kept
	// back until something needs it durable (deferral, below): not
	// queued and not counted in queued. lost is the error of a deferred
	// change that failed after someone else flushed it: the run's next
	// change answers it.
	deferred *change
	lost     error
}

// change is one change of one or more runs (a part each), queued for a
// pack: its parts are committed together or not at all.
type change struct {
	parts []part
	data  []byte // its packChanges, marshalled and joined by commas
	state int    // chQueued -> chTaken (packer) or chAbandoned (caller)
	done  chan struct{}
	err   error
	// lead is how many of parts (and dataLead bytes of data) came from
	// its run's deferred change, merged in ahead of its own parts.
	lead, dataLead int
	// deferredOf is the run of a deferred change flushed by another
	// change than its run's own (its failure is kept in pend.lost).
	deferredOf string
}

const (
	chQueued = iota
	chTaken
	chAbandoned
)

// packChange is a change as a pack holds it; packMsg is a pack.
type packChange struct {
	Run     string  `json:"run"`
	Entries []Entry `json:"entries,omitempty"`
	Record  *Run    `json:"record,omitempty"`
}

type packMsg struct {
	Changes []packChange `json:"changes"`
}

// packOverhead is the room a pack's framing takes around its changes.
const packOverhead = 64

// Conditions of a change (cond.kind).
const (
	condNone     = iota
	condNew      // the run has no record: a start
	condVersion  // the record is at version cond.ver
	condNotFinal // the record is not final (or there is none)
)

type cond struct {
	kind int
	ver  uint64
}

// part is what a change does to one run, and its condition.
type part struct {
	run  string
	ents []Entry
	rec  *Run
	c    cond
}

// errFinal is what submit answers a condNotFinal change of a finished run.
var errFinal = fmt.Errorf("%w: its record is final", ErrRunFinished)

func newAppLog(j *journal, app string) *appLog {
	ctx, cancel := context.WithCancel(j.ctx)
	return &appLog{
		j: j, app: app, ctx: ctx, cancel: cancel,
		kick: make(chan struct{}, 1), matKick: make(chan struct{}, 1),
		runs: map[string]*pend{},
	}
}

func (a *appLog) isOpen() bool { return a.opened.Load() }

// open replays the log past the mark into memory and starts the packer
// and the materializer, once.
func (a *appLog) open(ctx context.Context) error {
	a.openMu.Lock()
	defer a.openMu.Unlock()
	if a.opened.Load() {
		return nil
	}
	view, err := a.j.js.Stream(ctx, StreamName(a.app))
	if err != nil {
		return fmt.Errorf("workflow stream of %s: %w", a.app, err)
	}
	log, err := a.j.js.Stream(ctx, LogStreamName(a.app))
	if err != nil {
		return fmt.Errorf("workflow log of %s: %w", a.app, err)
	}
	a.mu.Lock()
	a.view, a.log = view, log
	a.mu.Unlock()
	// Replay what the log keeps, materializing as it goes (memory stays
	// bounded): the packs not materialized, and those whose views the
	// server may not have synced when the node stopped.
	packs := 0
	for {
		n, err := a.catchUp(ctx, matFull)
		if err != nil {
			return err
		}
		packs += n
		if _, err := a.materializeOnce(ctx); err != nil {
			return err
		}
		if n == 0 {
			break
		}
	}
	if packs > 0 {
		a.j.logger.Info("workflow log replayed", "app", a.app, "packs", packs)
	}
	a.wg.Add(2)
	a.j.wg.Add(2)
	go func() { defer a.j.wg.Done(); defer a.wg.Done(); a.packer() }()
	go func() { defer a.j.wg.Done(); defer a.wg.Done(); a.materializer() }()
	a.opened.Store(true)
	a.kickMat()
	return nil
}

// close stops the app's goroutines and waits for them; what is queued
// fails with ErrClosed.
func (a *appLog) close() {
	a.cancel()
	a.wg.Wait()
	a.failQueue(ErrClosed)
}

// catchUp applies the packs of the log past lastSeq to memory, until
// limit changes wait for the materializer (0: no limit), and returns how
// many it applied.
func (a *appLog) catchUp(ctx context.Context, limit int) (int, error) {
	subj := logSubject(a.app)
	n := 0
	for {
		a.mu.Lock()
		from, full := a.lastSeq+1, limit > 0 && a.unmat >= limit
		a.mu.Unlock()
		if full {
			return n, nil
		}
		m, err := a.log.GetMsg(ctx, from, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("workflow log of %s at %d: %w", a.app, from, err)
		}
		var p packMsg
		if err := json.Unmarshal(m.Data, &p); err != nil {
			return n, fmt.Errorf("workflow log of %s at %d: corrupt pack: %w", a.app, m.Sequence, err)
		}
		// Effects first, as send does: the pack may have been committed
		// by a node that died before applying them (effects.go).
		a.applyEffects(ctx, m.Sequence, p.Changes, func(run string) bool { return a.viewShows(ctx, run, m.Sequence) })
		a.mu.Lock()
		for i := range p.Changes {
			c := &p.Changes[i]
			a.applyLocked(c.Run, c.Entries, c.Record, m.Sequence)
		}
		a.lastSeq = m.Sequence
		a.mu.Unlock()
		n++
	}
}

// applyLocked keeps a committed change in memory until it is
// materialized. a.mu is held.
func (a *appLog) applyLocked(run string, ents []Entry, rec *Run, seq uint64) {
	o := a.runs[run]
	if o == nil {
		o = &pend{}
		a.runs[run] = o
	}
	for _, e := range ents {
		o.ents = append(o.ents, e)
		o.seqs = append(o.seqs, seq)
	}
	if rec != nil {
		o.rec, o.recVer = rec, seq
	}
	a.unmat++
}

// submit queues a change of run if c holds, and waits until it is
// committed. It reports false, having written nothing, when c does not
// hold (for condNotFinal it answers errFinal instead).
func (a *appLog) submit(ctx context.Context, run string, ents []Entry, rec *Run, c cond) (bool, error) {
	return a.submitParts(ctx, []part{{run: run, ents: ents, rec: rec, c: c}}, false)
}

// submitParts queues one change made of parts (of distinct runs) if
// every part's condition holds, and waits until it is committed: the
// parts are in one pack, so they are committed together or not at all.
// It reports false, having written nothing, when a condition does not
// hold (errFinal for a condNotFinal one).
//
// lazy (one part, condNone or condNew) does not wait: once the condition
// holds, the change is kept back as the run's deferred change, and
// committed with the run's next change, or when something needs it
// durable (flushLocked, durable). See "Deferral" below.
func (a *appLog) submitParts(ctx context.Context, parts []part, lazy bool) (bool, error) {
	var data []byte
	for k, p := range parts {
		b, err := json.Marshal(&packChange{Run: p.run, Entries: p.ents, Record: p.rec})
		if err != nil {
			return false, err
		}
		if k > 0 {
			data = append(data, ',')
		}
		data = append(data, b...)
	}
	if max := a.j.c.MaxWriteBytes() - packOverhead; len(data) > max {
		return false, fmt.Errorf("%w: a change of run %s is %d bytes, at most %d", store.ErrWriteTooLarge, parts[0].run, len(data), max)
	}
	ch := &change{parts: parts, data: data, done: make(chan struct{})}
	type view struct {
		rec   *Run
		ver   uint64
		found bool
	}
	views := make([]*view, len(parts))
	for {
		// Read the views of the conditional parts whose record is not in
		// memory, outside the lock; then check every condition under it,
		// with nothing materialized in between.
		a.mu.Lock()
		if a.closed {
			a.mu.Unlock()
			return false, ErrClosed
		}
		gen := a.matGen
		need := make([]bool, len(parts))
		for k, p := range parts {
			o := a.runs[p.run]
			need[k] = p.c.kind != condNone && views[k] == nil && (o == nil || (o.rec == nil && o.queuedRec == 0 && (o.deferred == nil || !hasRecord(o.deferred))))
		}
		a.mu.Unlock()
		for k, p := range parts {
			if need[k] {
				rec, ver, found, err := a.j.viewRecord(ctx, a.app, p.run)
				if err != nil {
					return false, err
				}
				views[k] = &view{rec, ver, found}
			}
		}
		a.mu.Lock()
		if a.matGen != gen {
			a.mu.Unlock()
			clear(views) // a view read may predate what was materialized
			continue
		}
		// From here to the queueing the lock is held: a deferred change
		// merged into ch is out of sight of other changes meanwhile.
		if err := a.takeDeferredLocked(ch, lazy); err != nil {
			a.mu.Unlock()
			return false, err
		}
		if ch.lead > 0 && len(ch.data) > a.j.c.MaxWriteBytes()-packOverhead {
			// The run's deferred change and this one do not fit in one
			// message: commit the deferred one first, alone.
			w := a.unmergeLocked(ch, parts)
			a.mu.Unlock()
			if err := a.waitChange(ctx, w); err != nil {
				return false, err
			}
			clear(views)
			continue
		}
		var wait chan struct{}
		again := false
		for k, p := range ch.parts[ch.lead:] {
			if p.c.kind == condNone {
				continue
			}
			o := a.runs[p.run]
			if o != nil && o.deferred != nil && a.flushLocked(p.run) {
				// Kept back since the checks began (a lazy start of the
				// same id): queued now, waited for below.
				a.kickPacker()
			}
			if o != nil && o.queuedRec > 0 {
				// A record write of the run is in flight: a version read
				// before it is stale; the others wait for it.
				if p.c.kind == condVersion {
					a.unmergeLocked(ch, parts)
					a.mu.Unlock()
					return false, nil
				}
				wait = o.last
				break
			}
			var cur *Run
			var ver uint64
			var found bool
			switch {
			case o != nil && o.rec != nil:
				cur, ver, found = o.rec, o.recVer, true
			case views[k] != nil:
				cur, ver, found = views[k].rec, views[k].ver, views[k].found
			default:
				again = true // its record left memory since: read its view
			}
			if again {
				break
			}
			switch {
			case p.c.kind == condNew && found,
				p.c.kind == condVersion && (!found || ver != p.c.ver):
				a.unmergeLocked(ch, parts)
				a.mu.Unlock()
				return false, nil
			case p.c.kind == condNotFinal && found && cur.Done():
				a.unmergeLocked(ch, parts)
				a.mu.Unlock()
				return false, errFinal
			}
		}
		if wait != nil || again {
			a.unmergeLocked(ch, parts)
			a.mu.Unlock()
			if wait != nil {
				select {
				case <-wait:
				case <-ctx.Done():
					return false, ctx.Err()
				}
			}
			clear(views)
			continue
		}
		if lazy {
			o := a.runs[parts[0].run] // takeDeferredLocked made it
			if a.flushLocked(parts[0].run) {
				a.kickPacker() // one kept back meanwhile goes first
			}
			o.deferred = ch
			a.mu.Unlock()
			return true, nil
		}
		a.queueLocked(ch)
		a.mu.Unlock()
		break
	}
	a.kickPacker()
	select {
	case <-ch.done:
		if ch.err != nil {
			return false, ch.err
		}
		return true, nil
	case <-ctx.Done():
		a.mu.Lock()
		defer a.mu.Unlock()
		if ch.state == chQueued && ch.lead > 0 {
			// Abandon this change's own parts; the run's deferred
			// change it carries stays queued.
			for _, p := range ch.parts[ch.lead:] {
				a.unpartLocked(p)
			}
			ch.parts, ch.data, ch.lead, ch.dataLead = ch.parts[:ch.lead], ch.data[:ch.dataLead], 0, 0
			ch.deferredOf = ch.parts[0].run
			return false, ctx.Err()
		}
		if ch.state == chQueued {
			ch.state = chAbandoned
			a.unqueueLocked(ch)
			close(ch.done)
			return false, ctx.Err()
		}
		return false, fmt.Errorf("%w: %w", store.ErrOutcomeUnknown, ctx.Err())
	}
}

// unqueueLocked takes a change that leaves the queue off its runs'
// counts. a.mu is held.
func (a *appLog) unqueueLocked(ch *change) {
	for _, p := range ch.parts {
		a.unpartLocked(p)
	}
}

// unpartLocked takes one part of a change that leaves the queue off its
// run's counts. a.mu is held.
func (a *appLog) unpartLocked(p part) {
	o := a.runs[p.run]
	o.queued--
	if p.rec != nil {
		o.queuedRec--
	}
	a.dropIdleLocked(p.run, o)
}

// dropIdleLocked forgets o, the pend of run, when it holds nothing.
func (a *appLog) dropIdleLocked(run string, o *pend) {
	if o.queued == 0 && o.rec == nil && len(o.ents) == 0 && o.deferred == nil && o.lost == nil {
		delete(a.runs, run)
	}
}

// queueLocked counts ch on its runs and queues it for the packer (the
// caller kicks it). a.mu is held.
func (a *appLog) queueLocked(ch *change) {
	for _, p := range ch.parts {
		o := a.runs[p.run]
		if o == nil {
			o = &pend{}
			a.runs[p.run] = o
		}
		o.queued++
		if p.rec != nil {
			o.queuedRec++
		}
		o.last = ch.done
	}
	a.queue = append(a.queue, ch)
}

// packer commits the queue, one pack at a time, until the app closes.
func (a *appLog) packer() {
	for {
		select {
		case <-a.ctx.Done():
			a.failQueue(ErrClosed)
			return
		case <-a.kick:
		}
		for a.ctx.Err() == nil {
			chs, data, last := a.take()
			if len(chs) == 0 {
				break
			}
			a.send(chs, data, last)
		}
	}
}

// take removes the changes of the next pack from the queue (as many as
// fit in one message) and returns them, the pack, and the log sequence
// it must follow.
func (a *appLog) take() ([]*change, []byte, uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	limit := a.j.c.MaxWriteBytes() - packOverhead
	var chs []*change
	size, i := 0, 0
	for ; i < len(a.queue); i++ {
		ch := a.queue[i]
		if ch.state != chQueued {
			continue
		}
		if len(chs) > 0 && size+len(ch.data)+1 > limit {
			break
		}
		ch.state = chTaken
		chs = append(chs, ch)
		size += len(ch.data) + 1
	}
	clear(a.queue[:i])
	a.queue = a.queue[i:]
	if len(a.queue) == 0 {
		a.queue = nil
	}
	if len(chs) == 0 {
		return nil, nil, 0
	}
	data := make([]byte, 0, size+packOverhead)
	data = append(data, `{"changes":[`...)
	for k, ch := range chs {
		if k > 0 {
			data = append(data, ',')
		}
		data = append(data, ch.data...)
	}
	data = append(data, "]}"...)
	return chs, data, a.lastSeq
}

// send commits one pack and settles its changes.
func (a *appLog) send(chs []*change, data []byte, last uint64) {
	w := store.Write{Stream: LogStreamName(a.app), Subject: logSubject(a.app), Data: data, IfLastSeq: &last}
	res, err := a.j.c.Commit(context.WithoutCancel(a.ctx), &store.Unit{Writes: []store.Write{w}, Counters: &a.j.stats})
	if err == nil {
		seq := res[0].Seq
		if hasEffects(chs) {
			// Before the pack enters memory: the materializer writes its
			// views, which tell a replay its effects were applied, and
			// StepEnd answers, only once they are (effects.go).
			a.applyEffects(context.WithoutCancel(a.ctx), seq, packChanges(chs), nil)
		}
		a.mu.Lock()
		a.lastSeq = seq
		for _, ch := range chs {
			a.unqueueLocked(ch)
			for _, p := range ch.parts {
				a.applyLocked(p.run, p.ents, p.rec, seq)
			}
		}
		a.mu.Unlock()
		for _, ch := range chs {
			close(ch.done)
		}
		a.j.changes.Add(uint64(len(chs)))
		a.kickMat()
		return
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
		err = fmt.Errorf("workflow log of %s: another writer appended to it (is a second node running this app's workflows?): %w", a.app, err)
	} else {
		err = fmt.Errorf("workflow log of %s: commit: %w", a.app, err)
	}
	a.mu.Lock()
	for _, ch := range chs {
		a.unqueueLocked(ch)
		ch.err = err
		if ch.deferredOf != "" {
			// Nobody of its run waits for it: its run's next change
			// answers the error (its activation then reloads the run).
			o := a.runs[ch.deferredOf]
			if o == nil {
				o = &pend{}
				a.runs[ch.deferredOf] = o
			}
			o.lost = err
		}
	}
	a.mu.Unlock()
	// The pack may be stored (the outcome was unknown), and another writer
	// may have appended: the log is the truth, read it before answering.
	if _, cerr := a.catchUp(a.ctx, 0); cerr != nil {
		a.j.logger.Warn("workflow log: catching up after a failed commit", "app", a.app, "error", cerr)
	}
	for _, ch := range chs {
		close(ch.done)
	}
	a.kickMat()
}

// failQueue fails every queued change with err, and any later one.
func (a *appLog) failQueue(err error) {
	a.mu.Lock()
	a.closed = true
	var chs []*change
	for _, ch := range a.queue {
		if ch.state == chQueued {
			ch.state = chTaken
			a.unqueueLocked(ch)
			ch.err = err
			chs = append(chs, ch)
		}
	}
	a.queue = nil
	a.mu.Unlock()
	for _, ch := range chs {
		close(ch.done)
	}
}

func (a *appLog) kickMat() {
	select {
	case a.matKick <- struct{}{}:
	default:
	}
}

// memRecord is a copy of the run's record in memory (committed, not
// materialized) and its version, or nil.
func (a *appLog) memRecord(run string) (*Run, uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if o := a.runs[run]; o != nil && o.rec != nil {
		cp := *o.rec
		return &cp, o.recVer
	}
	return nil, 0
}

// memEntries is a copy of the run's entries in memory and their log
// sequences.
func (a *appLog) memEntries(run string) ([]Entry, []uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if o := a.runs[run]; o != nil {
		return slices.Clone(o.ents), slices.Clone(o.seqs)
	}
	return nil, nil
}

// memRec is a record in memory and its version.
type memRec struct {
	rec *Run
	ver uint64
}

// memRecords copies every record in memory, by run id.
func (a *appLog) memRecords() map[string]memRec {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]memRec, len(a.runs))
	for id, o := range a.runs {
		if o.rec != nil {
			cp := *o.rec
			out[id] = memRec{&cp, o.recVer}
		}
	}
	return out
}

// settled returns once no change of run is queued or in a pack.
func (a *appLog) settled(ctx context.Context, run string) error {
	for {
		a.mu.Lock()
		if a.flushLocked(run) {
			a.kickPacker()
		}
		o := a.runs[run]
		if o == nil || o.queued == 0 {
			a.mu.Unlock()
			return nil
		}
		w := o.last
		a.mu.Unlock()
		select {
		case <-w:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// current is the run's committed record and its version: in memory, else
// the view, read so that a materialization in between cannot hide it.
func (a *appLog) current(ctx context.Context, run string) (*Run, uint64, bool, error) {
	for {
		a.mu.Lock()
		if o := a.runs[run]; o != nil && o.deferred != nil {
			// Someone else names the run: what it has is made durable
			// first (a run started lazily exists for others from then).
			a.mu.Unlock()
			if err := a.settled(ctx, run); err != nil {
				return nil, 0, false, err
			}
			continue
		}
		if o := a.runs[run]; o != nil && o.rec != nil {
			cp, ver := *o.rec, o.recVer
			a.mu.Unlock()
			return &cp, ver, true, nil
		}
		gen := a.matGen
		a.mu.Unlock()
		rec, ver, found, err := a.j.viewRecord(ctx, a.app, run)
		if err != nil {
			return nil, 0, false, err
		}
		a.mu.Lock()
		o := a.runs[run]
		same := (o == nil || o.rec == nil) && a.matGen == gen
		a.mu.Unlock()
		if same {
			return rec, ver, found, nil
		}
	}
}

// appFor is app's open log.
func (j *journal) appFor(app string) (*appLog, error) {
	if a := j.app(app); a != nil {
		return a, nil
	}
	return nil, fmt.Errorf("%w: app %s has no workflows on this node", ErrWorkflowNotFound, app)
}

// commit appends e (if not nil) to the run's journal and makes rec (if
// not nil) its record, in one change. A record is written only over one
// that is not final: over a final one it answers an error wrapping
// ErrRunFinished (errFinal) and writes nothing.
func (j *journal) commit(ctx context.Context, app, run string, e *Entry, rec *Run) error {
	if e == nil && rec == nil {
		return nil
	}
	var ents []Entry
	if e != nil {
		ents = []Entry{*e}
	}
	c := cond{}
	if rec != nil {
		cp := *rec
		rec, c.kind = &cp, condNotFinal
	}
	a, err := j.appFor(app)
	if err == nil {
		_, err = a.submit(ctx, run, ents, rec, c)
	}
	if err != nil {
		return fmt.Errorf("workflow run %s/%s: commit: %w", app, run, err)
	}
	return nil
}

// commitLazy appends e to the run's journal as the run's deferred change
// (see "Deferral" in pack.go): it returns at once; the run's next change
// carries it, or durable commits it.
func (j *journal) commitLazy(ctx context.Context, app, run string, e *Entry) error {
	a, err := j.appFor(app)
	if err == nil {
		_, err = a.submitParts(ctx, []part{{run: run, ents: []Entry{*e}}}, true)
	}
	if err != nil {
		return fmt.Errorf("workflow run %s/%s: commit: %w", app, run, err)
	}
	return nil
}

// durable returns once the run's deferred changes are committed (all of
// them; with entsOnly, none when its only deferred change is a lazy
// start).
func (j *journal) durable(ctx context.Context, app, run string, entsOnly bool) error {
	a := j.app(app)
	if a == nil {
		return nil
	}
	if err := a.durable(ctx, run, entsOnly); err != nil {
		return fmt.Errorf("workflow run %s/%s: commit: %w", app, run, err)
	}
	return nil
}

// commitIf commits ents (nil ones skipped) and rec in one change if the
// run's record is still at version ver (journal.recordAt); it reports
// false (and writes nothing) when it is not.
func (j *journal) commitIf(ctx context.Context, app, run string, ents []*Entry, rec *Run, ver uint64) (bool, error) {
	var es []Entry
	for _, e := range ents {
		if e != nil {
			es = append(es, *e)
		}
	}
	cp := *rec
	a, err := j.appFor(app)
	ok := false
	if err == nil {
		ok, err = a.submit(ctx, run, es, &cp, cond{kind: condVersion, ver: ver})
	}
	if err != nil {
		return false, fmt.Errorf("workflow run %s/%s: commit: %w", app, run, err)
	}
	return ok, nil
}

// create stores a new run, its first record, only if the run has no
// record yet. It reports false when it has one. fresh says the run id
// was just made at random: nothing is checked. lazy makes it the run's
// deferred change (see "Deferral" in pack.go): it is committed with the
// run's next change, or by durable.
func (j *journal) create(ctx context.Context, rec *Run, fresh, lazy bool) (bool, error) {
	cp := *rec
	c := cond{kind: condNew}
	if fresh {
		c.kind = condNone
	}
	a, err := j.appFor(rec.App)
	ok := false
	if err == nil {
		ok, err = a.submitParts(ctx, []part{{run: rec.ID, rec: &cp, c: c}}, lazy)
	}
	if err != nil {
		return false, fmt.Errorf("start workflow run %s/%s: %w", rec.App, rec.ID, err)
	}
	return ok, nil
}

// pending is the number of committed changes not materialized yet.
func (a *appLog) pending() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.unmat
}

// hasEffects reports whether a change of chs carries journaled effects.
func hasEffects(chs []*change) bool {
	for _, ch := range chs {
		for _, p := range ch.parts {
			for _, e := range p.ents {
				if len(e.Effects) > 0 {
					return true
				}
			}
		}
	}
	return false
}

// packChanges is chs as their pack holds them, in its order.
func packChanges(chs []*change) []packChange {
	var out []packChange
	for _, ch := range chs {
		for _, p := range ch.parts {
			out = append(out, packChange{Run: p.run, Entries: p.ents, Record: p.rec})
		}
	}
	return out
}

// Deferral (RATIONALE.md "Durable workflows: a change is durable before
// what depends on it"). A lazy change (a start whose client waits for the
// result, a step's end) is checked like any other, then kept back as its
// run's deferred change instead of queued: the run's next change of its
// own (condNone, condNotFinal: its activation's) carries it, merged ahead
// of its own parts in one change, so one pack commits both or neither.
// Anything else that touches the run (a duplicate start, a signal, a
// control, a read of its current record, settled) flushes it: queues it
// alone, then goes on as with any change in flight. durable is how the
// run's activation makes it durable before an operation that depends on
// it.

// takeDeferredLocked merges the deferred change of ch's run into ch when
// ch is its run's own change (one part, condNone or condNotFinal), and
// flushes the deferred changes of ch's other runs. A lazy ch gets its
// run's pend made. a.mu is held.
func (a *appLog) takeDeferredLocked(ch *change, lazy bool) error {
	own := len(ch.parts)-ch.lead == 1 && (ch.parts[ch.lead].c.kind == condNone || ch.parts[ch.lead].c.kind == condNotFinal)
	for k := ch.lead; k < len(ch.parts); k++ {
		run := ch.parts[k].run
		o := a.runs[run]
		if o == nil {
			if !lazy {
				continue
			}
			o = &pend{}
			a.runs[run] = o
		}
		if own && o.lost != nil {
			err := o.lost
			o.lost = nil
			a.dropIdleLocked(run, o)
			return fmt.Errorf("workflow run %s/%s: an earlier change was not committed: %w", a.app, run, err)
		}
		d := o.deferred
		if d == nil {
			continue
		}
		if !own || ch.lead > 0 {
			if a.flushLocked(run) {
				a.kickPacker()
			}
			continue
		}
		o.deferred = nil
		data := make([]byte, 0, len(d.data)+1+len(ch.data))
		data = append(append(append(data, d.data...), ','), ch.data...)
		// A new slice: the caller's parts keep their conditions (unmerge).
		ch.parts = append(slices.Clone(d.parts), ch.parts...)
		ch.data, ch.lead, ch.dataLead = data, len(d.parts), len(d.data)
		if p := &ch.parts[ch.lead]; p.c.kind == condNotFinal && hasRecord(d) {
			// The deferred change writes the record the condition is
			// about (a start, not final): it holds.
			p.c = cond{}
		}
		return nil
	}
	return nil
}

// unmergeLocked undoes takeDeferredLocked: the deferred parts ch carries
// are queued alone, flushed, and returned (nil when it carries none); own
// are ch's own parts as the caller made them (their conditions).
// a.mu is held.
func (a *appLog) unmergeLocked(ch *change, own []part) *change {
	if ch.lead == 0 {
		return nil
	}
	d := &change{parts: ch.parts[:ch.lead:ch.lead], data: ch.data[:ch.dataLead:ch.dataLead], done: make(chan struct{}), deferredOf: ch.parts[0].run}
	ch.parts, ch.data, ch.lead, ch.dataLead = own, ch.data[ch.dataLead+1:], 0, 0
	a.queueLocked(d)
	a.kickPacker()
	return d
}

// flushLocked queues the run's deferred change, if any, and reports
// whether it did (the caller kicks the packer). a.mu is held.
func (a *appLog) flushLocked(run string) bool {
	o := a.runs[run]
	if o == nil || o.deferred == nil {
		return false
	}
	ch := o.deferred
	o.deferred = nil
	ch.deferredOf = run
	a.queueLocked(ch)
	return true
}

// durable returns once what the run's activation committed lazily is
// committed: its deferred change, flushed, or one flushed by someone
// else. entsOnly leaves a deferred change that holds no entries (a lazy
// start alone) where it is. It answers the error of a deferred change
// that failed.
func (a *appLog) durable(ctx context.Context, run string, entsOnly bool) error {
	a.mu.Lock()
	o := a.runs[run]
	if o == nil {
		a.mu.Unlock()
		return nil
	}
	if d := o.deferred; d != nil {
		if entsOnly && !hasEntries(d) {
			a.mu.Unlock()
			return nil
		}
		a.flushLocked(run)
		d.deferredOf = "" // its run's activation waits for it
		a.mu.Unlock()
		a.kickPacker()
		return a.waitChange(ctx, d)
	}
	a.mu.Unlock()
	if err := a.settled(ctx, run); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if o := a.runs[run]; o != nil && o.lost != nil {
		err := o.lost
		o.lost = nil
		a.dropIdleLocked(run, o)
		return err
	}
	return nil
}

// waitChange waits until ch is settled and answers its error. ch stays
// queued when ctx ends first.
func (a *appLog) waitChange(ctx context.Context, ch *change) error {
	select {
	case <-ch.done:
		return ch.err
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", store.ErrOutcomeUnknown, ctx.Err())
	}
}

func (a *appLog) kickPacker() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

func hasRecord(ch *change) bool {
	for _, p := range ch.parts {
		if p.rec != nil {
			return true
		}
	}
	return false
}

func hasEntries(ch *change) bool {
	for _, p := range ch.parts {
		if len(p.ents) > 0 {
			return true
		}
	}
	return false
}
