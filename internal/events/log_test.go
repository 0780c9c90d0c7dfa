package events

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbus-dev/nimbus/internal/store"
)

func testLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// openStore starts a real embedded JetStream (SyncAlways) on dir.
func openStore(t testing.TB, dir string) *store.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := store.Open(ctx, store.Options{DataDir: dir, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// openLog opens a Log on a fresh store; both are closed at the end of the
// test.
func openLog(t testing.TB, cfg LogConfig) (*Log, *store.Store) {
	t.Helper()
	s := openStore(t, t.TempDir())
	t.Cleanup(func() { s.Close() })
	cfg.Logger = testLogger()
	l, err := OpenLog(context.Background(), s.JetStream(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(context.Background()) })
	return l, s
}

// storedEntry is one entry read back from the stream: a message, or one
// entry of a pack.
type storedEntry struct {
	subject string
	seq     uint64 // its message's
	index   int    // in its pack; 0 when not packed
	packed  bool
	header  nats.Header
	data    []byte
}

func (e storedEntry) Subject() string      { return e.subject }
func (e storedEntry) Data() []byte         { return e.data }
func (e storedEntry) Headers() nats.Header { return e.header }
func (e storedEntry) Pos() uint64          { return Position(e.seq, e.index) }

// readAll returns every entry of the stream in order, a pack's entries one
// by one (with their id as a Nats-Msg-Id header, as a message of its own
// has it).
func readAll(t testing.TB, js jetstream.JetStream, stream string) []storedEntry {
	var out []storedEntry
	for _, m := range readMessages(t, js, stream) {
		md, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		if m.Headers().Get(HeaderPack) == "" {
			out = append(out, storedEntry{subject: m.Subject(), seq: md.Sequence.Stream, header: m.Headers(), data: m.Data()})
			continue
		}
		err = unpack(m.Data(), func(i int, id string, data []byte) bool {
			h := nats.Header{}
			if id != "" {
				h.Set(nats.MsgIdHdr, id)
			}
			out = append(out, storedEntry{subject: m.Subject(), seq: md.Sequence.Stream, index: i, packed: true, header: h, data: data})
			return true
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// readMessages returns every message of the stream in order.
func readMessages(t testing.TB, js jetstream.JetStream, stream string) []jetstream.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := int(info.State.Msgs)
	var out []jetstream.Msg
	if want == 0 {
		return nil
	}
	c, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for len(out) < want {
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d messages: %v", len(out), want, ctx.Err())
		}
		batch, err := c.Fetch(min(500, want-len(out)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			out = append(out, m)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			t.Fatal(err)
		}
	}
	return out
}

// seqOf returns the stream sequence of an entry's message.
func seqOf(t testing.TB, e storedEntry) uint64 { return e.seq }

// posOf returns the position an ack names.
func posOf(a Ack) uint64 { return Position(a.Seq, a.Index) }

func TestAppendReadBack(t *testing.T) {
	t.Parallel()
	l, s := openLog(t, LogConfig{})
	ctx := context.Background()
	var want []Entry
	for i := range 3 { // single appends: plain publishes
		e := Entry{
			Subject: fmt.Sprintf("nimbus.events.shop.orders.%d", i),
			MsgID:   fmt.Sprintf("single-%d", i),
			Header:  nats.Header{"Ce-Type": []string{"order.created"}, "Traceparent": []string{"00-abc-def-01"}},
			Data:    []byte(fmt.Sprintf(`{"n":%d}`, i)),
		}
		acks, err := l.Append(ctx, e)
		if err != nil {
			t.Fatal(err)
		}
		if len(acks) != 1 || acks[0].Seq != uint64(i+1) || acks[0].Duplicate {
			t.Fatalf("append %d: acks %+v", i, acks)
		}
		want = append(want, e)
	}
	var multi []Entry // one call, one atomic batch (larger than plainBatchMax)
	for i := range 20 {
		multi = append(multi, Entry{
			Subject: "nimbus.events.shop.payments",
			Header:  nats.Header{"Ce-Id": []string{fmt.Sprint(i)}},
			Data:    []byte(fmt.Sprintf("payment %d", i)),
		})
	}
	acks, err := l.Append(ctx, multi...)
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range acks {
		if a.Seq != uint64(4+i) || a.Duplicate || len(acks) != 20 {
			t.Fatalf("batch acks %+v", acks)
		}
	}
	want = append(want, multi...)

	got := readAll(t, s.JetStream(), l.Stream())
	if len(got) != len(want) {
		t.Fatalf("stream has %d messages, want %d", len(got), len(want))
	}
	for i, m := range got {
		w := want[i]
		if m.Subject() != w.Subject || string(m.Data()) != string(w.Data) || seqOf(t, m) != uint64(i+1) {
			t.Errorf("message %d: %s %q seq %d, want %s %q", i, m.Subject(), m.Data(), seqOf(t, m), w.Subject, w.Data)
		}
		for k, v := range w.Header {
			if m.Headers().Get(k) != v[0] {
				t.Errorf("message %d: header %s = %q, want %q", i, k, m.Headers().Get(k), v[0])
			}
		}
		if w.MsgID != "" && m.Headers().Get(nats.MsgIdHdr) != w.MsgID {
			t.Errorf("message %d: Nats-Msg-Id %q, want %q", i, m.Headers().Get(nats.MsgIdHdr), w.MsgID)
		}
		// The caller's header map is never modified.
		if _, ok := w.Header["Nats-Batch-Id"]; ok {
			t.Errorf("entry %d: caller's header was modified", i)
		}
	}
	if st := l.Stats(); st.Commits != 4 || st.Entries != 23 || st.MaxBatch != 20 {
		t.Errorf("stats %+v, want 4 commits, 23 entries, max batch 20", st)
	}
}

func TestAppendConcurrent(t *testing.T) {
	t.Parallel()
	const appenders, each = 64, 200
	l, s := openLog(t, LogConfig{})
	ctx := context.Background()
	type rec struct {
		id  string
		ack Ack
	}
	results := make([][]rec, appenders)
	errs := make(chan error, appenders)
	var wg sync.WaitGroup
	for g := range appenders {
		wg.Go(func() {
			for i := range each {
				id := fmt.Sprintf("%d-%d", g, i)
				acks, err := l.Append(ctx, Entry{Subject: fmt.Sprintf("nimbus.events.app.t%d", g%4), MsgID: id, Data: []byte(id)})
				if err != nil {
					errs <- fmt.Errorf("appender %d entry %d: %w", g, i, err)
					return
				}
				results[g] = append(results[g], rec{id, acks[0]})
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	bySeq := map[uint64]string{}
	for g := range appenders {
		last := uint64(0)
		for _, r := range results[g] {
			if r.ack.Duplicate || r.ack.Seq == 0 {
				t.Fatalf("%s: ack %+v", r.id, r.ack)
			}
			// Concurrent single entries are packed together: an entry's
			// place is its position.
			pos := posOf(r.ack)
			if other, ok := bySeq[pos]; ok {
				t.Fatalf("%s and %s both acked at %d", r.id, other, pos)
			}
			if pos <= last { // one appender's entries are stored in its order
				t.Fatalf("appender %d: position %d after %d", g, pos, last)
			}
			last = pos
			bySeq[pos] = r.id
		}
	}
	msgs := readAll(t, s.JetStream(), l.Stream())
	if len(msgs) != appenders*each {
		t.Fatalf("stream has %d messages, want %d", len(msgs), appenders*each)
	}
	seen := map[string]bool{}
	for _, m := range msgs {
		id := m.Headers().Get(nats.MsgIdHdr)
		if seen[id] {
			t.Fatalf("%s stored twice", id)
		}
		seen[id] = true
		if bySeq[m.Pos()] != id || string(m.Data()) != id {
			t.Fatalf("position %d holds %s (%q), acked for %s", m.Pos(), id, m.Data(), bySeq[m.Pos()])
		}
	}
	st := l.Stats()
	t.Logf("stats: %+v (%.1f entries per commit)", st, float64(st.Entries)/float64(st.Commits))
	if st.MaxBatch < 2 || st.Commits >= appenders*each {
		t.Errorf("no group commit happened: %+v", st)
	}
	if st.Entries != appenders*each || st.Failed != 0 || st.Duplicates != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestAppendDuplicates(t *testing.T) {
	t.Parallel()
	l, s := openLog(t, LogConfig{})
	ctx := context.Background()
	ev := func(id, data string) Entry {
		return Entry{Subject: "nimbus.events.app.topic", MsgID: id, Data: []byte(data)}
	}
	stored := 0 // entries expected in the stream

	// Across calls: the second is reported, not stored.
	a1, err := l.Append(ctx, ev("a", "first"))
	if err != nil {
		t.Fatal(err)
	}
	stored++
	a2, err := l.Append(ctx, ev("a", "second"))
	if err != nil {
		t.Fatal(err)
	}
	if !a2[0].Duplicate || a2[0].Seq != a1[0].Seq || a1[0].Duplicate {
		t.Fatalf("acks %+v then %+v", a1, a2)
	}

	// Both copies in one batch, small (pipelined plain publishes) and large
	// (one atomic batch).
	for _, n := range []int{5, 12} {
		es := []Entry{ev(fmt.Sprintf("b%d", n), "1"), ev(fmt.Sprintf("c%d", n), "2"), ev(fmt.Sprintf("b%d", n), "3")}
		for len(es) < n {
			es = append(es, ev("", "no id"))
		}
		acks, err := l.Append(ctx, es...)
		if err != nil {
			t.Fatal(err)
		}
		stored += n - 1
		if acks[0].Duplicate || !acks[2].Duplicate || posOf(acks[2]) != posOf(acks[0]) || acks[3].Duplicate || posOf(acks[1]) != posOf(acks[0])+1 {
			t.Fatalf("same-batch acks (%d entries) %+v", n, acks)
		}
	}

	// A batch with one id already in the stream: the Log's own index (a
	// pack's ids are not the stream's) answers it as a duplicate, and the
	// others are stored once, packed.
	var batch []Entry
	for i := range 12 {
		batch = append(batch, ev(fmt.Sprintf("d%d", i), "x"))
	}
	batch[5] = ev("c5", "again")
	acks, err := l.Append(ctx, batch...)
	if err != nil {
		t.Fatal(err)
	}
	stored += len(batch) - 1
	for i, a := range acks {
		if (i == 5) != a.Duplicate {
			t.Fatalf("batch acks %+v", acks)
		}
	}

	// The same batch again (a client retrying): every entry a duplicate,
	// each pointing at its stored copy.
	again, err := l.Append(ctx, batch...)
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range again {
		if !a.Duplicate || posOf(a) != posOf(acks[i]) {
			t.Fatalf("batch sent again: acks %+v, first %+v", again, acks)
		}
	}

	msgs := readAll(t, s.JetStream(), l.Stream())
	if len(msgs) != stored {
		t.Fatalf("stream has %d entries, want %d", len(msgs), stored)
	}
	seen := map[string]uint64{}
	for _, m := range msgs {
		id := m.Headers().Get(nats.MsgIdHdr)
		if id == "" {
			continue
		}
		if _, ok := seen[id]; ok {
			t.Fatalf("%s stored twice", id)
		}
		seen[id] = m.Pos()
	}
	if seen["c5"] != posOf(acks[5]) || seen["a"] != posOf(a1[0]) {
		t.Errorf("duplicate acks point at %d/%d, stored at %d/%d", posOf(acks[5]), posOf(a1[0]), seen["c5"], seen["a"])
	}
	for i, a := range acks {
		if id := batch[i].MsgID; seen[id] != posOf(a) {
			t.Errorf("%s acked at %d, stored at %d", id, posOf(a), seen[id])
		}
	}
}

func TestAppendRejectsEntry(t *testing.T) {
	t.Parallel()
	l, s := openLog(t, LogConfig{MaxEventBytes: 1024, MaxBatch: 10})
	ok := Entry{Subject: "nimbus.events.app.topic", Data: []byte("ok")}
	cases := []struct {
		name  string
		bad   Entry
		index int
		want  error
	}{
		{"oversized data", Entry{Subject: "nimbus.events.app.topic", Data: make([]byte, 1025)}, 1, ErrTooLarge},
		{"headers count", Entry{Subject: "nimbus.events.app.topic", Header: nats.Header{"X": []string{strings.Repeat("v", 1000)}}, Data: make([]byte, 100)}, 1, ErrTooLarge},
		{"msg id counts", Entry{Subject: "nimbus.events.app.topic", MsgID: strings.Repeat("i", 1000), Data: make([]byte, 100)}, 1, ErrTooLarge},
		{"outside the stream", Entry{Subject: "nimbus.logs.app.fn", Data: []byte("x")}, 1, ErrInvalidEntry},
		{"wildcard subject", Entry{Subject: "nimbus.events.app.*", Data: []byte("x")}, 1, ErrInvalidEntry},
		{"empty token", Entry{Subject: "nimbus.events..x", Data: []byte("x")}, 1, ErrInvalidEntry},
		{"prefix only", Entry{Subject: "nimbus.events.", Data: []byte("x")}, 1, ErrInvalidEntry},
		{"reserved header", Entry{Subject: "nimbus.events.app.topic", Header: nats.Header{"Nats-Expected-Last-Msg-Id": []string{"x"}}}, 1, ErrInvalidEntry},
		{"reserved header any case", Entry{Subject: "nimbus.events.app.topic", Header: nats.Header{"nats-batch-id": []string{"x"}}}, 1, ErrInvalidEntry},
		{"line break in header", Entry{Subject: "nimbus.events.app.topic", Header: nats.Header{"X": []string{"a\r\nB: c"}}}, 1, ErrInvalidEntry},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			acks, err := l.Append(context.Background(), ok, c.bad, ok)
			var ee *EntryError
			if !errors.As(err, &ee) || ee.Index != c.index || !errors.Is(err, c.want) || acks != nil {
				t.Fatalf("got %v (%+v), want entry %d: %v", err, acks, c.index, c.want)
			}
		})
	}
	exact := Entry{Subject: "nimbus.events.app.topic", Data: make([]byte, 1024)}
	if _, err := l.Append(context.Background(), exact); err != nil {
		t.Fatalf("an entry of exactly MaxEventBytes: %v", err)
	}
	many := make([]Entry, 11)
	for i := range many {
		many[i] = ok
	}
	if _, err := l.Append(context.Background(), many...); !errors.Is(err, ErrTooManyEntries) {
		t.Fatalf("11 entries with MaxBatch 10: %v", err)
	}
	// Nothing of a rejected call was stored.
	if n := len(readAll(t, s.JetStream(), l.Stream())); n != 1 {
		t.Fatalf("stream has %d messages, want 1", n)
	}
}

// TestOversizedFailsAlone: concurrent appenders are not affected by one
// caller's oversized event.
func TestOversizedFailsAlone(t *testing.T) {
	t.Parallel()
	l, s := openLog(t, LogConfig{MaxEventBytes: 512})
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 16*50)
	for g := range 16 {
		wg.Go(func() {
			for i := range 50 {
				size := 10
				if g == 0 && i%5 == 0 {
					size = 513
				}
				_, err := l.Append(ctx, Entry{Subject: "nimbus.events.app.t", MsgID: fmt.Sprintf("%d.%d", g, i), Data: make([]byte, size)})
				if (size > 512) != errors.Is(err, ErrTooLarge) || (size <= 512 && err != nil) {
					errs <- fmt.Errorf("appender %d entry %d (%d bytes): %v", g, i, size, err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := len(readAll(t, s.JetStream(), l.Stream())); n != 16*50-10 {
		t.Fatalf("stream has %d messages, want %d", n, 16*50-10)
	}
}

// TestCancelDoesNotBreakOthers: callers whose context ends at random points
// get ctx's error (nothing stored if the committer had not taken their
// call) or ErrOutcomeUnknown; every other caller's batch is unaffected.
func TestCancelDoesNotBreakOthers(t *testing.T) {
	t.Parallel()
	l, s := openLog(t, LogConfig{})
	type result struct {
		id     string
		err    error
		cancel bool
	}
	var mu sync.Mutex
	var results []result
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Go(func() {
			for i := range 40 {
				ctx, cancel := context.WithCancel(context.Background())
				cancelled := g%2 == 1
				id := fmt.Sprintf("%d.%d", g, i)
				done := make(chan struct{})
				if cancelled {
					go func() { // cancel concurrently with the append
						defer close(done)
						cancel()
					}()
				} else {
					close(done)
				}
				_, err := l.Append(ctx, Entry{Subject: "nimbus.events.app.t", MsgID: id, Data: []byte(id)})
				<-done
				cancel()
				mu.Lock()
				results = append(results, result{id, err, cancelled})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	stored := map[string]bool{}
	for _, m := range readAll(t, s.JetStream(), l.Stream()) {
		stored[m.Headers().Get(nats.MsgIdHdr)] = true
	}
	var abandoned, unknown int
	for _, r := range results {
		switch {
		case r.err == nil:
			if !stored[r.id] {
				t.Errorf("%s acknowledged but not stored", r.id)
			}
		case !r.cancel:
			t.Errorf("%s (context not cancelled) failed: %v", r.id, r.err)
		case errors.Is(r.err, ErrOutcomeUnknown):
			unknown++
		case errors.Is(r.err, context.Canceled):
			abandoned++
			if stored[r.id] {
				t.Errorf("%s abandoned before commit but stored", r.id)
			}
		default:
			t.Errorf("%s: unexpected error %v", r.id, r.err)
		}
	}
	t.Logf("cancelled callers: %d abandoned before commit, %d outcome unknown", abandoned, unknown)
}

func TestCloseDrains(t *testing.T) {
	t.Parallel()
	l, s := openLog(t, LogConfig{})
	type result struct {
		id  string
		err error
	}
	var mu sync.Mutex
	var results []result
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Go(func() {
			for i := range 100 {
				id := fmt.Sprintf("%d.%d", g, i)
				_, err := l.Append(context.Background(), Entry{Subject: "nimbus.events.app.t", MsgID: id})
				mu.Lock()
				results = append(results, result{id, err})
				mu.Unlock()
				if err != nil {
					return
				}
			}
		})
	}
	deadline := time.Now().Add(30 * time.Second)
	for l.Stats().Entries < 200 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond) // poll
	}
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if _, err := l.Append(context.Background(), Entry{Subject: "nimbus.events.app.t"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after close: %v", err)
	}
	if err := l.Close(context.Background()); err != nil {
		t.Fatalf("second close: %v", err)
	}
	stored := map[string]bool{}
	for _, m := range readAll(t, s.JetStream(), l.Stream()) {
		stored[m.Headers().Get(nats.MsgIdHdr)] = true
	}
	acked := 0
	for _, r := range results {
		switch {
		case r.err == nil:
			acked++
			if !stored[r.id] {
				t.Errorf("%s acknowledged but not stored", r.id)
			}
		case errors.Is(r.err, ErrClosed): // called after Close began
		default:
			t.Errorf("%s: %v (Close must drain, not fail, queued appends)", r.id, r.err)
		}
	}
	if acked != len(stored) {
		t.Errorf("%d acknowledged, %d stored", acked, len(stored))
	}
}

// TestReopen: every acknowledged entry survives a store restart, and the
// duplicate window still holds after it.
func TestReopen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := context.Background()
	s := openStore(t, dir)
	l, err := OpenLog(ctx, s.JetStream(), LogConfig{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	acked := map[string]uint64{}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				id := fmt.Sprintf("%d.%d", g, i)
				acks, err := l.Append(ctx, Entry{Subject: "nimbus.events.app.t", MsgID: id, Data: []byte(id)})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked[id] = acks[0].Seq
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, dir)
	defer s.Close()
	l, err = OpenLog(ctx, s.JetStream(), LogConfig{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(ctx)
	got := map[string]uint64{}
	for _, m := range readAll(t, s.JetStream(), l.Stream()) {
		got[m.Headers().Get(nats.MsgIdHdr)] = seqOf(t, m)
	}
	for id, seq := range acked {
		if got[id] != seq {
			t.Errorf("%s acked at %d, after restart at %d", id, seq, got[id])
		}
	}
	acks, err := l.Append(ctx, Entry{Subject: "nimbus.events.app.t", MsgID: "3.7"})
	if err != nil || !acks[0].Duplicate || acks[0].Seq != acked["3.7"] {
		t.Fatalf("re-append after restart: %+v %v", acks, err)
	}
}

// TestConcurrentBatchesShareIDs: batches sent at once by many callers with
// ids in common (clients retrying in different batches) store each id
// once, and every ack of an id names that one copy.
func TestConcurrentBatchesShareIDs(t *testing.T) {
	t.Parallel()
	l, s := openLog(t, LogConfig{})
	ctx := context.Background()
	const callers, rounds, ids = 8, 20, 50
	type got struct {
		id  string
		pos uint64
	}
	results := make(chan got, callers*rounds*10)
	var wg sync.WaitGroup
	for g := range callers {
		wg.Go(func() {
			for r := range rounds {
				var batch []Entry
				for k := range 10 {
					id := fmt.Sprint("id", (g*7+r*3+k*11)%ids)
					batch = append(batch, Entry{Subject: "nimbus.events.app.t", MsgID: id, Data: []byte(id)})
				}
				acks, err := l.Append(ctx, batch...)
				if err != nil {
					t.Error(err)
					return
				}
				for k, a := range acks {
					results <- got{batch[k].MsgID, posOf(a)}
				}
			}
		})
	}
	wg.Wait()
	close(results)
	stored := map[string]uint64{}
	for _, e := range readAll(t, s.JetStream(), l.Stream()) {
		id := e.Headers().Get(nats.MsgIdHdr)
		if _, dup := stored[id]; dup {
			t.Fatalf("%s stored twice", id)
		}
		stored[id] = e.Pos()
	}
	for r := range results {
		if stored[r.id] != r.pos {
			t.Fatalf("%s acked at %d, stored at %d", r.id, r.pos, stored[r.id])
		}
	}
	if len(stored) != ids {
		t.Fatalf("%d ids stored, want %d", len(stored), ids)
	}
}

// TestConcurrentSinglesSharePacks: single entries appended by many
// callers at once share packs (the Log's own group commit), each acked at
// its own position.
func TestConcurrentSinglesSharePacks(t *testing.T) {
	t.Parallel()
	l, s := openLog(t, LogConfig{})
	ctx := context.Background()
	var mu sync.Mutex
	acked := map[string]uint64{}
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 20 {
				id := fmt.Sprint(g, ".", i)
				acks, err := l.Append(ctx, Entry{Subject: "nimbus.events.app.t", MsgID: id, Data: []byte(id)})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked[id] = posOf(acks[0])
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	st := l.Stats()
	if st.Packs == 0 || st.Entries != 16*20 {
		t.Errorf("16 concurrent callers of single entries: %+v, want packs", st)
	}
	stored := 0
	for _, e := range readAll(t, s.JetStream(), l.Stream()) {
		stored++
		if id := string(e.Data()); acked[id] != e.Pos() {
			t.Errorf("%s acked at %d, stored at %d", id, acked[id], e.Pos())
		}
	}
	if stored != 16*20 {
		t.Errorf("%d entries stored, want %d", stored, 16*20)
	}
	t.Logf("%d messages, %d packs for %d entries", st.Messages, st.Packs, st.Entries)
}

// TestPacksSplitBySize: a batch larger than one message goes into several
// packs, each within the largest message, and an entry too big to share a
// message goes alone; every entry reads back at its acked position.
func TestPacksSplitBySize(t *testing.T) {
	t.Parallel()
	l, s := openLog(t, LogConfig{MaxEventBytes: 2048})
	ctx := context.Background()
	var batch []Entry
	for i := range 20 {
		size := 300
		if i == 7 {
			size = 1900 // with its id, more than a pack holds: alone
		}
		data := []byte(fmt.Sprintf("%d:%s", i, strings.Repeat("x", size)))
		batch = append(batch, Entry{Subject: "nimbus.events.app.t", MsgID: fmt.Sprint("big", i), Data: data})
	}
	acks, err := l.Append(ctx, batch...)
	if err != nil {
		t.Fatal(err)
	}
	msgs := readMessages(t, s.JetStream(), l.Stream())
	if len(msgs) < 4 {
		t.Fatalf("%d messages for 20 entries of 300 bytes and one of 1900 in messages of at most ~2 KiB", len(msgs))
	}
	for _, m := range msgs {
		if n := len(m.Data()); n > 2048 {
			t.Errorf("a message of %d bytes, over the log's largest entry", n)
		}
	}
	if acks[7].Index != 0 || readMessageHeader(t, msgs, acks[7].Seq).Get(HeaderPack) != "" {
		t.Errorf("the large entry was packed: %+v", acks[7])
	}
	got := map[uint64][]byte{}
	for _, e := range readAll(t, s.JetStream(), l.Stream()) {
		got[e.Pos()] = e.Data()
	}
	for i, a := range acks {
		if string(got[posOf(a)]) != string(batch[i].Data) {
			t.Errorf("entry %d acked at %+v, which holds %.20q", i, a, got[posOf(a)])
		}
	}
}

func readMessageHeader(t *testing.T, msgs []jetstream.Msg, seq uint64) nats.Header {
	t.Helper()
	for _, m := range msgs {
		if md, _ := m.Metadata(); md != nil && md.Sequence.Stream == seq {
			return m.Headers()
		}
	}
	t.Fatalf("no message %d", seq)
	return nil
}

// TestLogsOfManyNodesShareAStream is what docs/events.md says of a
// cluster, where each node's Log keeps its own index of ids: a batch sent
// again as it was through another node's Log is caught (the pack's
// Nats-Msg-Id, checked by the stream), but an id sent again inside a
// different batch through another node's Log is stored twice.
func TestLogsOfManyNodesShareAStream(t *testing.T) {
	t.Parallel()
	a, s := openLog(t, LogConfig{})
	ctx := context.Background()
	other := func() *Log {
		l, err := OpenLog(ctx, s.JetStream(), LogConfig{Logger: testLogger()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close(ctx) })
		return l
	}
	// The other nodes run already (a Log reads the window's ids back when
	// it opens, so one opened later would know them).
	b, c := other(), other()
	batch := []Entry{
		{Subject: "nimbus.events.app.t", MsgID: "x1", Data: []byte("1")},
		{Subject: "nimbus.events.app.t", MsgID: "x2", Data: []byte("2")},
	}
	first, err := a.Append(ctx, batch...)
	if err != nil {
		t.Fatal(err)
	}
	again, err := b.Append(ctx, batch...)
	if err != nil {
		t.Fatal(err)
	}
	for i := range again {
		if !again[i].Duplicate || posOf(again[i]) != posOf(first[i]) {
			t.Fatalf("the same batch through another log: %+v, first %+v", again, first)
		}
	}
	mixed, err := c.Append(ctx, batch[1], Entry{Subject: "nimbus.events.app.t", MsgID: "x3", Data: []byte("3")})
	if err != nil {
		t.Fatal(err)
	}
	if mixed[0].Duplicate {
		t.Fatalf("x2 in another batch through another log was caught: %+v (docs/events.md says it is not: update them)", mixed)
	}
	if n := len(readAll(t, s.JetStream(), a.Stream())); n != 4 {
		t.Fatalf("%d entries stored, want 4 (x1, x2, and x2 again with x3)", n)
	}
}

// TestGatheredCommitFitsTheBatchLimit: concurrent callers on many
// subjects (a write each) are gathered into commits of at most MaxBatch
// writes, which the commit path refuses beyond.
func TestGatheredCommitFitsTheBatchLimit(t *testing.T) {
	t.Parallel()
	l, s := openLog(t, LogConfig{MaxBatch: 10})
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range 40 {
		wg.Go(func() {
			for i := range 10 {
				id := fmt.Sprint(g, ".", i)
				if _, err := l.Append(ctx, Entry{Subject: fmt.Sprint("nimbus.events.app.t", g), MsgID: id, Data: []byte(id)}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := len(readAll(t, s.JetStream(), l.Stream())); n != 400 {
		t.Fatalf("%d entries stored, want 400", n)
	}
	if st := l.Stats(); st.MaxBatch > 10 {
		t.Fatalf("a commit of %d writes, over MaxBatch 10", st.MaxBatch)
	}
}
