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
}

// change is one change of one or more runs (a part each), queued for a
// pack: its parts are committed together or not at all.
type change struct {
	parts []part
	data  []byte // its packChanges, marshalled and joined by commas
	state int    // chQueued -> chTaken (packer) or chAbandoned (caller)
	done  chan struct{}
	err   error
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
	return a.submitParts(ctx, []part{{run: run, ents: ents, rec: rec, c: c}})
}

// submitParts queues one change made of parts (of distinct runs) if
// every part's condition holds, and waits until it is committed: the
// parts are in one pack, so they are committed together or not at all.
// It reports false, having written nothing, when a condition does not
// hold (errFinal for a condNotFinal one).
func (a *appLog) submitParts(ctx context.Context, parts []part) (bool, error) {
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
			need[k] = p.c.kind != condNone && views[k] == nil && (o == nil || (o.rec == nil && o.queuedRec == 0))
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
		var wait chan struct{}
		again := false
		for k, p := range parts {
			if p.c.kind == condNone {
				continue
			}
			o := a.runs[p.run]
			if o != nil && o.queuedRec > 0 {
				// A record write of the run is in flight: a version read
				// before it is stale; the others wait for it.
				if p.c.kind == condVersion {
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
				a.mu.Unlock()
				return false, nil
			case p.c.kind == condNotFinal && found && cur.Done():
				a.mu.Unlock()
				return false, errFinal
			}
		}
		if wait != nil || again {
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
		for _, p := range parts {
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
		a.mu.Unlock()
		break
	}
	select {
	case a.kick <- struct{}{}:
	default:
	}
	select {
	case <-ch.done:
		if ch.err != nil {
			return false, ch.err
		}
		return true, nil
	case <-ctx.Done():
		a.mu.Lock()
		defer a.mu.Unlock()
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
		o := a.runs[p.run]
		o.queued--
		if p.rec != nil {
			o.queuedRec--
		}
		if o.queued == 0 && o.rec == nil && len(o.ents) == 0 {
			delete(a.runs, p.run)
		}
	}
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
// was just made at random: nothing is checked.
func (j *journal) create(ctx context.Context, rec *Run, fresh bool) (bool, error) {
	cp := *rec
	c := cond{kind: condNew}
	if fresh {
		c.kind = condNone
	}
	a, err := j.appFor(rec.App)
	ok := false
	if err == nil {
		ok, err = a.submit(ctx, rec.ID, nil, &cp, c)
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
