package audit_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbus-dev/nimbus/internal/audit"
	"github.com/nimbus-dev/nimbus/internal/store"
)

func open(t *testing.T) (*store.Store, *audit.Log) {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(context.Background(), store.Options{DataDir: t.TempDir(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	l, err := audit.Open(context.Background(), st.Committer())
	if err != nil {
		t.Fatal(err)
	}
	return st, l
}

func fill(t *testing.T, l *audit.Log, n int) []audit.Entry {
	t.Helper()
	var out []audit.Entry
	for i := range n {
		e, err := l.Append(context.Background(), audit.Entry{Actor: "abc123 ci", Tenant: []string{"a", "b"}[i%2],
			Action: "deploy", Target: fmt.Sprintf("app%d", i), Outcome: audit.OutcomeOK})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func TestChain(t *testing.T) {
	_, l := open(t)
	rep, err := l.Verify(context.Background())
	if err != nil || !rep.OK() || rep.Entries != 0 {
		t.Fatalf("empty log: %+v %v", rep, err)
	}
	es := fill(t, l, 5)
	for i, e := range es {
		if e.Seq != uint64(i+1) || (i > 0 && e.Prev != es[i-1].Hash) || (i == 0 && e.Prev != "") || len(e.Hash) != 64 {
			t.Fatalf("entry %d: %+v", i, e)
		}
	}
	rep, err = l.Verify(context.Background())
	if err != nil || !rep.OK() || rep.Entries != 5 || rep.Head != es[4].Hash || rep.HeadSeq != 5 {
		t.Fatalf("verify: %+v %v", rep, err)
	}
	got, err := l.List(context.Background(), audit.Filter{Tenant: "a", Limit: 2})
	if err != nil || len(got) != 2 || got[0].Target != "app2" || got[1].Target != "app4" || got[1].Hash != es[4].Hash {
		t.Fatalf("list: %+v %v", got, err)
	}
	if _, err := l.Append(context.Background(), audit.Entry{Action: "deploy"}); err == nil {
		t.Fatal("an entry without actor was appended")
	}
}

// TestWritersShareOneChain: two logs on one store (two nodes) appending at
// once extend one chain; neither forks it.
func TestWritersShareOneChain(t *testing.T) {
	st, l1 := open(t)
	l2, err := audit.Open(context.Background(), st.Committer())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, l := range []*audit.Log{l1, l2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				if _, err := l.Append(context.Background(), audit.Entry{Actor: "node", Action: "deploy", Outcome: audit.OutcomeOK}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	rep, err := l1.Verify(context.Background())
	if err != nil || !rep.OK() || rep.Entries != 40 {
		t.Fatalf("verify: %+v %v", rep, err)
	}
}

// rewrite replaces the stream's messages with what edit makes of them, as
// someone with write access to the store would.
func rewrite(t *testing.T, st *store.Store, edit func(i int, data []byte, h nats.Header) ([]byte, nats.Header, bool)) {
	t.Helper()
	ctx := context.Background()
	s, err := st.JetStream().Stream(ctx, audit.Stream)
	if err != nil {
		t.Fatal(err)
	}
	var msgs []*jetstream.RawStreamMsg
	for seq := s.CachedInfo().State.FirstSeq; seq <= s.CachedInfo().State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	// The stream denies deletes and purges, and a config update cannot
	// lift that: delete the stream and make it again.
	cfg := s.CachedInfo().Config
	if err := st.JetStream().DeleteStream(ctx, audit.Stream); err != nil {
		t.Fatal(err)
	}
	if _, err := st.JetStream().CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	for i, m := range msgs {
		// Keep only the hash: the stored headers hold the original
		// write's compare-and-swap, which a republish must not repeat.
		data, h, keep := edit(i, m.Data, nats.Header{audit.HeaderHash: []string{m.Header.Get(audit.HeaderHash)}})
		if !keep {
			continue
		}
		if _, err := st.JetStream().PublishMsg(ctx, &nats.Msg{Subject: audit.Subject, Data: data, Header: h}); err != nil {
			t.Fatal(err)
		}
	}
}

func setOutcome(t *testing.T, data []byte) []byte {
	var e map[string]any
	if err := json.Unmarshal(data, &e); err != nil {
		t.Fatal(err)
	}
	e["actor"] = "someone else"
	b, _ := json.Marshal(e)
	return b
}

// TestVerifyNamesTheTamperedEntry: an entry rewritten in the stream, with
// or without its hash recomputed, or removed, is named by Verify.
func TestVerifyNamesTheTamperedEntry(t *testing.T) {
	cases := []struct {
		name    string
		edit    func(t *testing.T) func(i int, data []byte, h nats.Header) ([]byte, nats.Header, bool)
		seq     uint64
		mention string
	}{
		{"content changed", func(t *testing.T) func(int, []byte, nats.Header) ([]byte, nats.Header, bool) {
			return func(i int, data []byte, h nats.Header) ([]byte, nats.Header, bool) {
				if i == 2 {
					data = setOutcome(t, data)
				}
				return data, h, true
			}
		}, 3, "entry 3 was altered"},
		{"content and its hash changed", func(t *testing.T) func(int, []byte, nats.Header) ([]byte, nats.Header, bool) {
			return func(i int, data []byte, h nats.Header) ([]byte, nats.Header, bool) {
				if i == 2 {
					data = setOutcome(t, data)
					sum := sha(data)
					h = nats.Header{audit.HeaderHash: []string{sum}}
				}
				return data, h, true
			}
		}, 4, "entry 4 does not link to entry 3"},
		{"entry removed", func(t *testing.T) func(int, []byte, nats.Header) ([]byte, nats.Header, bool) {
			return func(i int, data []byte, h nats.Header) ([]byte, nats.Header, bool) { return data, h, i != 2 }
		}, 3, "entry 3 is missing"},
		{"first entry removed", func(t *testing.T) func(int, []byte, nats.Header) ([]byte, nats.Header, bool) {
			return func(i int, data []byte, h nats.Header) ([]byte, nats.Header, bool) { return data, h, i != 0 }
		}, 1, "entry 1 is missing"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			st, l := open(t)
			fill(t, l, 5)
			rewrite(t, st, c.edit(t))
			rep, err := l.Verify(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK() || rep.Broken.Seq != c.seq || !strings.Contains(rep.Broken.Reason, c.mention) {
				t.Fatalf("verify: %+v %+v, want entry %d: %q", rep, rep.Broken, c.seq, c.mention)
			}
		})
	}
}
