package workflow

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbus-dev/nimbus/internal/store"
)

// refuseWrites makes app's workflow log refuse every write (a full
// stream: DiscardNew at its current count), as a full disk or a store
// that lost its quorum would; the returned func lets writes through again.
func refuseWrites(t *testing.T, st *store.Store, app string) func() {
	t.Helper()
	ctx := t.Context()
	js := st.JetStream()
	s, err := js.Stream(ctx, LogStreamName(app))
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := info.Config
	orig := cfg
	cfg.MaxMsgs, cfg.Discard = int64(max(info.State.Msgs, 1)), jetstream.DiscardNew
	if info.State.Msgs == 0 {
		// An empty stream cannot be full by count: a byte limit below any
		// message does it.
		cfg.MaxMsgs, cfg.MaxBytes = -1, 1
	}
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	return func() {
		if _, err := js.UpdateStream(context.Background(), orig); err != nil {
			t.Fatal(err)
		}
	}
}

// TestHeldBackCommitFailure: the log refuses writes (full) while runs
// start. Nothing is reported stored that is not: an eager start fails
// with the store's error; a lazy start (accepted in memory, its start to
// ride with its first commit) does not exist once that commit failed,
// and its waiter is answered (ErrRunNotFound: the server, which started
// it, answers ErrStartNotStored), not left waiting. Once writes go
// through again, both ids start anew and complete.
func TestHeldBackCommitFailure(t *testing.T) {
	t.Parallel()
	st := openStore(t)
	var execs sync.Map
	e, _ := engineOn(t, st, steps([]string{"a", "b", "c"}, 0, &execs), time.Hour)
	if _, _, err := e.Start(t.Context(), testApp, "flow", "warmup", nil); err != nil {
		t.Fatal(err)
	}
	wait(t, e, "warmup")

	allow := refuseWrites(t, st, testApp)
	if _, _, err := e.Start(t.Context(), testApp, "flow", "eager", nil); err == nil || !strings.Contains(err.Error(), "maximum") {
		t.Fatalf("an eager start while the log is full: %v, want the store's refusal", err)
	}
	if _, _, err := e.StartLazy(t.Context(), testApp, "flow", "lazy", nil); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	_, err := e.Wait(ctx, testApp, "lazy")
	cancel()
	if !errors.Is(err, ErrRunNotFound) {
		t.Fatalf("waiting for a lazy start whose first commit failed: %v, want ErrRunNotFound", err)
	}
	allow()
	for _, c := range []struct {
		id    string
		start func(context.Context, string, string, string, []byte) (*Run, bool, error)
	}{{"eager", e.Start}, {"lazy", e.StartLazy}} {
		if _, created, err := c.start(t.Context(), testApp, "flow", c.id, nil); err != nil || !created {
			t.Fatalf("start %s again: created %v, %v", c.id, created, err)
		}
		if rec := wait(t, e, c.id); rec.State != StateCompleted {
			t.Fatalf("run %s after writes came back: %s %s", c.id, rec.State, rec.Error)
		}
	}
}
