package guestlog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbus-dev/nimbus/internal/store"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func openStore(t *testing.T) *store.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := store.Open(ctx, store.Options{DataDir: t.TempDir(), Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func closeWriter(t *testing.T, w *Writer) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func readAll(t *testing.T, js jetstream.JetStream, q Query) []Entry {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []Entry
	if err := Read(ctx, js, q, func(e Entry) error { out = append(out, e); return nil }); err != nil {
		t.Fatalf("Read(%+v): %v", q, err)
	}
	return out
}

func messages(es []Entry) string {
	var m []string
	for _, e := range es {
		m = append(m, e.Message)
	}
	return strings.Join(m, ",")
}

func TestWriteAndRead(t *testing.T) {
	s := openStore(t)
	js := s.JetStream()
	w := NewWriter(js, quiet())
	api := w.Sink("shop", "api", "rev1", "inv1")
	web := w.Sink("shop", "web", "rev2", "inv2")
	other := w.Sink("shopping", "api", "rev3", "inv3")
	api.Log("stdout", "", []byte("a1\n"))
	web.Log("stderr", "", []byte("w1\r\n"))
	other.Log("stdout", "", []byte("not mine"))
	buf := []byte("a2")
	api.Log("log", "warn", buf)
	buf[0] = 'X' // the sink copied the line
	web.Log("log", "info", []byte("w2"))
	closeWriter(t, w)
	if n := w.Dropped(); n != 0 {
		t.Fatalf("Dropped = %d", n)
	}

	all := readAll(t, js, Query{App: "shop"})
	if got := messages(all); got != "a1,w1,a2,w2" {
		t.Fatalf("all = %q, want a1,w1,a2,w2", got)
	}
	e := all[2]
	if e.App != "shop" || e.Function != "api" || e.Revision != "rev1" || e.Invocation != "inv1" ||
		e.Stream != "log" || e.Level != "warn" || e.Time.IsZero() || e.Seq == 0 {
		t.Errorf("entry = %+v", e)
	}
	for i := 1; i < len(all); i++ {
		if all[i].Seq <= all[i-1].Seq || all[i].Time.Before(all[i-1].Time) {
			t.Errorf("entries out of order: %+v then %+v", all[i-1], all[i])
		}
	}

	tests := []struct {
		name string
		q    Query
		want string
	}{
		{"one function", Query{App: "shop", Function: "web"}, "w1,w2"},
		{"limit keeps the last", Query{App: "shop", Limit: 3}, "w1,a2,w2"},
		{"limit over count", Query{App: "shop", Limit: 10}, "a1,w1,a2,w2"},
		{"limit and function", Query{App: "shop", Function: "api", Limit: 1}, "a2"},
		{"other app", Query{App: "shopping"}, "not mine"},
		{"unknown app", Query{App: "nope"}, ""},
		{"unknown function", Query{App: "shop", Function: "nope"}, ""},
		{"since the future", Query{App: "shop", Since: time.Now().Add(time.Hour)}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := messages(readAll(t, js, tt.q)); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}

	if err := Read(context.Background(), js, Query{}, func(Entry) error { return nil }); err == nil {
		t.Error("Read without app succeeded")
	}
	stopErr := errors.New("stop")
	n := 0
	err := Read(context.Background(), js, Query{App: "shop"}, func(Entry) error { n++; return stopErr })
	if !errors.Is(err, stopErr) || n != 1 {
		t.Errorf("Read with failing fn: %v after %d calls", err, n)
	}
}

// A tagged sink's lines carry what its tag says as each is written; a
// Query's Run keeps one run's lines, and its Limit counts those.
func TestTaggedSinkAndRunFilter(t *testing.T) {
	s := openStore(t)
	js := s.JetStream()
	w := NewWriter(js, quiet())
	var step *Step
	tag := func(run string) func(*Entry) {
		return func(e *Entry) { e.Run, e.Step = run, step }
	}
	a := w.TaggedSink("shop", "wf", "rev1", "act-a", tag("run-a"))
	b := w.TaggedSink("shop", "wf", "rev1", "act-b", tag("run-b"))
	a.Log("stdout", "", []byte("a-body"))
	step = &Step{Name: "charge", Position: 0, Attempt: 2}
	a.Log("stderr", "", []byte("a-step"))
	b.Log("log", "info", []byte("b-step"))
	step = nil
	a.Log("stdout", "", []byte("a-after"))
	w.Sink("shop", "fn", "rev2", "inv").Log("stdout", "", []byte("untagged"))
	closeWriter(t, w)

	all := readAll(t, js, Query{App: "shop"})
	if got := messages(all); got != "a-body,a-step,b-step,a-after,untagged" {
		t.Fatalf("all = %q", got)
	}
	if e := all[1]; e.Run != "run-a" || e.Step == nil || *e.Step != (Step{Name: "charge", Position: 0, Attempt: 2}) {
		t.Errorf("a line in a step: %+v", e)
	}
	if e := all[0]; e.Run != "run-a" || e.Step != nil {
		t.Errorf("a line outside steps: %+v", e)
	}
	if e := all[4]; e.Run != "" || e.Step != nil {
		t.Errorf("an untagged line: %+v", e)
	}
	for q, want := range map[Query]string{
		{App: "shop", Run: "run-a"}:           "a-body,a-step,a-after",
		{App: "shop", Run: "run-a", Limit: 2}: "a-step,a-after",
		{App: "shop", Run: "run-b"}:           "b-step",
		{App: "shop", Run: "nope"}:            "",
	} {
		if got := messages(readAll(t, js, q)); got != want {
			t.Errorf("%+v: %q, want %q", q, got, want)
		}
	}
}

func TestSince(t *testing.T) {
	s := openStore(t)
	js := s.JetStream()
	w1 := NewWriter(js, quiet())
	w1.Sink("app", "f", "r", "i").Log("stdout", "", []byte("old"))
	closeWriter(t, w1) // acknowledged: stored before cut
	cut := time.Now()
	w2 := NewWriter(js, quiet())
	w2.Sink("app", "f", "r", "i").Log("stdout", "", []byte("new"))
	closeWriter(t, w2)

	if got := messages(readAll(t, js, Query{App: "app", Since: cut})); got != "new" {
		t.Fatalf("since cut = %q, want new", got)
	}
	if got := messages(readAll(t, js, Query{App: "app", Since: cut.Add(-time.Hour)})); got != "old,new" {
		t.Fatalf("since an hour ago = %q, want old,new", got)
	}
}

func TestFollow(t *testing.T) {
	s := openStore(t)
	js := s.JetStream()
	w := NewWriter(js, quiet())
	defer closeWriter(t, w)
	sink := w.Sink("app", "f", "r", "i")
	sink.Log("stdout", "", []byte("before"))
	w.Sink("app", "other", "r", "i").Log("stdout", "", []byte("filtered out"))

	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan Entry, 16)
	done := make(chan error, 1)
	go func() {
		done <- Read(ctx, js, Query{App: "app", Function: "f", Follow: true}, func(e Entry) error {
			got <- e
			return nil
		})
	}()
	next := func(want string) {
		t.Helper()
		select {
		case e := <-got:
			if e.Message != want {
				t.Fatalf("followed %q, want %q", e.Message, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no entry %q within 10s", want)
		}
	}
	next("before") // the read is running now
	sink.Log("stdout", "", []byte("after"))
	next("after")
	sink.Log("log", "error", []byte("later"))
	next("later")

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Read with Follow returned %v after cancel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Read with Follow did not return after cancel")
	}
}

func TestFollowEmptyWithLimit(t *testing.T) {
	s := openStore(t)
	js := s.JetStream()
	w := NewWriter(js, quiet())
	defer closeWriter(t, w)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan Entry, 16)
	go func() {
		_ = Read(ctx, js, Query{App: "app", Limit: 5, Follow: true}, func(e Entry) error { got <- e; return nil })
	}()
	// Nothing is stored yet; whatever is written now must come through,
	// whether the consumer saw it as backlog or as new.
	w.Sink("app", "f", "r", "i").Log("stdout", "", []byte("first"))
	select {
	case e := <-got:
		if e.Message != "first" {
			t.Fatalf("got %q", e.Message)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no entry within 10s")
	}
}

func TestTruncation(t *testing.T) {
	long := strings.Repeat("x", MaxLineBytes+100)
	// A 3-byte rune straddling the cut.
	straddle := strings.Repeat("y", MaxLineBytes-1) + "€" + "tail"
	tests := []struct {
		name, in, want string
	}{
		{"short", "hello\n", "hello"},
		{"crlf", "hello\r\n", "hello"},
		{"only one newline trimmed", "a\n\n", "a\n"},
		{"empty", "", ""},
		{"exactly the cap", strings.Repeat("z", MaxLineBytes), strings.Repeat("z", MaxLineBytes)},
		{"over the cap", long, strings.Repeat("x", MaxLineBytes) + "… [truncated 100 bytes]"},
		{"cut at a rune boundary", straddle, strings.Repeat("y", MaxLineBytes-1) + "… [truncated 7 bytes]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := capLine([]byte(tt.in)); got != tt.want {
				t.Fatalf("capLine = %.40q... (len %d), want %.40q... (len %d)", got, len(got), tt.want, len(tt.want))
			}
		})
	}

	s := openStore(t)
	w := NewWriter(s.JetStream(), quiet())
	w.Sink("app", "f", "r", "i").Log("stdout", "", []byte(long))
	closeWriter(t, w)
	es := readAll(t, s.JetStream(), Query{App: "app"})
	if len(es) != 1 || !strings.HasSuffix(es[0].Message, "[truncated 100 bytes]") || len(es[0].Message) > MaxLineBytes+64 {
		t.Fatalf("stored entries = %d, message len %d", len(es), len(es[0].Message))
	}
}

