package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbus-dev/nimbus/internal/store"
)

// engineOn starts an engine on st playing g whose views wait matDelay at
// most before they are written, with the app provisioned.
func engineOn(t *testing.T, st *store.Store, g guest, matDelay time.Duration) (*Engine, *invoker) {
	t.Helper()
	inv := &invoker{g: g, n: map[string]int{}}
	e := New(st.Committer(), inv, Options{Logger: slog.New(slog.DiscardHandler), ActivationBackoff: time.Millisecond})
	e.j.matDelay = matDelay
	inv.e = e
	t.Cleanup(func() { e.Close(context.Background()) })
	if err := e.Provision(t.Context(), testRevision()); err != nil {
		t.Fatal(err)
	}
	return e, inv
}

func timelineOf(t *testing.T, e *Engine, id string) string {
	t.Helper()
	info, err := e.Get(t.Context(), testApp, id)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, ent := range info.Timeline {
		types = append(types, ent.Type+":"+ent.Name)
	}
	return info.State + " " + strings.Join(types, " ")
}

// What was acknowledged is in the log: a node that stops before any view
// was written shows every run, its timeline and its record after a
// restart, keeps the run id taken, and writes the views then.
func TestLogReplayedBeforeViewsWritten(t *testing.T) {
	t.Parallel()
	st := openStore(t)
	var execs sync.Map
	e1, _ := engineOn(t, st, steps([]string{"a", "b", "c"}, 0, &execs), time.Hour)
	for _, id := range []string{"run-1", "run-2"} {
		if _, _, err := e1.Start(t.Context(), testApp, "flow", id, []byte(`{"x":1}`)); err != nil {
			t.Fatal(err)
		}
		wait(t, e1, id)
	}
	const want = "completed started: step:a step:b step:c completed:"
	if got := timelineOf(t, e1, "run-1"); got != want {
		t.Fatalf("before the views: %q, want %q", got, want)
	}
	if v := e1.JournalStats().Views; v != 0 {
		t.Fatalf("%d views written; the test needs none", v)
	}
	if err := e1.Close(t.Context()); err != nil {
		t.Fatal(err)
	}

	e2, inv2 := engineOn(t, st, steps([]string{"a", "b", "c"}, 0, &execs), time.Hour)
	if v := e2.JournalStats().Views; v == 0 {
		t.Fatal("the start wrote no views from the log")
	}
	if got := timelineOf(t, e2, "run-1"); got != want {
		t.Fatalf("after a restart: %q, want %q", got, want)
	}
	runs, err := e2.List(t.Context(), testApp, ListOptions{})
	if err != nil || len(runs) != 2 {
		t.Fatalf("List: %d runs, %v; want 2", len(runs), err)
	}
	rec, created, err := e2.Start(t.Context(), testApp, "flow", "run-2", nil)
	if err != nil || created || rec.State != StateCompleted {
		t.Fatalf("a second start of run-2: created %v, %v, %v; want the completed run", created, rec, err)
	}
	if n := inv2.count("run-2"); n != 0 {
		t.Fatalf("run-2 was activated %d times after the restart", n)
	}
}

