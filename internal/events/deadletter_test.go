package events_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbus-dev/nimbus/internal/events"
	"github.com/nimbus-dev/nimbus/internal/runtime"
)

// gate wraps an invoker: functions marked down answer 503 without running,
// the way a function with a bug (or a dependency down) fails every delivery
// until it is fixed.
type gate struct {
	inv  events.Invoker
	mu   sync.Mutex
	down map[string]bool
}

func (g *gate) set(fn string, down bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.down[fn] = down
}

func (g *gate) Invoke(ctx context.Context, app, fn string, req *runtime.Request) (*runtime.Response, error) {
	g.mu.Lock()
	down := g.down[fn]
	g.mu.Unlock()
	if down {
		return &runtime.Response{Status: 503, Body: []byte(fn + " is down")}, nil
	}
	return g.inv.Invoke(ctx, app, fn, req)
}

// newGatedEnv is newEnv with a gate in front of the functions.
func newGatedEnv(t *testing.T, fns ...string) (*env, *gate) {
	t.Helper()
	g := &gate{down: map[string]bool{}}
	e := &env{t: t, dir: t.TempDir(), opts: events.DispatcherOptions{}, fns: fns}
	e.open(func(inv events.Invoker) events.Invoker { g.inv = inv; return g })
	t.Cleanup(e.close)
	return e, g
}

func ctx30(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// deadLetters lists every dead letter of the test app, oldest first.
func deadLetters(t *testing.T, e *env, topics ...string) []events.DeadLetter {
	t.Helper()
	page, err := e.disp.DeadLetters(ctx30(t), testApp, events.DeadLetterQuery{Topics: topics, Limit: events.MaxDeadLetterPage})
	if err != nil {
		t.Fatal(err)
	}
	if page.Next != 0 {
		t.Fatalf("more than %d dead letters", events.MaxDeadLetterPage)
	}
	return page.Letters
}

// waitDeadLetters waits until the app has n dead letters and returns them.
func waitDeadLetters(t *testing.T, e *env, n int, topics ...string) []events.DeadLetter {
	t.Helper()
	var got []events.DeadLetter
	waitFor(t, "dead letters", func() error {
		got = deadLetters(t, e, topics...)
		if len(got) != n {
			return fmt.Errorf("%d dead letters, want %d", len(got), n)
		}
		return nil
	})
	return got
}

// calls returns the recorded calls of fn for event id.
func (e *env) calls(fn, id string) []call {
	var out []call
	for _, c := range e.rec.snapshot() {
		if c.fn == fn && c.id == id {
			out = append(out, c)
		}
	}
	return out
}

// appended counts the entries stored on subject.
func appended(t *testing.T, e *env, subject string) uint64 {
	t.Helper()
	st, err := e.st.JetStream().Stream(ctx30(t), e.log.Stream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx30(t), jetstream.WithSubjectFilter(subject))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subject]
}

