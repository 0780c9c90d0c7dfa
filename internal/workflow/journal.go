package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbus-dev/nimbus/internal/store"
)

// Storage layout (part of the on-disk format; RATIONALE.md "Durable
// workflows: one log message per group commit").
//
// Each app with workflows has two streams:
//
//	LogStreamName(app)  nimbus.wflog.<app>: the log, the truth. One message
//	                    (a pack) per group commit: every change of every run
//	                    that waited on that commit, {"changes":[{"run":id,
//	                    "entries":[...],"record":{...}}, ...]}. A pack is one
//	                    plain fsynced publish, atomic by construction.
//	StreamName(app)     the views, materialized from the log afterwards:
//	  nimbus.wf.<app>.j.<run>  the run's journal: {"seqs":[...],"entries":[...]}
//	                           (the log sequence of each entry), in order
//	  nimbus.wf.<app>.r.<run>  the run record: a Run, one message per
//	                           materialized state; the last one is the state.
//	                           Header Nimbus-Wf-Log: the log sequence of the
//	                           pack that wrote it (the record's version)
//
// The views are written in the background, many packs at a time, as plain
// publishes to a stream in async persist mode (no fsync of their own).
// Until its changes are materialized, a run's record and entries are in the
// engine's memory (appLog.runs), which every reader merges with the views.
// The log is purged only of packs materialized more than logKeep ago (by
// then the server synced the views: store.SyncInterval), and at start
// (ensure) what it keeps is replayed and materialized again: views written
// twice are skipped by readers (entries by log sequence; a record rewritten
// is the same version).
//
// Journals and records written before 2026-12 are one Entry per journal
// message and records without Nimbus-Wf-Log (version 0); readers take both,
// and older journals also have "started" and "completed"/"failed" entries.
// A run id is an idempotency key forever: the engine, the log's single
// writer, refuses a start when the run has a record in memory or in the
// views, and every pack is published with the log's expected last
// sequence, so a second writer fails rather than interleaves.

// Entry types (Entry.Type).
const (
	EntryStarted   = "started"   // the run was accepted: Function, Revision, Input (shown; from the record)
	EntryStep      = "step"      // a step's final outcome: Result, or Error with Failed
	EntryAttempt   = "attempt"   // an attempt of a step failed and will be retried at WakeAt
	EntrySleep     = "sleep"     // a durable timer at WakeAt
	EntryCompleted = "completed" // the workflow function returned Result (shown; from the record)
	EntryFailed    = "failed"    // the workflow failed with Error (shown; from the record)
)

// Entry is one record of a run's journal.
type Entry struct {
	Type string    `json:"type"`
	Time time.Time `json:"time"`
	// Pos and Name identify a step or a sleep (the position in the
	// workflow's code, the name its code gives).
	Pos  int    `json:"pos,omitempty"`
	Name string `json:"name,omitempty"`
	// Attempt is the attempt number (EntryStep, EntryAttempt).
	Attempt int `json:"attempt,omitempty"`
	// Result is the step's or the workflow's result.
	Result json.RawMessage `json:"result,omitempty"`
	// Error is the failure; Failed marks an EntryStep that failed for good.
	Error  string `json:"error,omitempty"`
	Failed bool   `json:"failed,omitempty"`
	// WakeAt is when a sleep ends or a retry runs.
	WakeAt time.Time `json:"wake_at,omitzero"`
	// Started: the run's function, revision and input.
	Function string          `json:"function,omitempty"`
	Revision string          `json:"revision,omitempty"`
	Input    json.RawMessage `json:"input,omitempty"`
	// Span and DurationMS are a step attempt's span id in the run's trace
	// and how long it ran (EntryStep, EntryAttempt; observe.go).
	Span       string `json:"span,omitempty"`
	DurationMS int64  `json:"duration_ms,omitempty"`
	// Effects are the KV writes of a journaled step (EntryStep,
	// effects.go), applied once after the entry is committed.
	Effects []Effect `json:"effects,omitempty"`
	// Truncated is set on a shown entry whose Result or Input was cut
	// (Engine.Get); never stored.
	Truncated bool `json:"truncated,omitempty"`
}

// Run states (Run.State).
const (
	StateRunning   = "running"   // active, or waiting for an instance or a restart
	StateSleeping  = "sleeping"  // suspended until WakeAt; holds no instance
	StateCompleted = "completed" // the workflow returned a result
	StateFailed    = "failed"    // the workflow returned an error, or broke its journal
)

