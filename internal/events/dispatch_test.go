package events_test

import (
	"context"
	"errors"
	"fmt"
	goruntime "runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbus-dev/nimbus/internal/events"
	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/telemetry"
)

// fast retries: the tests skip backoff time instead of spending it.
const tiny = time.Millisecond

func spec(fn, id, topic string) events.TriggerSpec {
	return events.TriggerSpec{App: testApp, Function: fn, ID: id, Topic: topic, Backoff: tiny, MaxBackoff: 4 * tiny}
}

func TestDeliverToEveryTrigger(t *testing.T) {
	t.Parallel()
	e := newEnv(t, events.DispatcherOptions{}, "a", "b")
	e.sync(spec("a", "0", "orders"), spec("b", "0", "orders"))
	const n = 40
	var evs []*cloudevents.Event
	for i := range n {
		evs = append(evs, event(fmt.Sprint("e", i), "ok", "eu/1", "traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"))
	}
	e.publish("orders", evs[:n/2]...)
	for _, ev := range evs[n/2:] {
		e.publish("orders", ev) // single-event appends too
	}
	e.publish("other", event("x", "ok", "")) // another topic: no trigger
	e.waitSucceeded(append(ids("a", "e", n), ids("b", "e", n)...))

	for _, c := range e.rec.snapshot() {
		if c.id == "x" {
			t.Fatalf("event of another topic delivered to %s", c.fn)
		}
	}
	// What the guest saw: binary mode, POST /, ce-* headers, data as body.
	c := e.rec.snapshot()[0]
	if c.req.Method != "POST" || c.req.Path != "/" {
		t.Fatalf("request %s %s, want POST /", c.req.Method, c.req.Path)
	}
	if want := `{"id":"` + c.id + `"}`; string(c.req.Body) != want {
		t.Fatalf("body %q, want %q", c.req.Body, want)
	}
	body := string(c.resp.Body)
	for _, want := range []string{"ce-id=" + c.id, "ce-source=/test", "ce-specversion=1.0", "ce-type=ok", "ce-subject=eu/1", "content-type=application/json"} {
		if !strings.Contains(body, want) {
			t.Fatalf("guest saw headers\n%s\nwithout %q", body, want)
		}
	}
	// Counters move just after the recorder sees the call: poll.
	waitFor(t, "dispatcher stats", func() error {
		if st := e.disp.Stats(); st.Delivered != 2*n || st.Failed != 0 {
			return fmt.Errorf("stats %+v, want %d delivered, none failed", st, 2*n)
		}
		return nil
	})
	// Every success left a delivery record (what saves a second run when
	// an ack is lost), in packs.
	waitFor(t, "delivery records", func() error {
		got, err := events.RecordedDeliveries(context.Background(), e.st.JetStream())
		if err != nil {
			return err
		}
		if got != 2*n {
			return fmt.Errorf("%d delivery records, want %d", got, 2*n)
		}
		return nil
	})
}

func TestFilter(t *testing.T) {
	t.Parallel()
	e := newEnv(t, events.DispatcherOptions{}, "a")
	s := spec("a", "eu-created", "orders")
	s.Filter = events.Filter{Type: "ok", Source: "/test", SubjectPrefix: "eu/"}
	e.sync(s)
	cases := []struct {
		ev    *cloudevents.Event
		match bool
	}{
		{event("m1", "ok", "eu/1"), true},
		{event("m2", "ok", "eu/"), true},
		{event("s1", "ok", "us/1"), false},
		{event("s2", "other", "eu/1"), false},
		{event("s3", "ok", ""), false},
		{func() *cloudevents.Event { ev := event("s4", "ok", "eu/1"); ev.Source = "/elsewhere"; return ev }(), false},
		{event("m3", "ok", "eu/2"), true},
	}
	var evs []*cloudevents.Event
	var want []string
	for _, c := range cases {
		evs = append(evs, c.ev)
		if c.match {
			want = append(want, "a/"+c.ev.ID)
		}
	}
	e.publish("orders", evs...)
	e.waitSucceeded(want)
	waitFor(t, "filtered", func() error {
		if st := e.disp.Stats(); st.Filtered != 4 {
			return fmt.Errorf("stats %+v, want 4 filtered", st)
		}
		return nil
	})
	for _, c := range e.rec.snapshot() {
		if !slices.Contains(want, "a/"+c.id) {
			t.Fatalf("event %s (type %s, subject %q) passed the filter", c.id, c.typ, c.subject)
		}
	}
}

