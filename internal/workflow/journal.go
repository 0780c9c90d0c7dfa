package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbus-dev/nimbus/internal/store"
)

// Storage layout (part of the on-disk format).
//
// Each app with workflows has one stream, StreamName(app), capturing
// nimbus.wf.<app>.>. A run has two subjects in it:
//
//	nimbus.wf.<app>.j.<run>   the journal: every Entry of the run, in order
//	nimbus.wf.<app>.r.<run>   the run record: a Run, one message per state
//	                          change; the last one is the run's state
//
// Every durable change of a run is one store.Unit on that one stream, so
// it is atomic and group-committed with every other run's changes of the
// app. The hot path writes one message per change: a step's end is its
// journal entry, a run's start and its end are its record alone (the
// record holds the input, revision, result and error; Engine.Get shows
// them as the timeline's first and last entries). A unit of one message
// needs no atomic batch, which on R1 file storage costs the server a
// staging store per batch (bench/README.md "workflow"); a lone run's
// commits are plain fsynced publishes. Journals written before 2026-12
// also have "started" and "completed"/"failed" entries; readers take both.
// Starting a run writes its record with IfLastSeq 0: a second start of the
// same id fails the compare-and-swap, which is what makes a run id an
// idempotency key forever, not for a duplicate window.

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
	// Topic is the topic a waiting run waits on (topics.go); "" for a
	// signal wait.
	Topic string `json:"topic,omitempty"`
}

// Done reports whether the run reached a final state.
func (r *Run) Done() bool {
	return r.State == StateCompleted || r.State == StateFailed || r.State == StateCancelled || r.State == StateTerminated
}

// StreamName is the journal stream of app.
func StreamName(app string) string { return "NIMBUS_WF_" + app }

func subjectPrefix(app string) string { return "nimbus.wf." + app + "." }

func journalSubject(app, run string) string { return subjectPrefix(app) + "j." + run }

func recordSubject(app, run string) string { return subjectPrefix(app) + "r." + run }

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

// journal reads and writes the streams of the apps' runs.
type journal struct {
	c  *store.Committer
	js jetstream.JetStream
	// stats counts the engine's commits (every unit carries it).
	stats store.Counters
}

// ensure creates or updates app's stream.
func (j *journal) ensure(ctx context.Context, app string) error {
	_, err := j.js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        StreamName(app),
		Description: "Nimbus workflow journals and run records of app " + app,
		Subjects:    []string{subjectPrefix(app) + ">"},
		Storage:     jetstream.FileStorage,
		Replicas:    1,
		// Atomic batches: a step's entry and the run's record commit
		// together (store.Committer).
		AllowAtomicPublish: true,
		Discard:            jetstream.DiscardOld,
	})
	if err != nil {
		return fmt.Errorf("workflow stream of %s: %w", app, err)
	}
	return nil
}

// drop deletes app's stream (the app was deleted).
func (j *journal) drop(ctx context.Context, app string) error {
	err := j.js.DeleteStream(ctx, StreamName(app))
	if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("delete workflow stream of %s: %w", app, err)
	}
	return nil
}

// entryWrite is the write appending e to run's journal.
func entryWrite(app, run string, e *Entry) (store.Write, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return store.Write{}, err
	}
	return store.Write{Stream: StreamName(app), Subject: journalSubject(app, run), Data: b}, nil
}

// recordWrite is the write storing rec as the run's state.
func recordWrite(rec *Run) (store.Write, error) {
	b, err := json.Marshal(rec)
	if err != nil {
		return store.Write{}, err
	}
	return store.Write{Stream: StreamName(rec.App), Subject: recordSubject(rec.App, rec.ID), Data: b}, nil
}

// commit appends e (if not nil) and rec (if not nil) in one unit.
func (j *journal) commit(ctx context.Context, app, run string, e *Entry, rec *Run) error {
	u := &store.Unit{Counters: &j.stats}
	if e != nil {
		w, err := entryWrite(app, run, e)
		if err != nil {
			return err
		}
		u.Writes = append(u.Writes, w)
	}
	if rec != nil {
		w, err := recordWrite(rec)
		if err != nil {
			return err
		}
		u.Writes = append(u.Writes, w)
	}
	if _, err := j.c.Commit(ctx, u); err != nil {
		return fmt.Errorf("workflow run %s/%s: commit: %w", app, run, err)
	}
	return nil
}

// create stores a new run, its first record, only if the run has no
// record yet. It reports false when it has one.
func (j *journal) create(ctx context.Context, rec *Run) (bool, error) {
	rw, err := recordWrite(rec)
	if err != nil {
		return false, err
	}
	var none uint64
	rw.IfLastSeq = &none
	_, err = j.c.Commit(ctx, &store.Unit{Writes: []store.Write{rw}, Counters: &j.stats})
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("start workflow run %s/%s: %w", rec.App, rec.ID, err)
	}
	return true, nil
}

// record reads a run's record; ErrRunNotFound when it has none.
func (j *journal) record(ctx context.Context, app, run string) (*Run, error) {
	st, err := j.js.Stream(ctx, StreamName(app))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("%w: %s/%s", ErrRunNotFound, app, run)
	}
	if err != nil {
		return nil, fmt.Errorf("workflow run %s/%s: %w", app, run, err)
	}
	m, err := st.GetLastMsgForSubject(ctx, recordSubject(app, run))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("%w: %s/%s", ErrRunNotFound, app, run)
	}
	if err != nil {
		return nil, fmt.Errorf("workflow run %s/%s: %w", app, run, err)
	}
	rec := new(Run)
	if err := json.Unmarshal(m.Data, rec); err != nil {
		return nil, fmt.Errorf("workflow run %s/%s: corrupt record: %w", app, run, err)
	}
	return rec, nil
}

// entries reads a run's journal, in order.
func (j *journal) entries(ctx context.Context, app, run string) ([]Entry, error) {
	st, err := j.js.Stream(ctx, StreamName(app))
	if err != nil {
		return nil, fmt.Errorf("workflow journal %s/%s: %w", app, run, err)
	}
	subj := journalSubject(app, run)
	var out []Entry
	for seq := uint64(1); ; {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("workflow journal %s/%s: %w", app, run, err)
		}
		var e Entry
		if err := json.Unmarshal(m.Data, &e); err != nil {
			return nil, fmt.Errorf("workflow journal %s/%s at %d: corrupt entry: %w", app, run, m.Sequence, err)
		}
		out = append(out, e)
		seq = m.Sequence + 1
	}
}

// records calls fn with the record of every run of app (the last message
// of each record subject), in no particular order.
func (j *journal) records(ctx context.Context, app string, fn func(*Run)) error {
	st, err := j.js.Stream(ctx, StreamName(app))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("workflow runs of %s: %w", app, err)
	}
	filter := subjectPrefix(app) + "r.*"
	info, err := st.Info(ctx)
	if err != nil {
		return fmt.Errorf("workflow runs of %s: %w", app, err)
	}
	if info.State.Msgs == 0 {
		return nil // every run has a record: no message, no run
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
	})
	if err != nil {
		return fmt.Errorf("workflow runs of %s: %w", app, err)
	}
	for {
		batch, err := cons.Fetch(1000, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return fmt.Errorf("workflow runs of %s: %w", app, err)
		}
		n, last := 0, false
		for m := range batch.Messages() {
			n++
			rec := new(Run)
			if err := json.Unmarshal(m.Data(), rec); err == nil {
				fn(rec)
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