// Run is the record of a workflow run.
type Run struct {
	ID       string `json:"id"`
	App      string `json:"app"`
	Workflow string `json:"workflow"`
	// Revision is the function revision the run started on.
	Revision string          `json:"revision"`
	State    string          `json:"state"`
	Input    json.RawMessage `json:"input,omitempty"`
	Result   json.RawMessage `json:"result,omitempty"`
	Error    string          `json:"error,omitempty"`
	WakeAt   time.Time       `json:"wake_at,omitzero"`
	Created  time.Time       `json:"created"`
	Updated  time.Time       `json:"updated"`
	// Steps counts the positions the run has recorded (steps and sleeps).
	Steps int `json:"steps"`
	// Parent is the run that started this one as its child (call.go).
	Parent string `json:"parent,omitempty"`
	// Detached says this child keeps running when its parent is
	// cancelled or terminated (children.go).
	Detached bool `json:"detached,omitempty"`
	// ChildrenPending says the run was terminated and its children may
	// not all be terminated yet: a start of the engine finishes that
	// (children.go).
	ChildrenPending bool `json:"children_pending,omitempty"`
	// ParentPending says the run is a child that was terminated and its
	// parent may not have been told yet: a start of the engine finishes
	// that (children.go).
	ParentPending bool `json:"parent_pending,omitempty"`
	// Topic is the topic a waiting run waits on (topics.go); "" for a
	// signal wait.
	Topic string `json:"topic,omitempty"`
}

// Done reports whether the run reached a final state.
func (r *Run) Done() bool {
	return r.State == StateCompleted || r.State == StateFailed || r.State == StateCancelled || r.State == StateTerminated
}

// StreamName is the stream of app's run views (journals, records).
func StreamName(app string) string { return "NIMBUS_WF_" + app }

// LogStreamName is the stream of app's workflow log.
func LogStreamName(app string) string { return "NIMBUS_WFLOG_" + app }

func subjectPrefix(app string) string { return "nimbus.wf." + app + "." }

func journalSubject(app, run string) string { return subjectPrefix(app) + "j." + run }

func recordSubject(app, run string) string { return subjectPrefix(app) + "r." + run }

func logSubject(app string) string { return "nimbus.wflog." + app }

// hdrLogSeq is the header of a materialized record: the log sequence of
// the pack that wrote it.
const hdrLogSeq = "Nimbus-Wf-Log"

// MaxRunIDLen caps a run id.
const MaxRunIDLen = 128

var runIDRe = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// CheckRunID returns an error wrapping ErrInvalid when id cannot name a
// run: 1 to 128 of [A-Za-z0-9_-] (a run id is a subject token).
func CheckRunID(id string) error {
	if id == "" || len(id) > MaxRunIDLen || !runIDRe.MatchString(id) {
		return fmt.Errorf("%w: run id %q: use 1 to %d letters, digits, '-' or '_'", ErrInvalid, truncate(id, 40), MaxRunIDLen)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// journal reads and writes the streams of the apps' runs: the log through
// each app's appLog (pack.go), the views through the materializer
// (materialize.go), and reads both.
type journal struct {
	c  *store.Committer
	js jetstream.JetStream
	// ctx ends at the engine's Close; wg holds the apps' goroutines.
	ctx    context.Context
	wg     sync.WaitGroup
	logger *slog.Logger
	// ajs publishes views (pipelined; materialize.go); matDelay is how
	// long changes wait for the materializer, at most (tests lengthen it).
	ajs      jetstream.JetStream
	matDelay time.Duration
	// logKeep is how long the log keeps a pack after its views were
	// written (tests shorten it).
	logKeep time.Duration
	// stats counts the log's commits (one pack each); changes counts the
	// run changes they carried; views the view messages written.
	// fx applies journaled steps' effects (effects.go); nil drops them.
	fx             EffectApplier
	stats          store.Counters
	changes, views atomic.Uint64

	mu   sync.Mutex
	apps map[string]*appLog
}

func newJournal(ctx context.Context, c *store.Committer, logger *slog.Logger) *journal {
	j := &journal{c: c, js: c.JetStream(), ajs: c.JetStream(), matDelay: defaultMatDelay, logKeep: defaultLogKeep, ctx: ctx, logger: logger, apps: map[string]*appLog{}}
	if ajs, err := jetstream.New(c.JetStream().Conn(), jetstream.WithPublishAsyncMaxPending(2*matWindow)); err == nil {
		j.ajs = ajs
	}
	return j
}

// ensure creates or updates app's streams and, the first time, opens its
// log: what the log keeps is replayed and materialized.
func (j *journal) ensure(ctx context.Context, app string) error {
	cfg := jetstream.StreamConfig{
		Name:        StreamName(app),
		Description: "Nimbus workflow journals and run records of app " + app + " (materialized from " + LogStreamName(app) + ")",
		Subjects:    []string{subjectPrefix(app) + ">"},
		Storage:     jetstream.FileStorage,
		Replicas:    1,
		// The views are derived: the log, fsynced, is the truth, and it is
		// kept until the server synced the views (journal.logKeep).
		PersistMode: jetstream.AsyncPersistMode,
		AllowDirect: true,
		Discard:     jetstream.DiscardOld,
	}
	_, err := j.js.CreateOrUpdateStream(ctx, cfg)
	if err != nil {
		// A stream made before the log (2026-12) has synchronous writes
		// and atomic batches, and its persist mode cannot change: keep it.
		if _, ierr := j.js.Stream(ctx, cfg.Name); ierr == nil {
			j.logger.Info("workflow stream kept as it is (made before the log; its writes are synchronous)", "app", app, "reason", err)
			err = nil
		}
	}
	if err != nil {
		return fmt.Errorf("workflow stream of %s: %w", app, err)
	}
	_, err = j.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        LogStreamName(app),
		Description: "Nimbus workflow log of app " + app + ": one message per group commit",
		Subjects:    []string{logSubject(app)},
		Storage:     jetstream.FileStorage,
		Replicas:    1,
		AllowDirect: true,
		Discard:     jetstream.DiscardOld,
	})
	if err != nil {
		return fmt.Errorf("workflow log of %s: %w", app, err)
	}
	j.mu.Lock()
	a := j.apps[app]
	if a == nil {
		a = newAppLog(j, app)
		j.apps[app] = a
	}
	j.mu.Unlock()
	return a.open(ctx)
}