// Views written twice (a start rematerializes what the log keeps) are
// read once.
func TestViewsWrittenTwiceReadOnce(t *testing.T) {
	t.Parallel()
	st := openStore(t)
	var execs sync.Map
	e1, _ := engineOn(t, st, steps([]string{"a", "b"}, 0, &execs), time.Millisecond)
	if _, _, err := e1.Start(t.Context(), testApp, "flow", "run-1", nil); err != nil {
		t.Fatal(err)
	}
	wait(t, e1, "run-1")
	for deadline := time.Now().Add(10 * time.Second); e1.j.app(testApp).pending() > 0; {
		if time.Now().After(deadline) {
			t.Fatal("the views were not written")
		}
		time.Sleep(time.Millisecond)
	}
	if err := e1.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		e, _ := engineOn(t, st, steps([]string{"a", "b"}, 0, &execs), time.Hour)
		if got, want := timelineOf(t, e, "run-1"), "completed started: step:a step:b completed:"; got != want {
			t.Fatalf("timeline %q, want %q", got, want)
		}
		if err := e.Close(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
}

// The engine checks a record's version itself: a change read before
// another change of the record does not commit; a run's own record never
// replaces a final one.
func TestRecordVersions(t *testing.T) {
	t.Parallel()
	e, _ := engineOn(t, openStore(t), steps(nil, 0, &sync.Map{}), time.Hour)
	// No workflow is woken: the journal is used directly.
	j := e.j
	ctx := t.Context()
	rec := &Run{ID: "run-v", App: testApp, Workflow: "flow", State: StateRunning}
	if ok, err := j.create(ctx, rec, false, false); err != nil || !ok {
		t.Fatalf("create: %v %v", ok, err)
	}
	if ok, err := j.create(ctx, rec, false, false); err != nil || ok {
		t.Fatalf("a second create: %v %v, want false", ok, err)
	}
	got, ver, err := j.recordAt(ctx, testApp, "run-v")
	if err != nil || got.State != StateRunning {
		t.Fatalf("recordAt: %v %v", got, err)
	}
	sleeping := *rec
	sleeping.State = StateSleeping
	if err := j.commit(ctx, testApp, "run-v", nil, &sleeping); err != nil {
		t.Fatal(err)
	}
	term := *rec
	term.State = StateTerminated
	if ok, err := j.commitIf(ctx, testApp, "run-v", nil, &term, ver); err != nil || ok {
		t.Fatalf("commitIf at a stale version: %v %v, want false", ok, err)
	}
	_, ver, err = j.recordAt(ctx, testApp, "run-v")
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := j.commitIf(ctx, testApp, "run-v", []*Entry{{Type: EntryTerminated}}, &term, ver); err != nil || !ok {
		t.Fatalf("commitIf at the current version: %v %v", ok, err)
	}
	done := *rec
	done.State = StateCompleted
	if err := j.commit(ctx, testApp, "run-v", nil, &done); !errors.Is(err, ErrRunFinished) {
		t.Fatalf("a record over a final one: %v, want ErrRunFinished", err)
	}
	if got, err := j.record(ctx, testApp, "run-v"); err != nil || got.State != StateTerminated {
		t.Fatalf("record: %v %v, want terminated", got, err)
	}
}

// Starts of one id at the same time, while views are written, create one
// run: the others answer it.
func TestConcurrentStartsCreateOne(t *testing.T) {
	t.Parallel()
	e, inv := engineOn(t, openStore(t), steps([]string{"a"}, 0, &sync.Map{}), time.Millisecond)
	for round := range 5 {
		id := "same-" + string(rune('a'+round))
		var created sync.Map
		var wg sync.WaitGroup
		for k := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rec, ok, err := e.Start(t.Context(), testApp, "flow", id, nil)
				if err != nil || rec.ID != id {
					t.Errorf("start %d of %s: %v %v", k, id, rec, err)
				}
				if ok {
					created.Store(k, true)
				}
			}()
		}
		wg.Wait()
		n := 0
		created.Range(func(any, any) bool { n++; return true })
		if n != 1 {
			t.Fatalf("%s: %d starts created a run, want 1", id, n)
		}
		wait(t, e, id)
		if c := inv.count(id); c != 1 {
			t.Fatalf("%s: %d activations, want 1", id, c)
		}
	}
}

// A store written before the log (one stream, one entry per journal
// message, records without a version) is read as it is, and runs start
// and finish on it.
func TestStoreBeforeTheLog(t *testing.T) {
	t.Parallel()
	st := openStore(t)
	ctx := t.Context()
	js := st.Committer().JetStream()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: StreamName(testApp), Subjects: []string{subjectPrefix(testApp) + ">"}, Storage: jetstream.FileStorage,
		AllowAtomicPublish: true, Discard: jetstream.DiscardOld,
	}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	old := &Run{ID: "old", App: testApp, Workflow: "flow", Revision: "f1", State: StateCompleted, Input: []byte(`1`),
		Result: []byte(`"r"`), Created: now, Updated: now, Steps: 1}
	for _, ent := range []Entry{{Type: EntryStarted, Time: now}, {Type: EntryStep, Time: now, Name: "a", Result: []byte(`"x"`)}, {Type: EntryCompleted, Time: now}} {
		w, err := entryWriteLegacy(testApp, "old", &ent)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := js.Publish(ctx, w.Subject, w.Data); err != nil {
			t.Fatal(err)
		}
	}
	w, err := recordWrite(old)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, w.Subject, w.Data); err != nil {
		t.Fatal(err)
	}

	e, _ := engineOn(t, st, steps([]string{"a", "b"}, 0, &sync.Map{}), time.Millisecond)
	if got, want := timelineOf(t, e, "old"), "completed started: step:a completed:"; got != want {
		t.Fatalf("old run: %q, want %q", got, want)
	}
	if rec, created, err := e.Start(ctx, testApp, "flow", "old", nil); err != nil || created || rec.State != StateCompleted {
		t.Fatalf("a start of the old run's id: %v %v %v", rec, created, err)
	}
	if _, _, err := e.Start(ctx, testApp, "flow", "new", nil); err != nil {
		t.Fatal(err)
	}
	wait(t, e, "new")
	runs, err := e.List(ctx, testApp, ListOptions{})
	if err != nil || len(runs) != 2 {
		t.Fatalf("List: %v %v, want 2 runs", runs, err)
	}
}