func FuzzCapLine(f *testing.F) {
	f.Add([]byte("hello\n"))
	f.Add([]byte(strings.Repeat("€", MaxLineBytes)))
	f.Fuzz(func(t *testing.T, line []byte) {
		got := capLine(line)
		if len(got) > MaxLineBytes+64 {
			t.Fatalf("capLine returned %d bytes", len(got))
		}
		if utf8.Valid(line) && !utf8.ValidString(got) {
			t.Fatalf("capLine broke valid UTF-8: %q", got)
		}
	})
}

func TestConcurrentSinks(t *testing.T) {
	s := openStore(t)
	js := s.JetStream()
	w := NewWriter(js, quiet())
	const workers, each = 8, 200
	var wg sync.WaitGroup
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sink := w.Sink("app", fmt.Sprintf("f%d", g), "r", fmt.Sprintf("inv%d", g))
			for i := range each {
				sink.Log("stdout", "", []byte(fmt.Sprintf("%d-%d", g, i)))
			}
		}()
	}
	wg.Wait()
	closeWriter(t, w)
	if d := w.Dropped(); d != 0 {
		t.Fatalf("Dropped = %d with a buffer larger than the load", d)
	}
	es := readAll(t, js, Query{App: "app"})
	if len(es) != workers*each {
		t.Fatalf("read %d entries, want %d", len(es), workers*each)
	}
	// Per function, lines keep the order they were written in.
	next := map[string]int{}
	for _, e := range es {
		want := fmt.Sprintf("%s-%d", strings.TrimPrefix(e.Function, "f"), next[e.Function])
		if e.Message != want {
			t.Fatalf("function %s: got %q, want %q", e.Function, e.Message, want)
		}
		next[e.Function]++
	}
}