// app returns app's log if it is open, else nil.
func (j *journal) app(app string) *appLog {
	j.mu.Lock()
	defer j.mu.Unlock()
	if a := j.apps[app]; a != nil && a.isOpen() {
		return a
	}
	return nil
}

// drop deletes app's streams (the app was deleted).
func (j *journal) drop(ctx context.Context, app string) error {
	j.mu.Lock()
	a := j.apps[app]
	delete(j.apps, app)
	j.mu.Unlock()
	if a != nil {
		a.close()
	}
	for _, name := range []string{StreamName(app), LogStreamName(app)} {
		err := j.js.DeleteStream(ctx, name)
		if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("delete workflow stream %s: %w", name, err)
		}
	}
	return nil
}

// close stops every app's goroutines (ctx has ended) and waits for them.
func (j *journal) close() { j.wg.Wait() }

// viewStream returns the stream of app's views.
func (j *journal) viewStream(ctx context.Context, app string) (jetstream.Stream, error) {
	if a := j.app(app); a != nil {
		return a.view, nil
	}
	return j.js.Stream(ctx, StreamName(app))
}

// recordWrite is the write storing rec as the run's materialized state,
// at version ver (the log sequence of the pack that wrote it; 0 for none).
func recordWrite(rec *Run) (store.Write, error) { return recordWriteAt(rec, 0) }

func recordWriteAt(rec *Run, ver uint64) (store.Write, error) {
	b, err := json.Marshal(rec)
	if err != nil {
		return store.Write{}, err
	}
	w := store.Write{Stream: StreamName(rec.App), Subject: recordSubject(rec.App, rec.ID), Data: b}
	if ver > 0 {
		w.Header = nats.Header{hdrLogSeq: []string{strconv.FormatUint(ver, 10)}}
	}
	return w, nil
}

// viewRecord reads a run's materialized record and its version; found is
// false when it has none.
func (j *journal) viewRecord(ctx context.Context, app, run string) (rec *Run, ver uint64, found bool, _ error) {
	st, err := j.viewStream(ctx, app)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, 0, false, nil
	}
	if err != nil {
		return nil, 0, false, fmt.Errorf("workflow run %s/%s: %w", app, run, err)
	}
	m, err := st.GetLastMsgForSubject(ctx, recordSubject(app, run))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, 0, false, nil
	}
	if err != nil {
		return nil, 0, false, fmt.Errorf("workflow run %s/%s: %w", app, run, err)
	}
	rec = new(Run)
	if err := json.Unmarshal(m.Data, rec); err != nil {
		return nil, 0, false, fmt.Errorf("workflow run %s/%s: corrupt record: %w", app, run, err)
	}
	return rec, headerSeq(m.Header), true, nil
}

func headerSeq(h nats.Header) uint64 {
	n, _ := strconv.ParseUint(h.Get(hdrLogSeq), 10, 64)
	return n
}

// record reads a run's record: in memory while its last change is not
// materialized, else the view. ErrRunNotFound when it has none.
func (j *journal) record(ctx context.Context, app, run string) (*Run, error) {
	if a := j.app(app); a != nil {
		if rec, _ := a.memRecord(run); rec != nil {
			return rec, nil
		}
	}
	rec, _, found, err := j.viewRecord(ctx, app, run)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, fmt.Errorf("%w: app %s has no run %q", ErrRunNotFound, app, run)
	}
	return rec, nil
}