// entryWriteLegacy is a journal message as written before the log: one
// Entry.
func entryWriteLegacy(app, run string, e *Entry) (store.Write, error) {
	b, err := json.Marshal(e)
	return store.Write{Stream: StreamName(app), Subject: journalSubject(app, run), Data: b}, err
}

// A pack from another writer makes the engine's next commit fail rather
// than interleave; the engine then reads the log, so the other writer's
// change shows and the commit after succeeds.
func TestSecondWriterFailsCommit(t *testing.T) {
	t.Parallel()
	st := openStore(t)
	e, _ := engineOn(t, st, steps(nil, 0, &sync.Map{}), time.Hour)
	ctx := t.Context()
	j := e.j
	rec := &Run{ID: "mine", App: testApp, Workflow: "flow", State: StateRunning}
	if ok, err := j.create(ctx, rec, false, false); err != nil || !ok {
		t.Fatalf("create: %v %v", ok, err)
	}
	theirs := &Run{ID: "theirs", App: testApp, Workflow: "flow", State: StateRunning}
	b, err := json.Marshal(packMsg{Changes: []packChange{{Run: "theirs", Record: theirs}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Committer().JetStream().Publish(ctx, logSubject(testApp), b); err != nil {
		t.Fatal(err)
	}
	err = j.commit(ctx, testApp, "mine", &Entry{Type: EntryStep, Name: "a"}, nil)
	if err == nil || !strings.Contains(err.Error(), "another writer") {
		t.Fatalf("a commit after another writer's pack: %v, want an error naming another writer", err)
	}
	if got, err := j.record(ctx, testApp, "theirs"); err != nil || got.ID != "theirs" {
		t.Fatalf("the other writer's run: %v %v", got, err)
	}
	if err := j.commit(ctx, testApp, "mine", &Entry{Type: EntryStep, Name: "a"}, nil); err != nil {
		t.Fatalf("the commit after catching up: %v", err)
	}
	ents, err := j.entries(ctx, testApp, "mine")
	if err != nil || len(ents) != 1 {
		t.Fatalf("entries: %v %v, want the one step", ents, err)
	}
}

// The log is purged of packs whose views were written (once logKeep has
// passed), down to its last pack; the runs stay whole and the next
// commits follow that last pack.
func TestLogPurgedBehindViews(t *testing.T) {
	t.Parallel()
	st := openStore(t)
	var execs sync.Map
	inv := &invoker{g: steps([]string{"a", "b"}, 0, &execs), n: map[string]int{}}
	e1 := New(st.Committer(), inv, Options{Logger: slog.New(slog.DiscardHandler)})
	inv.e = e1
	defer e1.Close(context.Background())
	e1.j.matDelay, e1.j.logKeep = time.Millisecond, 0
	ctx := t.Context()
	if err := e1.Provision(ctx, testRevision()); err != nil {
		t.Fatal(err)
	}
	ids := []string{"run-1", "run-2", "run-3"}
	for _, id := range ids {
		if _, _, err := e1.Start(ctx, testApp, "flow", id, nil); err != nil {
			t.Fatal(err)
		}
		wait(t, e1, id)
	}
	log, err := st.Committer().JetStream().Stream(ctx, LogStreamName(testApp))
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; {
		info, err := log.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == 1 && e1.j.app(testApp).pending() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the log keeps %d packs (%d changes not materialized), want 1", info.State.Msgs, e1.j.app(testApp).pending())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := e1.Close(ctx); err != nil {
		t.Fatal(err)
	}
	e2, _ := engineOn(t, st, steps([]string{"a", "b"}, 0, &execs), time.Hour)
	for _, id := range ids {
		if got, want := timelineOf(t, e2, id), "completed started: step:a step:b completed:"; got != want {
			t.Fatalf("%s: %q, want %q", id, got, want)
		}
	}
	if _, _, err := e2.Start(ctx, testApp, "flow", "run-4", nil); err != nil {
		t.Fatal(err)
	}
	if rec := wait(t, e2, "run-4"); rec.State != StateCompleted {
		t.Fatalf("run-4: %s", rec.State)
	}
}