func TestRetryThenSuccess(t *testing.T) {
	t.Parallel()
	e := newEnv(t, events.DispatcherOptions{}, "a")
	e.sync(spec("a", "0", "orders"))
	e.publish("orders", event("f", "flaky", "", "failtimes", "2"))
	e.waitSucceeded([]string{"a/f"})
	var attempts []int
	for _, c := range e.rec.snapshot() {
		attempts = append(attempts, c.attempt)
		if c.attempt < 3 && c.ok() {
			t.Fatalf("attempt %d succeeded", c.attempt)
		}
	}
	if !slices.Equal(attempts, []int{1, 2, 3}) {
		t.Fatalf("attempts %v, want [1 2 3]", attempts)
	}
	// Counters move just after the recorder sees the call: poll.
	waitFor(t, "dispatcher stats", func() error {
		if st := e.disp.Stats(); st.Delivered != 1 || st.Failed != 2 || st.DeadLettered != 0 {
			return fmt.Errorf("stats %+v", st)
		}
		return nil
	})
}

// readDeadLetters returns the events on the app's dead-letter topic.
func readDeadLetters(t *testing.T, e *env, want int) []*cloudevents.Event {
	t.Helper()
	var out []*cloudevents.Event
	waitFor(t, "dead letters", func() error {
		out = out[:0]
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := e.st.JetStream().OrderedConsumer(ctx, e.log.Stream(), jetstream.OrderedConsumerConfig{
			FilterSubjects: []string{events.SubjectFor(events.DefaultSubjectPrefix, testApp, events.DefaultDeadLetterTopic)},
		})
		if err != nil {
			return err
		}
		info, err := c.Info(ctx)
		if err != nil {
			return err
		}
		if int(info.NumPending) < want {
			return fmt.Errorf("%d dead letters, want %d", info.NumPending, want)
		}
		batch, err := c.Fetch(want, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return err
		}
		for m := range batch.Messages() {
			ev, err := events.DecodeEntry(m.Data())
			if err != nil {
				return err
			}
			if m.Headers().Get("Nimbus-Dead-Attempts") != ev.Extensions[events.ExtDeadAttempts] {
				return fmt.Errorf("header and extension disagree")
			}
			out = append(out, ev)
		}
		if len(out) != want {
			return fmt.Errorf("read %d dead letters, want %d", len(out), want)
		}
		return nil
	})
	return out
}