// recordAt reads a run's record and its version, once no change of the
// run is waiting for a commit: commitIf with that version commits only if
// the record did not change since. ErrRunNotFound when it has none.
func (j *journal) recordAt(ctx context.Context, app, run string) (*Run, uint64, error) {
	a := j.app(app)
	if a == nil {
		rec, ver, found, err := j.viewRecord(ctx, app, run)
		if err == nil && !found {
			err = fmt.Errorf("%w: app %s has no run %q", ErrRunNotFound, app, run)
		}
		return rec, ver, err
	}
	for {
		if err := a.settled(ctx, run); err != nil {
			return nil, 0, err
		}
		rec, ver, found, err := a.current(ctx, run)
		if err != nil {
			return nil, 0, err
		}
		if !found {
			return nil, 0, fmt.Errorf("%w: app %s has no run %q", ErrRunNotFound, app, run)
		}
		if rec != nil {
			return rec, ver, nil
		}
	}
}

// viewJournal is the data of a materialized journal message.
type viewJournal struct {
	Seqs    []uint64 `json:"seqs"`
	Entries []Entry  `json:"entries"`
}

// entries reads a run's journal, in order: the materialized entries, then
// those in memory that are not materialized yet.
func (j *journal) entries(ctx context.Context, app, run string) ([]Entry, error) {
	var mem []Entry
	var memSeqs []uint64
	if a := j.app(app); a != nil {
		mem, memSeqs = a.memEntries(run)
	}
	st, err := j.viewStream(ctx, app)
	if err != nil {
		return nil, fmt.Errorf("workflow journal %s/%s: %w", app, run, err)
	}
	subj := journalSubject(app, run)
	var out []Entry
	var seen uint64 // the last log sequence read
	for seq := uint64(1); ; {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("workflow journal %s/%s: %w", app, run, err)
		}
		seq = m.Sequence + 1
		var v viewJournal
		if err := json.Unmarshal(m.Data, &v); err == nil && v.Entries != nil && len(v.Seqs) == len(v.Entries) {
			for i, e := range v.Entries {
				// A replay after a crash may materialize entries again.
				if v.Seqs[i] > seen {
					out = append(out, e)
				}
			}
			seen = max(seen, v.Seqs[len(v.Seqs)-1])
			continue
		}
		var e Entry
		if err := json.Unmarshal(m.Data, &e); err != nil {
			return nil, fmt.Errorf("workflow journal %s/%s at %d: corrupt entry: %w", app, run, m.Sequence, err)
		}
		out = append(out, e)
	}
	for i, e := range mem {
		if memSeqs[i] > seen {
			out = append(out, e)
		}
	}
	return out, nil
}

// records calls fn with the record of every run of app (in memory, or
// the last message of each record subject), in no particular order.
func (j *journal) records(ctx context.Context, app string, fn func(*Run)) error {
	mem := map[string]memRec{}
	if a := j.app(app); a != nil {
		// No view is written during the scan: a record written meanwhile
		// would come as well as the one before it (the scan is a
		// consumer), and memory must match the views it merges with.
		a.viewMu.RLock()
		defer a.viewMu.RUnlock()
		mem = a.memRecords()
	}
	st, err := j.viewStream(ctx, app)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("workflow runs of %s: %w", app, err)
	}
	err = j.viewRecords(ctx, app, st, func(rec *Run, ver uint64) {
		if m, ok := mem[rec.ID]; ok {
			delete(mem, rec.ID)
			if m.ver >= ver {
				rec = m.rec
			}
		}
		fn(rec)
	})
	if err != nil {
		return err
	}
	for _, m := range mem {
		fn(m.rec)
	}
	return ctx.Err()
}

// viewRecords calls fn with every materialized record of app and its
// version.
func (j *journal) viewRecords(ctx context.Context, app string, st jetstream.Stream, fn func(*Run, uint64)) error {
	filter := subjectPrefix(app) + "r.*"
	info, err := st.Info(ctx)
	if err != nil {
		return fmt.Errorf("workflow runs of %s: %w", app, err)
	}
	if info.State.Msgs == 0 {
		return nil // no view yet
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
	})
	if err != nil {
		return fmt.Errorf("workflow runs of %s: %w", app, err)
	}
	for {
		// No wait: the messages are there; a fetch that waits for its
		// 1000 would wait out its expiry at the end of every scan.
		batch, err := cons.FetchNoWait(1000)
		if err != nil {
			return fmt.Errorf("workflow runs of %s: %w", app, err)
		}
		n, last := 0, false
		for m := range batch.Messages() {
			n++
			rec := new(Run)
			if err := json.Unmarshal(m.Data(), rec); err == nil {
				fn(rec, headerSeq(m.Headers()))
			}
			if md, err := m.Metadata(); err == nil && md.NumPending == 0 {
				last = true
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("workflow runs of %s: %w", app, err)
		}
		if last || n == 0 {
			return ctx.Err()
		}
	}
}