// TestReplayGoesToTheFailedTriggerOnly: a function fails every delivery,
// its events go to the dead-letter topic, the function is fixed, the dead
// letters are replayed: each runs once more on that function alone (not on
// the other subscriber of the topic), with fresh attempts, and leaves the
// dead-letter topic. It holds for topic triggers and for the internal topics
// of cron and bucket triggers alike.
func TestReplayGoesToTheFailedTriggerOnly(t *testing.T) {
	t.Parallel()
	for _, topic := range []string{"orders", events.CronTopic("a", "tick"), "_kv_counts"} {
		t.Run(topic, func(t *testing.T) {
			e, g := newGatedEnv(t, "a", "b")
			failing := spec("a", "t0", topic)
			failing.MaxAttempts = 2
			other := spec("b", "t0", topic)
			e.sync(failing, other)
			g.set("a", true)
			e.publish(topic, event("p0", "ok", "eu/1", "traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"), event("p1", "ok", "eu/2"))
			e.waitSucceeded([]string{"b/p0", "b/p1"})

			dls := waitDeadLetters(t, e, 2)
			// The two failed concurrently: their dead letters are in either order.
			slices.SortFunc(dls, func(a, b events.DeadLetter) int { return strings.Compare(a.Event.ID, b.Event.ID) })
			for i, dl := range dls {
				id := fmt.Sprint("p", i)
				if dl.Event == nil || dl.Event.ID != id || string(dl.Event.Data) != `{"id":"`+id+`"}` {
					t.Fatalf("dead letter %d: %+v, want event %s", i, dl, id)
				}
				if dl.Function != "a" || dl.Trigger != "t0" || dl.Topic != topic || dl.Attempts != 2 ||
					!strings.Contains(dl.Error, "a is down") || dl.DeadLetterTopic != events.DefaultDeadLetterTopic || dl.Seq == 0 || dl.Time.IsZero() {
					t.Fatalf("dead letter %d: %+v", i, dl)
				}
				for k := range dl.Event.Extensions {
					if strings.HasPrefix(k, "nimbus") {
						t.Fatalf("listed event keeps dead-letter extension %s", k)
					}
				}
				if dl.Event.Extensions["traceparent"] == "" && i == 0 {
					t.Fatal("listed event lost its traceparent")
				}
			}

			g.set("a", false) // the fix is deployed
			res := e.disp.Replay(ctx30(t), testApp, []uint64{dls[0].Seq}, events.ReplayOptions{})
			if len(res) != 1 || res[0].Err != nil || res[0].NewSeq == 0 || res[0].Duplicate || res[0].Function != "a" || res[0].Trigger != "t0" {
				t.Fatalf("replay: %+v", res)
			}
			e.waitSucceeded([]string{"a/p0"})
			// The replay is a new delivery: attempt 1, the dead-letter
			// extensions gone, the dead letter's sequence attached.
			c := e.calls("a", "p0")
			last := c[len(c)-1]
			if last.attempt != 1 || last.req.Header.Get("Ce-Nimbusreplayof") != fmt.Sprint(dls[0].Seq) ||
				last.req.Header.Get("Ce-Nimbuserror") != "" || last.req.Header.Get("Ce-Nimbusattempts") != "" {
				t.Fatalf("replayed request: attempt %d, headers %v", last.attempt, last.req.Header)
			}
			if last.req.Header.Get("Ce-Traceparent") == "" {
				t.Fatal("replayed event lost its trace context")
			}

			// b never sees the replay: a later event reaches b, and b ran
			// p0 once, through its consumer's original delivery only.
			e.publish(topic, event("after", "ok", ""))
			e.waitSucceeded([]string{"a/after", "b/after"})
			if n := len(e.calls("b", "p0")); n != 1 {
				t.Fatalf("the other trigger ran p0 %d times, want once", n)
			}
			bc, err := e.st.JetStream().Consumer(ctx30(t), e.log.Stream(), events.ConsumerNameForTest(other))
			if err != nil {
				t.Fatal(err)
			}
			if info := bc.CachedInfo(); info.Delivered.Consumer != 2 {
				t.Fatalf("the other trigger's consumer delivered %d messages, want 2 (the pack of p0 and p1, after)", info.Delivered.Consumer)
			}

			// The replayed dead letter is gone; the other one is still there.
			if got := deadLetters(t, e); len(got) != 1 || got[0].Seq != dls[1].Seq {
				t.Fatalf("dead letters after replay: %+v", got)
			}
			// Again: nothing left to replay, nothing appended.
			res = e.disp.Replay(ctx30(t), testApp, []uint64{dls[0].Seq}, events.ReplayOptions{})
			if len(res) != 1 || !errors.Is(res[0].Err, events.ErrDeadLetterNotFound) {
				t.Fatalf("second replay of %d: %+v", dls[0].Seq, res)
			}

			// All: the rest.
			res, err = e.disp.ReplayAll(ctx30(t), testApp, nil, events.ReplayOptions{})
			if err != nil || len(res) != 1 || res[0].Seq != dls[1].Seq || res[0].Err != nil {
				t.Fatalf("replay all: %+v, %v", res, err)
			}
			e.waitSucceeded([]string{"a/p1"})
			if got := deadLetters(t, e); len(got) != 0 {
				t.Fatalf("dead letters after replaying all: %+v", got)
			}
			for _, id := range []string{"p0", "p1"} {
				ok := 0
				for _, c := range e.calls("a", id) {
					if c.ok() {
						ok++
					}
				}
				if ok != 1 {
					t.Fatalf("a/%s succeeded %d times, want once", id, ok)
				}
			}
		})
	}
}