func TestPoisonGoesToDeadLetterWhileOthersFlow(t *testing.T) {
	t.Parallel()
	for _, ordered := range []bool{false, true} {
		t.Run(fmt.Sprint("ordered=", ordered), func(t *testing.T) {
			e := newEnv(t, events.DispatcherOptions{Concurrency: 4}, "a")
			s := spec("a", "0", "orders")
			s.MaxAttempts = 3
			if ordered {
				s.OrderingKey = "event.subject"
			}
			e.sync(s)
			evs := []*cloudevents.Event{event("poison", "fail", "k0")}
			for i := range 30 {
				evs = append(evs, event(fmt.Sprint("e", i), "ok", fmt.Sprint("k", 1+i%3)))
			}
			e.publish("orders", evs...)
			e.waitSucceeded(ids("a", "e", 30))
			dl := readDeadLetters(t, e, 1)[0]
			if dl.ID != "poison" || dl.Type != "fail" || string(dl.Data) != `{"id":"poison"}` {
				t.Fatalf("dead letter %+v is not the poison event", dl)
			}
			x := dl.Extensions
			if x[events.ExtDeadAttempts] != "3" || x[events.ExtDeadTopic] != "orders" || x[events.ExtDeadFunction] != "a" || x[events.ExtDeadTrigger] != "0" ||
				!strings.Contains(x[events.ExtDeadError], "500") || !strings.Contains(x[events.ExtDeadError], "poison event") {
				t.Fatalf("dead letter extensions %v", x)
			}
			n := 0
			for _, c := range e.rec.snapshot() {
				if c.id == "poison" {
					n++
				}
			}
			if n != 3 {
				t.Fatalf("poison invoked %d times, want max_attempts 3", n)
			}
			// Counters move just after the recorder sees the call: poll.
			waitFor(t, "dispatcher stats", func() error {
				if st := e.disp.Stats(); st.DeadLettered != 1 {
					return fmt.Errorf("stats %+v", st)
				}
				return nil
			})
		})
	}
}

func TestOrderingPerKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t, events.DispatcherOptions{Concurrency: 8}, "a")
	s := spec("a", "ordered", "orders")
	s.OrderingKey = "event.subject"
	e.sync(s)
	const keys, perKey = 6, 8
	var evs []*cloudevents.Event
	for i := range perKey {
		for k := range keys {
			id := fmt.Sprintf("k%d-%d", k, i)
			if k == 1 && i == 2 {
				// fails twice: the rest of key k1 must wait for it
				evs = append(evs, event(id, "flaky", fmt.Sprint("k", k), "failtimes", "2"))
				continue
			}
			evs = append(evs, event(id, "ok", fmt.Sprint("k", k)))
		}
	}
	for i := 0; i < len(evs); i += 10 {
		e.publish("orders", evs[i:min(i+10, len(evs))]...)
	}
	var want []string
	for _, ev := range evs {
		want = append(want, "a/"+ev.ID)
	}
	e.waitSucceeded(want)

	e.rec.mu.Lock()
	overlap := e.rec.overlap
	e.rec.mu.Unlock()
	if len(overlap) > 0 {
		t.Fatalf("events of one key ran concurrently: %v", overlap)
	}
	// Per key, the calls (attempts included) follow publish order, and no
	// event starts before the previous one of its key succeeded.
	last := map[string]int{}
	done := map[string]bool{}
	for _, c := range e.rec.snapshot() {
		var k, i int
		fmt.Sscanf(c.id, "k%d-%d", &k, &i)
		key := fmt.Sprint("k", k)
		if i > 0 && !done[fmt.Sprintf("k%d-%d", k, i-1)] {
			t.Fatalf("%s (attempt %d) ran before %s-%d succeeded", c.id, c.attempt, key, i-1)
		}
		if prev, ok := last[key]; ok && i < prev {
			t.Fatalf("%s ran after %s-%d", c.id, key, prev)
		}
		last[key] = i
		if c.ok() {
			done[c.id] = true
		}
	}
}

func TestTraceContextPropagates(t *testing.T) {
	t.Parallel()
	e := newEnv(t, events.DispatcherOptions{}, "a")
	e.sync(spec("a", "0", "orders"))
	pub := telemetry.NewTrace()
	e.publish("orders", event("traced", "ok", "", "traceparent", pub.String()), event("untraced", "ok", ""))
	e.waitSucceeded([]string{"a/traced", "a/untraced"})
	for _, c := range e.rec.snapshot() {
		got, ok := telemetry.ParseTraceParent(c.resp.Header.Get("X-Trace"))
		if !ok {
			t.Fatalf("%s: guest saw traceparent %q", c.id, c.resp.Header.Get("X-Trace"))
		}
		switch c.id {
		case "traced":
			if got.TraceID != pub.TraceID {
				t.Fatalf("subscriber trace %s, want the publisher's %s", got.TraceIDString(), pub.TraceIDString())
			}
			if got.SpanID == pub.SpanID {
				t.Fatal("subscriber reuses the publisher's span; want a child span")
			}
			if c.req.Header.Get("Ce-Traceparent") != pub.String() {
				t.Fatalf("ce-traceparent %q, want the event's extension", c.req.Header.Get("Ce-Traceparent"))
			}
		case "untraced":
			if got.TraceID == pub.TraceID {
				t.Fatal("an event without traceparent joined another trace")
			}
		}
	}
}