func TestDrops(t *testing.T) {
	// A writer whose publisher is not running: the buffer fills and Log
	// drops instead of blocking.
	w := &Writer{cfg: Config{}.withDefaults(), logger: quiet(), lines: make(chan Entry, 2), done: make(chan struct{}), apps: map[string]*appState{}}
	sink := w.Sink("app", "f", "r", "i")
	for range 5 {
		sink.Log("stdout", "", []byte("x"))
	}
	if got := w.Dropped(); got != 3 {
		t.Fatalf("Dropped = %d, want 3", got)
	}

	// After Close, lines are dropped too.
	s := openStore(t)
	w2 := NewWriter(s.JetStream(), quiet())
	closeWriter(t, w2)
	w2.Sink("app", "f", "r", "i").Log("stdout", "", []byte("late"))
	if got := w2.Dropped(); got != 1 {
		t.Fatalf("Dropped after Close = %d, want 1", got)
	}
	closeWriter(t, w2) // Close twice is fine
}

func TestRawMessage(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	if _, err := s.JetStream().CreateStream(ctx, streamConfig("app", Config{}.withDefaults())); err != nil {
		t.Fatal(err)
	}
	if _, err := s.JetStream().Publish(ctx, "nimbus.applogs.app.f", []byte("plain text")); err != nil {
		t.Fatal(err)
	}
	es := readAll(t, s.JetStream(), Query{App: "app"})
	if len(es) != 1 || es[0].Message != "plain text" || es[0].App != "app" || es[0].Function != "f" || es[0].Time.IsZero() {
		t.Fatalf("entries = %+v", es)
	}
}

