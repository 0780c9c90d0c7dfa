package workflow_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/capability"
	"github.com/nimbus-dev/nimbus/internal/guesttest"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/runtime/wasm"
	"github.com/nimbus-dev/nimbus/internal/runtime/wasm/hostfn"
	"github.com/nimbus-dev/nimbus/internal/state"
	"github.com/nimbus-dev/nimbus/internal/store"
	"github.com/nimbus-dev/nimbus/internal/workflow"
)

// Replay tests (Temporal's): recorded journals, kept as golden files in
// testdata/replay, are replayed through the engine with the real guest
// (testdata/wfguest on wazero, its host calls through the capability
// services) and must give the same outcome, run no recorded step again,
// and fail with a *NonDeterminismError naming the position and the steps
// where the code no longer matches its journal.
//
// A golden is the logical journal (the run's record and its entries as
// JSON), fed through Engine.SeedRun (export_test.go), not the stream's
// bytes. `go test ./internal/workflow -run TestReplayGoldenJournals
// -record` records a run of wfguest again and rewrites every golden from
// it.

var record = flag.Bool("record", false, "record a run of wfguest and rewrite the golden journals of testdata/replay from it")

const (
	replayApp   = "shop"
	replayRun   = "golden"
	goldenDir   = "testdata/replay"
	wfGuestDir  = "testdata/wfguest"
	recordInput = `{"steps":3,"sleep_ms":20}`
)

// golden is one replay case.
type golden struct {
	Comment string           `json:"comment"`
	Run     workflow.Run     `json:"run"`
	Journal []workflow.Entry `json:"journal"`
	Want    goldenWant       `json:"want"`
}

type goldenWant struct {
	State string `json:"state"`
	// Result is the run's whole result, when the replay must give
	// exactly the recorded one; ResultFields are some of its fields.
	Result       json.RawMessage            `json:"result,omitempty"`
	ResultFields map[string]json.RawMessage `json:"result_fields,omitempty"`
	// Appended are the entries the replay adds after the recorded ones,
	// as "type:name".
	Appended []string `json:"appended"`
	// Executed are the idempotency keys of the steps whose bodies ran
	// (wfguest counts them in the bucket execs): the steps not recorded.
	Executed []string `json:"executed"`
	// NonDeterminism is the error the replay must fail with.
	NonDeterminism *workflow.NonDeterminismError `json:"non_determinism,omitempty"`
}

// spy is the engine as the capability services see it; it keeps the
// errors the engine answered the guest's host calls with (the calls the
// replays make; the others go to the engine as they are).
type spy struct {
	*workflow.Engine
	e    *workflow.Engine
	mu   sync.Mutex
	errs []error
}

var _ capability.WorkflowBackend = (*spy)(nil)

func (s *spy) note(err error) {
	if err != nil && !errors.Is(err, workflow.ErrSuspended) {
		s.mu.Lock()
		s.errs = append(s.errs, err)
		s.mu.Unlock()
	}
}

func (s *spy) StepBegin(ctx context.Context, app, inv string, pos int, name string) (workflow.StepAnswer, error) {
	a, err := s.e.StepBegin(ctx, app, inv, pos, name)
	s.note(err)
	return a, err
}

func (s *spy) StepEnd(ctx context.Context, app, inv string, pos int, name string, result []byte, failed bool, retry time.Duration) (bool, error) {
	again, err := s.e.StepEnd(ctx, app, inv, pos, name, result, failed, retry)
	s.note(err)
	return again, err
}

func (s *spy) Sleep(ctx context.Context, app, inv string, pos int, until time.Time) error {
	err := s.e.Sleep(ctx, app, inv, pos, until)
	s.note(err)
	return err
}

func (s *spy) WaitSignal(ctx context.Context, app, inv string, pos int, name string, timeout time.Duration) (workflow.WaitAnswer, error) {
	a, err := s.e.WaitSignal(ctx, app, inv, pos, name, timeout)
	s.note(err)
	return a, err
}

func (s *spy) errors() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.errs)
}

type invokerFunc func(ctx context.Context, app, fn string, req *runtime.Request) (*runtime.Response, error)

func (f invokerFunc) Invoke(ctx context.Context, app, fn string, req *runtime.Request) (*runtime.Response, error) {
	return f(ctx, app, fn, req)
}