func TestSyncRemovesTrigger(t *testing.T) {
	t.Parallel()
	e := newEnv(t, events.DispatcherOptions{}, "a", "b")
	e.sync(spec("a", "0", "orders"), spec("b", "0", "orders"))
	e.publish("orders", event("p0", "ok", ""), event("p1", "ok", ""))
	e.waitSucceeded([]string{"a/p0", "a/p1", "b/p0", "b/p1"})

	e.sync(spec("a", "0", "orders")) // b's trigger removed
	e.sync(spec("a", "0", "orders")) // unchanged: a no-op
	e.publish("orders", event("q0", "ok", ""), event("q1", "ok", ""))
	e.waitSucceeded([]string{"a/q0", "a/q1"})
	for _, c := range e.rec.snapshot() {
		if c.fn == "b" && strings.HasPrefix(c.id, "q") {
			t.Fatalf("removed trigger still got %s", c.id)
		}
	}
	consumers := func() []string {
		var names []string
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := e.st.JetStream().Stream(ctx, e.log.Stream())
		if err != nil {
			t.Fatal(err)
		}
		l := st.ListConsumers(ctx)
		for info := range l.Info() {
			names = append(names, info.Name)
		}
		return names
	}
	if got := consumers(); len(got) != 1 || !strings.Contains(got[0], "_a_") {
		t.Fatalf("consumers after removing b: %v", got)
	}
	e.sync() // deactivate
	if got := consumers(); len(got) != 0 {
		t.Fatalf("consumers after deactivate: %v", got)
	}
}

// blocking wraps an invoker: calls for ids in block wait until their
// context ends (a node that dies mid-delivery).
type blocking struct {
	inv   events.Invoker
	block func(id string) bool
}

func (b blocking) Invoke(ctx context.Context, app, fn string, req *runtime.Request) (*runtime.Response, error) {
	if b.block(req.Header.Get("Ce-Id")) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return b.inv.Invoke(ctx, app, fn, req)
}