func TestSubject(t *testing.T) {
	tests := []struct{ app, fn, want string }{
		{"shop", "api", "nimbus.applogs.shop.api"},
		{"a.b", "c*", "nimbus.applogs.a_b.c_"},
		{"", "x y>", "nimbus.applogs._.x_y_"},
	}
	for _, tt := range tests {
		if got := Subject(tt.app, tt.fn); got != tt.want {
			t.Errorf("Subject(%q, %q) = %q, want %q", tt.app, tt.fn, got, tt.want)
		}
	}
	streams := []struct{ app, want string }{
		{"shop-2", "NIMBUS_LOGS_shop-2"},
		{"a.b/c", "NIMBUS_LOGS_a_b_c"},
		{"", "NIMBUS_LOGS__"},
	}
	for _, tt := range streams {
		if got := StreamName(tt.app); got != tt.want {
			t.Errorf("StreamName(%q) = %q, want %q", tt.app, got, tt.want)
		}
	}
}

// countDrops counts dropped lines by reason.
type countDrops struct {
	mu sync.Mutex
	by map[string]int
}

func (c *countDrops) GuestLogDropped(_, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.by[reason]++
}

// TestDiskFullDropsLines: while the store says the disk is full, lines are
// dropped (counted as disk_full) and nothing reaches the logs stream; once
// it has room again, lines are stored.
func TestDiskFullDropsLines(t *testing.T) {
	s := openStore(t)
	var full atomic.Bool
	full.Store(true)
	drops := &countDrops{by: map[string]int{}}
	w := New(s.JetStream(), Config{Logger: quiet(), Metrics: drops, CheckSpace: func() error {
		if full.Load() {
			return store.ErrDiskFull
		}
		return nil
	}})
	sink := w.Sink("shop", "api", "rev1", "inv1")
	sink.Log("stdout", "", []byte("lost"))
	waitUntil(t, func() bool { return w.Dropped() == 1 })
	full.Store(false)
	sink.Log("stdout", "", []byte("kept"))
	closeWriter(t, w)
	if got := messages(readAll(t, s.JetStream(), Query{App: "shop"})); got != "kept" {
		t.Fatalf("stored %q, want only the line written with room", got)
	}
	if drops.by[ReasonDiskFull] != 1 || w.Dropped() != 1 {
		t.Fatalf("drops %v (total %d), want one disk_full", drops.by, w.Dropped())
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
	}
}