// replayNode is the engine of a node with wfguest as the workflow "flow"
// of app "shop": a real store, its buckets, the capability services and
// wazero, without the scheduler (each activation gets a fresh instance).
type replayNode struct {
	e   *workflow.Engine
	kv  *state.Buckets
	spy *spy
	rev *model.Revision
}

func newReplayNode(t *testing.T) *replayNode {
	t.Helper()
	ctx := t.Context()
	quiet := slog.New(slog.DiscardHandler)
	st, err := store.Open(ctx, store.Options{DataDir: t.TempDir(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	n := &replayNode{kv: state.New(st.Committer(), quiet), spy: &spy{}}
	caps := capability.New(capability.Config{Logger: quiet, KV: n.kv, Workflows: n.spy})
	rt, err := wasm.New(ctx, wasm.Config{CacheDir: guesttest.WazeroCacheDir(), Logger: quiet, HostFunctions: hostfn.NewDefaultRegistry(caps)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close(context.Background()) })
	grants := []string{"log", "kv:ledger", "kv:execs"}
	mod, err := rt.Load(ctx, runtime.Spec{App: replayApp, Function: "flow", Runtime: model.RuntimeWasm, Revision: "f1",
		Artifact: guesttest.MustBuild(t, wfGuestDir, guesttest.Reactor), Capabilities: grants,
		Limits: runtime.Limits{MemoryBytes: 256 << 20, Timeout: 30 * time.Second, MaxResponseBytes: 1 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	inv := invokerFunc(func(ctx context.Context, app, fn string, req *runtime.Request) (*runtime.Response, error) {
		inst, err := mod.NewInstance(ctx)
		if err != nil {
			return nil, err
		}
		defer inst.Close(context.Background())
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return inst.Handle(ctx, req)
	})
	n.e = workflow.New(st.Committer(), inv, workflow.Options{Logger: quiet, ActivationBackoff: 10 * time.Millisecond})
	n.spy.e = n.e
	n.spy.Engine = n.e
	t.Cleanup(func() { n.e.Close(context.Background()) })
	fn := model.Function{Name: "flow", Kind: model.KindWorkflow, Runtime: model.RuntimeWasm, Revision: "f1", TimeoutMS: 30_000,
		Concurrency: 1, MaxInstances: 4, MaxRequestBytes: 1 << 20, MaxResponseBytes: 1 << 20, Capabilities: grants}
	n.rev = &model.Revision{ID: "r1", App: replayApp, Functions: []model.Function{fn}, Buckets: []model.Bucket{
		{Name: "ledger", MaxValueBytes: 1 << 10, History: 1}, {Name: "execs", MaxValueBytes: 1 << 10, History: 1}}}
	if err := n.kv.Provision(ctx, n.rev); err != nil {
		t.Fatal(err)
	}
	return n
}

// provision makes the workflow runnable; the first time, the engine
// resumes the runs it finds (as after a restart).
func (n *replayNode) provision(t *testing.T) {
	t.Helper()
	if err := n.e.Provision(t.Context(), n.rev); err != nil {
		t.Fatal(err)
	}
}

func (n *replayNode) wait(t *testing.T, id string) *workflow.Run {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	r, err := n.e.Wait(ctx, replayApp, id)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Done() {
		t.Fatalf("run %s is still %s after 30s", id, r.State)
	}
	return r
}

// executed lists the keys in execs: the steps whose bodies ran.
func (n *replayNode) executed(t *testing.T) []string {
	t.Helper()
	keys, err := n.kv.List(t.Context(), replayApp, "execs", "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys)
	return keys
}

func TestReplayGoldenJournals(t *testing.T) {
	t.Parallel()
	if *record {
		recordGoldens(t)
	}
	files, err := filepath.Glob(filepath.Join(goldenDir, "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden journals in %s (%v): record them with -record", goldenDir, err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".json"), func(t *testing.T) {
			t.Parallel()
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var g golden
			if err := json.Unmarshal(b, &g); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			replayGolden(t, &g)
		})
	}
}

func replayGolden(t *testing.T, g *golden) {
	n := newReplayNode(t)
	if err := n.e.SeedRun(t.Context(), &g.Run, g.Journal); err != nil {
		t.Fatal(err)
	}
	n.provision(t)
	r := n.wait(t, g.Run.ID)
	if r.State != g.Want.State {
		t.Fatalf("run %s, want %s (error %q)", r.State, g.Want.State, r.Error)
	}
	if g.Want.Result != nil && !jsonEqual(r.Result, g.Want.Result) {
		t.Errorf("result %s, want the recorded %s", r.Result, g.Want.Result)
	}
	if len(g.Want.ResultFields) > 0 {
		var got map[string]json.RawMessage
		if err := json.Unmarshal(r.Result, &got); err != nil {
			t.Fatalf("result %s: %v", r.Result, err)
		}
		for k, v := range g.Want.ResultFields {
			if !jsonEqual(got[k], v) {
				t.Errorf("result %s: %s is %s, want %s", r.Result, k, got[k], v)
			}
		}
	}

	// The recorded entries stay as they were; the replay adds only what
	// the code did past them.
	ents, err := n.e.Journal(t.Context(), replayApp, g.Run.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) < len(g.Journal) {
		t.Fatalf("journal has %d entries, fewer than the %d seeded", len(ents), len(g.Journal))
	}
	for i, want := range g.Journal {
		got, _ := json.Marshal(ents[i])
		exp, _ := json.Marshal(want)
		if !bytes.Equal(got, exp) {
			t.Errorf("journal entry %d changed:\n got %s\nwant %s", i, got, exp)
		}
	}
	appended := []string{}
	for _, e := range ents[len(g.Journal):] {
		appended = append(appended, e.Type+":"+e.Name)
	}
	if !slices.Equal(appended, g.Want.Appended) {
		t.Errorf("the replay appended %q, want %q", appended, g.Want.Appended)
	}
	if got := n.executed(t); !slices.Equal(got, g.Want.Executed) {
		t.Errorf("step bodies ran for %q, want %q (a recorded step is never run again)", got, g.Want.Executed)
	}

	var nd *workflow.NonDeterminismError
	var found bool
	for _, err := range n.spy.errors() {
		if errors.As(err, &nd) {
			found = true
			break
		}
	}
	want := g.Want.NonDeterminism
	switch {
	case want == nil && found:
		t.Fatalf("replay failed for non-determinism: %v", nd)
	case want == nil:
		if errs := n.spy.errors(); len(errs) > 0 {
			t.Errorf("host calls failed: %v", errs)
		}
	case !found:
		t.Fatalf("replay did not fail with a *NonDeterminismError; host call errors %v, run %s %q", n.spy.errors(), r.State, r.Error)
	default:
		if nd.Pos != want.Pos || nd.Recorded != want.Recorded || nd.RecordedKind != want.RecordedKind || nd.Got != want.Got || nd.GotKind != want.GotKind ||
			nd.Workflow != "flow" || nd.RunID != g.Run.ID {
			t.Errorf("non-determinism %+v, want %+v", *nd, *want)
		}
		if !errors.Is(nd, workflow.ErrNonDeterminism) {
			t.Errorf("%v is not workflow.ErrNonDeterminism", nd)
		}
		for _, s := range []string{fmt.Sprintf("position %d", want.Pos), fmt.Sprintf("%q", want.Recorded), fmt.Sprintf("%q", want.Got)} {
			if !strings.Contains(r.Error, s) {
				t.Errorf("the run's error %q does not name %s", r.Error, s)
			}
		}
	}
}

func jsonEqual(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	ja, _ := json.Marshal(x)
	jb, _ := json.Marshal(y)
	return bytes.Equal(ja, jb)
}

// recordGoldens runs wfguest once from its start and writes the goldens:
// the recorded journal as it is, and changed the ways code drifts.
func recordGoldens(t *testing.T) {
	n := newReplayNode(t)
	n.provision(t)
	if _, _, err := n.e.Start(t.Context(), replayApp, "flow", replayRun, []byte(recordInput)); err != nil {
		t.Fatal(err)
	}
	done := n.wait(t, replayRun)
	if done.State != workflow.StateCompleted {
		t.Fatalf("recording run %s: %s", done.State, done.Error)
	}
	ents, err := n.e.Journal(t.Context(), replayApp, replayRun)
	if err != nil {
		t.Fatal(err)
	}
	// Positions of wfguest with 3 steps and a sleep: 0 s0, 1 nimbus.now,
	// 2 sleep, 3 nimbus.now, 4 s1, 5 s2, 6 nimbus.uuid.
	names := []string{}
	for _, e := range ents {
		names = append(names, e.Name)
	}
	if strings.Join(names, " ") != "s0 nimbus.now sleep nimbus.now s1 s2 nimbus.uuid" {
		t.Fatalf("recorded journal %q: wfguest changed; fix the goldens' derivations below", names)
	}
	// The run as it was when it started: what a node finds after a crash.
	start := *done
	start.State, start.Result, start.Error, start.Steps, start.Updated = workflow.StateRunning, nil, "", 0, start.Created
	var res struct {
		SleptMS int64 `json:"slept_ms"`
	}
	if err := json.Unmarshal(done.Result, &res); err != nil {
		t.Fatal(err)
	}
	slept, _ := json.Marshal(res.SleptMS)
	key := func(pos int, name string) string { return fmt.Sprintf("%s/%d/%s", replayRun, pos, name) }
	clone := func() []workflow.Entry { return slices.Clone(ents) }
	nd := func(pos int, rec, recKind, got, gotKind string) *workflow.NonDeterminismError {
		return &workflow.NonDeterminismError{Pos: pos, Recorded: rec, RecordedKind: recKind, Got: got, GotKind: gotKind}
	}

	goldens := map[string]golden{}
	goldens["completed"] = golden{
		Comment: "A completed run's journal, recorded from wfguest " + recordInput + ", resumed as if the node died before the run's end was recorded: " +
			"every step is replayed, none runs, and the result is the recorded one.",
		Run: start, Journal: ents,
		Want: goldenWant{State: workflow.StateCompleted, Result: done.Result, Appended: []string{}, Executed: []string{}},
	}
	goldens["midway"] = golden{
		Comment: "The recorded journal cut after the sleep (positions 0-3): s0, the clock reads and the sleep are replayed; s1, s2 and the UUID run now.",
		Run:     start, Journal: ents[:4],
		Want: goldenWant{State: workflow.StateCompleted, ResultFields: map[string]json.RawMessage{"slept_ms": slept},
			Appended: []string{"step:s1", "step:s2", "step:nimbus.uuid"}, Executed: []string{key(4, "s1"), key(5, "s2")}},
	}
	renamed := clone()
	renamed[4].Name = "reserve"
	goldens["renamed"] = golden{
		Comment: `The recorded journal with step s1 (position 4) recorded as "reserve": the code renamed a step while the run was in flight.`,
		Run:     start, Journal: renamed,
		Want: goldenWant{State: workflow.StateFailed, Appended: []string{}, Executed: []string{},
			NonDeterminism: nd(4, "reserve", workflow.EntryStep, "s1", workflow.EntryStep)},
	}
	reordered := clone()
	reordered[4], reordered[5] = reordered[5], reordered[4]
	reordered[4].Pos, reordered[5].Pos = 4, 5
	goldens["reordered"] = golden{
		Comment: "The recorded journal with s1 and s2 swapped (positions 4 and 5): the code reordered two steps.",
		Run:     start, Journal: reordered,
		Want: goldenWant{State: workflow.StateFailed, Appended: []string{}, Executed: []string{},
			NonDeterminism: nd(4, "s2", workflow.EntryStep, "s1", workflow.EntryStep)},
	}
	removed := start
	removed.Input = json.RawMessage(`{"steps":2,"sleep_ms":20}`)
	goldens["removed"] = golden{
		Comment: "The recorded journal of 3 steps, run by code that makes 2 (its input says so): at position 5 the code asks for its UUID where the journal has s2.",
		Run:     removed, Journal: ents,
		Want: goldenWant{State: workflow.StateFailed, Appended: []string{}, Executed: []string{},
			NonDeterminism: nd(5, "s2", workflow.EntryStep, "nimbus.uuid", workflow.EntryStep)},
	}
	slept2 := clone()
	slept2[2] = workflow.Entry{Type: workflow.EntryStep, Time: ents[2].Time, Pos: 2, Name: "notify", Attempt: 1, Result: json.RawMessage(`true`)}
	goldens["sleep_replaced"] = golden{
		Comment: `The recorded journal with a step "notify" where the code sleeps (position 2): a step replaced by a sleep.`,
		Run:     start, Journal: slept2,
		Want: goldenWant{State: workflow.StateFailed, Appended: []string{}, Executed: []string{},
			NonDeterminism: nd(2, "notify", workflow.EntryStep, "sleep", workflow.EntrySleep)},
	}
	if err := os.MkdirAll(goldenDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, g := range goldens {
		b, err := json.MarshalIndent(g, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(goldenDir, name+".json"), append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("recorded %d golden journals in %s", len(goldens), goldenDir)
}