func TestRestartDeliversWhatWasNotAcked(t *testing.T) {
	t.Parallel()
	// A short ack wait: after the restart, events that were in flight come
	// back once it expires.
	e := &env{t: t, dir: t.TempDir(), opts: events.DispatcherOptions{AckWait: time.Second, Concurrency: 4}, fns: []string{"a"}}
	e.open(func(inv events.Invoker) events.Invoker {
		return blocking{inv: inv, block: func(id string) bool { return strings.HasPrefix(id, "late") }}
	})
	t.Cleanup(e.close)
	s := spec("a", "0", "orders")
	e.sync(s)
	var evs []*cloudevents.Event
	for i := range 10 {
		evs = append(evs, event(fmt.Sprint("early", i), "ok", ""))
	}
	for i := range 6 {
		evs = append(evs, event(fmt.Sprint("late", i), "ok", ""))
	}
	e.publish("orders", evs...)
	e.waitSucceeded(ids("a", "early", 10))
	waitFor(t, "late events in flight", func() error {
		e.rec.mu.Lock()
		defer e.rec.mu.Unlock()
		if n := e.rec.inflight["a/"]; n < 4 {
			return fmt.Errorf("%d in flight", n)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.disp.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// Published while no dispatcher runs.
	e.publish("orders", event("down0", "ok", ""), event("down1", "ok", ""))
	e.close()

	e.open(nil)
	e.sync(s)
	e.waitSucceeded(append(append(ids("a", "early", 10), ids("a", "late", 6)...), "a/down0", "a/down1"))
	for k, n := range e.rec.succeeded() {
		if n != 1 {
			t.Fatalf("%s ran %d times", k, n)
		}
	}
	// Re-sent events (same source and id) are not stored again.
	e.publish("orders", event("early0", "ok", ""), event("down0", "ok", ""), event("fresh", "ok", ""))
	e.waitSucceeded([]string{"a/fresh"})
	for k, n := range e.rec.succeeded() {
		if n != 1 {
			t.Fatalf("%s ran %d times after it was re-sent", k, n)
		}
	}
}

func TestDeadLetterTriggerDoesNotLoop(t *testing.T) {
	t.Parallel()
	// The dead-letter topic must be one token; a trigger on it does not
	// loop: its failures are dropped after max_attempts.
	e := newEnv(t, events.DispatcherOptions{}, "a", "dlq")
	s := spec("a", "0", "orders")
	s.MaxAttempts = 1
	d := spec("dlq", "0", events.DefaultDeadLetterTopic)
	d.MaxAttempts = 2
	e.sync(s, d)
	e.publish("orders", event("poison", "fail", ""))
	waitFor(t, "dead letter dropped", func() error {
		n := 0
		for _, c := range e.rec.snapshot() {
			if c.fn == "dlq" {
				n++
			}
		}
		if n != 2 {
			return fmt.Errorf("dlq trigger ran %d times, want 2", n)
		}
		return nil
	})
	// Counters move just after the recorder sees the call: poll.
	waitFor(t, "dispatcher stats", func() error {
		if st := e.disp.Stats(); st.DeadLettered != 1 {
			return fmt.Errorf("stats %+v, want the one original dead letter", st)
		}
		return nil
	})
}

func TestSyncRejectsBadSpecs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, events.DispatcherOptions{}, "a")
	ctx := context.Background()
	for _, s := range []events.TriggerSpec{
		{App: "other", Function: "a", ID: "0", Topic: "orders"},
		{App: testApp, Function: "a", ID: "", Topic: "orders"},
		{App: testApp, Function: "a", ID: "0", Topic: "a.b"},
		{App: testApp, Function: "a", ID: "0", Topic: "orders", OrderingKey: "subject"},
	} {
		if err := e.disp.Sync(ctx, testApp, []events.TriggerSpec{s}); err == nil {
			t.Errorf("Sync accepted %+v", s)
		}
	}
	dup := spec("a", "0", "orders")
	if err := e.disp.Sync(ctx, testApp, []events.TriggerSpec{dup, dup}); err == nil {
		t.Error("Sync accepted a trigger twice")
	}
	if err := e.disp.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.disp.Sync(ctx, testApp, nil); !errors.Is(err, events.ErrDispatcherClosed) {
		t.Fatalf("Sync after Close: %v", err)
	}
}

func TestHammer(t *testing.T) {
	t.Parallel()
	e := newEnv(t, events.DispatcherOptions{Concurrency: 6}, "a", "b")
	specs := []events.TriggerSpec{spec("a", "plain", "orders"), spec("b", "plain", "orders"), spec("a", "ordered", "orders"), spec("b", "ordered", "orders")}
	specs[2].OrderingKey = "event.subject"
	specs[3].OrderingKey = "event.subject"
	specs[1].Filter.Type = "ok"
	e.sync(specs...)
	const publishers, per = 6, 40
	var wg sync.WaitGroup
	var want []string
	for p := range publishers {
		for i := range per {
			id := fmt.Sprintf("p%d-%d", p, i)
			want = append(want, "a/"+id)
		}
		wg.Go(func() {
			for i := 0; i < per; i += 5 {
				var evs []*cloudevents.Event
				for j := i; j < i+5; j++ {
					typ, ext := "ok", []string(nil)
					if j%7 == 3 {
						typ, ext = "flaky", []string{"failtimes", "1"}
					}
					evs = append(evs, event(fmt.Sprintf("p%d-%d", p, j), typ, fmt.Sprint("k", j%5), ext...))
				}
				ents := make([]events.Entry, len(evs))
				for k, ev := range evs {
					ents[k] = events.EventEntry(testApp, "orders", ev)
				}
				if _, err := e.log.Append(context.Background(), ents...); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	// Concurrent no-op Syncs and Stats while events flow.
	wg.Go(func() {
		for range 5 {
			if err := e.disp.Sync(context.Background(), testApp, specs); err != nil {
				t.Error(err)
			}
			_ = e.disp.Stats()
		}
	})
	wg.Wait()
	var wantB []string
	for _, k := range want {
		wantB = append(wantB, "b/"+strings.TrimPrefix(k, "a/"))
	}
	e.waitSucceeded(append(want, wantB...))
	// Each of a's two triggers ran each event; b's ordered trigger too.
	waitFor(t, "all triggers", func() error {
		got := e.rec.succeeded()
		for _, k := range want {
			if got[k] < 2 {
				return fmt.Errorf("%s succeeded %d times, want once per trigger of a", k, got[k])
			}
		}
		return nil
	})
}

// TestWorkersAreReusedAndLeave: a trigger's goroutine that finished a
// delivery takes the next one (its stack stays grown) instead of a new
// goroutine starting, and an idle trigger keeps none of them.
func TestWorkersAreReusedAndLeave(t *testing.T) {
	// Not parallel: it reads the goroutines of the whole test binary.
	workers := func() (idle, busy int) {
		buf := make([]byte, 1<<22)
		buf = buf[:goruntime.Stack(buf, true)]
		for _, g := range strings.Split(string(buf), "\n\n") {
			switch {
			case strings.Contains(g, "events.(*trigger).work("):
				busy++
			case strings.Contains(g, "events.(*trigger).worker("):
				idle++
			}
		}
		return idle, busy
	}
	const n = 100
	evs := func(prefix string, n int) []*cloudevents.Event {
		var out []*cloudevents.Event
		for i := range n {
			out = append(out, event(fmt.Sprint(prefix, i), "ok", ""))
		}
		return out
	}

	// Workers that never time out: once all are idle, one more event runs
	// on one of them.
	e := newEnv(t, events.DispatcherOptions{Concurrency: 4, WorkerLinger: time.Hour}, "a")
	e.sync(spec("a", "t", "orders"))
	e.publish("orders", evs("e", n)...)
	e.waitSucceeded(ids("a", "e", n))
	waitFor(t, "workers to finish", func() error {
		if idle, busy := workers(); busy > 0 || idle == 0 {
			return fmt.Errorf("%d busy, %d idle", busy, idle)
		}
		return nil
	})
	started := e.disp.WorkersStarted()
	if started >= n {
		t.Errorf("%d goroutines for %d events: none was reused", started, n)
	}
	e.publish("orders", event("one-more", "ok", ""))
	e.waitSucceeded([]string{"a/one-more"})
	if now := e.disp.WorkersStarted(); now != started {
		t.Errorf("an event on a trigger with idle workers started %d new goroutine(s)", now-started)
	}
	e.close()
	if idle, busy := workers(); idle+busy > 0 {
		t.Fatalf("%d idle and %d busy workers after the dispatcher closed", idle, busy)
	}

	// With the default linger, an idle trigger's workers leave.
	e = newEnv(t, events.DispatcherOptions{Concurrency: 4}, "a")
	e.sync(spec("a", "t", "orders"))
	e.publish("orders", evs("f", 20)...)
	e.waitSucceeded(ids("a", "f", 20))
	waitFor(t, "idle workers to leave", func() error {
		if idle, busy := workers(); idle+busy > 0 {
			return fmt.Errorf("%d idle and %d busy workers on an idle trigger", idle, busy)
		}
		return nil
	})
}