// TestReplayAppendsOnce: a replay that appended its event but crashed
// before removing the dead letter is retried; the retry finds the event in
// the duplicate window and does not append it again. Concurrent replays of
// one dead letter append it once too.
func TestReplayAppendsOnce(t *testing.T) {
	t.Parallel()
	e, g := newGatedEnv(t, "a")
	s := spec("a", "t0", "orders")
	s.MaxAttempts = 1
	e.sync(s)
	g.set("a", true)
	e.publish("orders", event("x", "ok", ""), event("y", "ok", ""))
	dls := waitDeadLetters(t, e, 2)
	g.set("a", false)
	replaySubj := events.ReplaySubject(events.DefaultSubjectPrefix, testApp, events.ConsumerNameForTest(s))

	// A replay that crashed after its append.
	ent, err := e.disp.ReplayEntryForTest(ctx30(t), testApp, dls[0].Seq)
	if err != nil {
		t.Fatal(err)
	}
	if ent.MsgID == events.EventEntry(testApp, "orders", dls[0].Event).MsgID {
		t.Fatal("the replay has the original event's MsgID: the duplicate window would swallow it")
	}
	acks, err := e.log.Append(ctx30(t), ent)
	if err != nil {
		t.Fatal(err)
	}
	res := e.disp.Replay(ctx30(t), testApp, []uint64{dls[0].Seq}, events.ReplayOptions{})
	if len(res) != 1 || res[0].Err != nil || !res[0].Duplicate || res[0].NewSeq != acks[0].Seq {
		t.Fatalf("retried replay: %+v, want a duplicate of %d", res, acks[0].Seq)
	}

	// Concurrent replays of the other one.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var all []events.ReplayResult
	for range 4 {
		wg.Go(func() {
			r := e.disp.Replay(context.Background(), testApp, []uint64{dls[1].Seq, dls[1].Seq}, events.ReplayOptions{})
			mu.Lock()
			all = append(all, r...)
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(all) != 4 {
		t.Fatalf("%d results for 4 calls of one distinct sequence", len(all))
	}
	for _, r := range all {
		if r.Err != nil && !errors.Is(r.Err, events.ErrDeadLetterNotFound) {
			t.Fatalf("concurrent replay: %+v", r)
		}
	}
	e.waitSucceeded([]string{"a/x", "a/y"})
	if n := appended(t, e, replaySubj); n != 2 {
		t.Fatalf("%d entries on the replay subject, want 2 (one per dead letter)", n)
	}
	if got := deadLetters(t, e); len(got) != 0 {
		t.Fatalf("dead letters left: %+v", got)
	}
}

// TestReplayWhenTheTriggerIsGone: a dead letter of a trigger that a later
// deploy removed cannot go back to it; it can go to a topic instead, where
// every trigger of that topic gets it.
func TestReplayWhenTheTriggerIsGone(t *testing.T) {
	t.Parallel()
	e, g := newGatedEnv(t, "a", "b")
	s := spec("a", "t0", "orders")
	s.MaxAttempts = 1
	s.DeadLetter = "failed" // a topic of the app that also takes ordinary events
	e.sync(s)
	g.set("a", true)
	e.publish("orders", event("x", "ok", ""))
	e.publish("failed", event("ordinary", "ok", "")) // published by someone: not a dead letter
	dls := waitDeadLetters(t, e, 1, events.DefaultDeadLetterTopic, "failed")
	if dls[0].DeadLetterTopic != "failed" || dls[0].Event.ID != "x" {
		t.Fatalf("dead letter %+v", dls[0])
	}
	if got := deadLetters(t, e); len(got) != 0 {
		t.Fatalf("dead-letter topic has %+v, want nothing (a's dead letters go to failed)", got)
	}

	e.sync(spec("b", "t0", "orders")) // a new revision: a's trigger removed, b subscribes
	res := e.disp.Replay(ctx30(t), testApp, []uint64{dls[0].Seq}, events.ReplayOptions{})
	var gone *events.TriggerGoneError
	if len(res) != 1 || !errors.As(res[0].Err, &gone) || gone.Function != "a" || gone.Trigger != "t0" || gone.Topic != "orders" {
		t.Fatalf("replay to a removed trigger: %+v", res)
	}
	if !strings.Contains(res[0].Err.Error(), `"t0"`) || !strings.Contains(res[0].Err.Error(), "function a") {
		t.Fatalf("error does not name the trigger: %v", res[0].Err)
	}
	if got := deadLetters(t, e, "failed"); len(got) != 1 {
		t.Fatal("a failed replay removed the dead letter")
	}
	res = e.disp.Replay(ctx30(t), testApp, []uint64{dls[0].Seq}, events.ReplayOptions{Topic: "orders"})
	if len(res) != 1 || res[0].Err != nil {
		t.Fatalf("replay to a topic: %+v", res)
	}
	e.waitSucceeded([]string{"b/x"})
	if c := e.calls("b", "x"); c[0].req.Header.Get("Ce-Nimbusreplayof") != fmt.Sprint(dls[0].Seq) {
		t.Fatalf("replayed to topic without %s", events.ExtReplayOf)
	}
	if got := deadLetters(t, e, "failed"); len(got) != 0 {
		t.Fatalf("dead letters left: %+v", got)
	}

	// Entries that are not dead letters of the app are refused.
	ordinary := appendedSeq(t, e, "failed")
	for _, seq := range []uint64{ordinary, 1 << 40} {
		res = e.disp.Replay(ctx30(t), testApp, []uint64{seq}, events.ReplayOptions{})
		if len(res) != 1 || res[0].Err == nil {
			t.Fatalf("replay of entry %d: %+v", seq, res)
		}
	}
	if res := e.disp.Replay(ctx30(t), "other", []uint64{dls[0].Seq}, events.ReplayOptions{}); !errors.Is(res[0].Err, events.ErrNotDeadLetter) && !errors.Is(res[0].Err, events.ErrDeadLetterNotFound) {
		t.Fatalf("replay through another app: %+v", res)
	}
}

// appendedSeq is the sequence of the last entry on topic.
func appendedSeq(t *testing.T, e *env, topic string) uint64 {
	t.Helper()
	st, err := e.st.JetStream().Stream(ctx30(t), e.log.Stream())
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetLastMsgForSubject(ctx30(t), events.SubjectFor(events.DefaultSubjectPrefix, testApp, topic))
	if err != nil {
		t.Fatal(err)
	}
	return m.Sequence
}

// TestDeadLetterPages: pages by sequence, oldest or newest first, with
// a cursor; an entry that is not a CloudEvent is listed but not replayed.
func TestDeadLetterPages(t *testing.T) {
	t.Parallel()
	e, g := newGatedEnv(t, "a")
	s := spec("a", "t0", "orders")
	s.MaxAttempts = 1
	e.sync(s)
	g.set("a", true)
	const n = 7
	for i := range n {
		e.publish("orders", event(fmt.Sprint("e", i), "ok", ""))
		// Unrelated traffic between them, so sequences have gaps.
		e.publish("other", event(fmt.Sprint("o", i), "ok", ""))
	}
	all := waitDeadLetters(t, e, n)
	read := func(newest bool, limit int) []string {
		var ids []string
		var after uint64
		for range 2 * n {
			page, err := e.disp.DeadLetters(ctx30(t), testApp, events.DeadLetterQuery{Newest: newest, After: after, Limit: limit})
			if err != nil {
				t.Fatal(err)
			}
			if len(page.Letters) > limit {
				t.Fatalf("page of %d, limit %d", len(page.Letters), limit)
			}
			for _, dl := range page.Letters {
				ids = append(ids, dl.Event.ID)
			}
			if page.Next == 0 {
				return ids
			}
			after = page.Next
		}
		t.Fatal("paging did not end")
		return nil
	}
	// Deliveries run concurrently, so the dead letters are in any order;
	// all (one page) is stream order.
	var want []string
	for _, dl := range all {
		want = append(want, dl.Event.ID)
	}
	for _, limit := range []int{1, 3, n, 100} {
		if got := read(false, limit); !slices.Equal(got, want) {
			t.Fatalf("oldest first by %d: %v", limit, got)
		}
		rev := slices.Clone(want)
		slices.Reverse(rev)
		if got := read(true, limit); !slices.Equal(got, rev) {
			t.Fatalf("newest first by %d: %v", limit, got)
		}
	}
	for i := 1; i < len(all); i++ {
		if all[i].Seq <= all[i-1].Seq {
			t.Fatalf("not in stream order: %d after %d", all[i].Seq, all[i-1].Seq)
		}
	}

	// A malformed entry is dead-lettered as it is: listed, not replayable.
	if _, err := e.log.Append(ctx30(t), events.Entry{Subject: events.SubjectFor(events.DefaultSubjectPrefix, testApp, "orders"), Data: []byte("not json")}); err != nil {
		t.Fatal(err)
	}
	dls := waitDeadLetters(t, e, n+1)
	bad := dls[n]
	if bad.Event != nil || string(bad.Raw) != "not json" || bad.Function != "a" {
		t.Fatalf("malformed dead letter %+v", bad)
	}
	g.set("a", false)
	res := e.disp.Replay(ctx30(t), testApp, []uint64{bad.Seq}, events.ReplayOptions{})
	if !errors.Is(res[0].Err, events.ErrNotReplayable) {
		t.Fatalf("replay of a malformed entry: %+v", res)
	}
}

// TestConsumerUpgradeKeepsItsPlace: a trigger consumer created by an
// earlier Nimbus (one FilterSubject, no replay subject) is updated in place
// by Sync and resumes where it was: events it acknowledged are not
// delivered again, and it takes replays.
func TestConsumerUpgradeKeepsItsPlace(t *testing.T) {
	t.Parallel()
	e := newEnv(t, events.DispatcherOptions{}, "a")
	s := spec("a", "t0", "orders")
	name := events.ConsumerNameForTest(s)
	topicSubj := events.SubjectFor(events.DefaultSubjectPrefix, testApp, "orders")
	js := e.st.JetStream()
	// The consumer as the dispatcher made it before replay existed.
	cons, err := js.CreateOrUpdateConsumer(ctx30(t), e.log.Stream(), jetstream.ConsumerConfig{
		Durable: name, FilterSubject: topicSubj, DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second, MaxDeliver: -1, MaxAckPending: 1000,
		Metadata: map[string]string{"nimbus.app": testApp, "nimbus.function": "a", "nimbus.trigger": "t0", "nimbus.topic": "orders"},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.publish("orders", event("old0", "ok", ""))
	e.publish("orders", event("old1", "ok", ""))
	batch, err := cons.Fetch(2, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for m := range batch.Messages() {
		if err := m.DoubleAck(ctx30(t)); err != nil {
			t.Fatal(err)
		}
		got++
	}
	if got != 2 {
		t.Fatalf("old consumer fetched %d", got)
	}
	e.publish("orders", event("new0", "ok", ""))

	e.sync(s) // the upgraded dispatcher
	info, err := js.Consumer(ctx30(t), e.log.Stream(), name)
	if err != nil {
		t.Fatal(err)
	}
	cfg := info.CachedInfo().Config
	if cfg.FilterSubject != "" || !slices.Equal(cfg.FilterSubjects, []string{topicSubj, events.ReplaySubject(events.DefaultSubjectPrefix, testApp, name)}) {
		t.Fatalf("consumer filters after the update: %q %q", cfg.FilterSubject, cfg.FilterSubjects)
	}
	e.waitSucceeded([]string{"a/new0"})
	e.publish("orders", event("new1", "ok", ""))
	e.waitSucceeded([]string{"a/new1"})
	for _, c := range e.rec.snapshot() {
		if strings.HasPrefix(c.id, "old") {
			t.Fatalf("acknowledged event %s delivered again after the update", c.id)
		}
	}
}
