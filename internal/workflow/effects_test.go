package workflow

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/state"
	"github.com/nimbus-dev/nimbus/internal/store"
)

// bucketApplier applies effects to real buckets, as the server does, and
// counts its calls.
type bucketApplier struct {
	b     *state.Buckets
	calls atomic.Int32
}

func (w *bucketApplier) ApplyEffect(ctx context.Context, app string, e Effect, id string) error {
	w.calls.Add(1)
	if e.Op == EffectKVDelete {
		return w.b.DeleteOnce(ctx, app, e.Bucket, e.Key, id)
	}
	_, err := w.b.Put(ctx, app, e.Bucket, e.Key, e.Value, state.PutOptions{MsgID: id})
	return err
}

// fxGuest runs one journaled step "a" that writes ledger/k.
func fxGuest(ctx context.Context, e *Engine, inv string, n int) (*runtime.Response, error) {
	ans, err := e.StepBegin(ctx, testApp, inv, 0, "a")
	if err != nil {
		return nil, err
	}
	if !ans.Replay {
		if err := e.JournalEffects(testApp, inv, 0); err != nil {
			return nil, err
		}
		if !e.BufferEffect(testApp, inv, Effect{Op: EffectKVPut, Bucket: "ledger", Key: "k", Value: []byte("v")}) {
			return nil, fmt.Errorf("the effect was not buffered")
		}
		if v, del, ok := e.BufferedKV(testApp, inv, "ledger", "k"); !ok || del || string(v) != "v" {
			return nil, fmt.Errorf("the step does not read its own write: %q %v %v", v, del, ok)
		}
		if _, err := e.StepEnd(ctx, testApp, inv, 0, "a", []byte(`1`), false, -1); err != nil {
			return nil, err
		}
	}
	return completed(`1`), nil
}

// A step's effect is applied once across restarts. When the node stopped
// before applying it (here: no applier), the next start applies it; when
// it stopped after applying it but before the views were written, the
// next start writes it again as a duplicate of the same id (no new
// write); once the views show the pack, a start does not write it.
func TestEffectsAppliedOnceAcrossRestarts(t *testing.T) {
	t.Parallel()
	for _, applied := range []bool{false, true} {
		t.Run(fmt.Sprintf("applied=%v", applied), func(t *testing.T) {
			t.Parallel()
			testEffectsOnce(t, applied)
		})
	}
}

func testEffectsOnce(t *testing.T, applied bool) {
	st := openStore(t)
	buckets := state.New(st.Committer(), slog.New(slog.DiscardHandler))
	if err := buckets.Ensure(t.Context(), state.BucketConfig{App: testApp, Name: "ledger", History: 10}); err != nil {
		t.Fatal(err)
	}
	writes := func() uint64 {
		t.Helper()
		name := state.BucketName(testApp, "ledger")
		s, err := st.JetStream().Stream(t.Context(), store.KVStream(name))
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(t.Context(), jetstream.WithSubjectFilter(store.KVSubject(name, "k")))
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	start := func(fx EffectApplier) *Engine {
		t.Helper()
		inv := &invoker{g: fxGuest, n: map[string]int{}}
		e := New(st.Committer(), inv, Options{Logger: slog.New(slog.DiscardHandler), ActivationBackoff: time.Millisecond, Effects: fx})
		e.j.matDelay = time.Hour // no view is written but by a start
		inv.e = e
		t.Cleanup(func() { e.Close(context.Background()) })
		if err := e.Provision(t.Context(), testRevision()); err != nil {
			t.Fatal(err)
		}
		return e
	}

	// The step commits; the node stops before the views are written.
	var first EffectApplier
	want := uint64(0)
	if applied {
		first, want = &bucketApplier{b: buckets}, 1
	}
	e1 := start(first)
	if _, _, err := e1.Start(t.Context(), testApp, "flow", "run-1", nil); err != nil {
		t.Fatal(err)
	}
	if r := wait(t, e1, "run-1"); r.State != StateCompleted {
		t.Fatalf("run-1 is %s", r.State)
	}
	e1.Close(t.Context())
	if n := writes(); n != want {
		t.Fatalf("%d writes of the effect before the restart, want %d", n, want)
	}

	// The next start applies it (a duplicate when it was applied), then
	// writes the views; the one after finds it there.
	for i, wantCalls := range []int32{1, 0} {
		fx := &bucketApplier{b: buckets}
		e := start(fx)
		if n, c := writes(), fx.calls.Load(); n != 1 || c != wantCalls {
			t.Fatalf("start %d: %d writes of the effect in %d calls, want 1 in %d", i+2, n, c, wantCalls)
		}
		e.Close(t.Context())
	}
	if v, _, err := buckets.Get(t.Context(), testApp, "ledger", "k"); err != nil || string(v) != "v" {
		t.Fatalf("ledger/k = %q, %v", v, err)
	}
}

// BenchmarkInJournaledStep is the question every KV call and publish asks
// the engine: for a plain function's invocation (the common case, no
// lock) and for an activation that runs no journaled step.
func BenchmarkInJournaledStep(b *testing.B) {
	st, err := store.Open(b.Context(), store.Options{DataDir: b.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	e := New(st.Committer(), &invoker{n: map[string]int{}}, Options{Logger: slog.New(slog.DiscardHandler)})
	defer e.Close(context.Background())
	e.mu.Lock()
	e.acts["wf-run-1-1"] = &activation{id: "wf-run-1-1", r: &run{app: testApp, id: "run-1"}}
	e.mu.Unlock()
	for _, inv := range []string{"inv-0123456789", "wf-run-1-1"} {
		b.Run(inv[:3], func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if e.InJournaledStep(testApp, inv) {
						b.Fatal("journaled")
					}
				}
			})
		})
	}
}
