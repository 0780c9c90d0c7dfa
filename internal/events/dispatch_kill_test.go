package events

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
	"github.com/nimbus-dev/nimbus/internal/runtime"
)

// The kill -9 test of delivery: 20 keys x 300 events, in order per key, to
// two triggers of one topic, one ordered by event.subject and one not.
const (
	killApp     = "app"
	killTopic   = "t"
	killKeys    = 20
	killPerKey  = 300
	killOrdered = "ordered"
	killPlain   = "plain"
)

func killSpecs() []TriggerSpec {
	return []TriggerSpec{
		{App: killApp, Function: "f", ID: killOrdered, Topic: killTopic, OrderingKey: "event.subject"},
		{App: killApp, Function: "f", ID: killPlain, Topic: killTopic},
		AsyncTrigger(killApp),
	}
}

// killAsync is how the kill test's reports name the async trigger.
const killAsync = "async"

// killInvoker answers 200 at once and reports every invocation's start
// with report(trigger id, event id).
type killInvoker struct{ report func(trigger, id string) }

func (k killInvoker) Invoke(_ context.Context, _, _ string, req *runtime.Request) (*runtime.Response, error) {
	if req.InvocationID != "" { // an async invocation: no trigger header, its id names it
		k.report(killAsync, req.InvocationID)
		return &runtime.Response{Status: 200}, nil
	}
	_, id, _ := strings.Cut(req.Header.Get(HeaderTrigger), "/")
	k.report(id, req.Header.Get("Ce-Id"))
	return &runtime.Response{Status: 200}, nil
}

// TestKill9DeliveryOrderAndRecords runs a node (store, log, dispatcher) in
// a child process that publishes 20 keys x 300 events and delivers them to
// an ordered and an unordered trigger, kills it with SIGKILL when about
// 70% of the ordered deliveries have started, restarts on the same data
// directory in this process, and checks across the crash:
//
//   - per key, the ordered trigger's runs (the child's, then the
//     restart's) follow publish order: the events held at the kill run
//     before the key's later ones, although the ack wait (5 min) has not
//     expired, so recovery did not wait for it;
//   - nothing is lost: every event ran on both triggers;
//   - an event runs again only across the crash: for the ordered trigger,
//     only the key's last run before the kill may run first after it;
//   - no delivery whose record was on disk before the kill (the child saw
//     its commit return) runs again, on either trigger.
func TestKill9DeliveryOrderAndRecords(t *testing.T) {
	t.Parallel()
	if dir := os.Getenv("NIMBUS_EVENTS_DELIVERY_KILL_CHILD"); dir != "" {
		deliveryKillChild(dir)
		return
	}
	const killAfter = killKeys * killPerKey * 7 / 10
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKill9DeliveryOrderAndRecords$", "-test.count=1")
	cmd.Env = append(os.Environ(), "NIMBUS_EVENTS_DELIVERY_KILL_CHILD="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}

	// The child's reports: "run <trigger> <id>" when an invocation starts,
	// "recorded <trigger> <id>" once its delivery record (an async
	// invocation's final record) is on disk, "queued async <id>" once an
	// async invocation is appended.
	before := map[string][]string{} // trigger -> event ids in the order their runs started
	recorded := map[string]bool{}   // trigger/id
	queued := map[string]bool{}     // async invocation ids
	read := func(line string) {
		f := strings.Fields(line)
		if len(f) != 3 {
			return
		}
		switch f[0] {
		case "run":
			before[f[1]] = append(before[f[1]], f[2])
		case "recorded":
			recorded[f[1]+"/"+f[2]] = true
		case "queued":
			queued[f[2]] = true
		}
	}
	sc := bufio.NewScanner(out)
	for len(before[killOrdered]) < killAfter && sc.Scan() {
		read(sc.Text())
	}
	killed := len(before[killOrdered]) >= killAfter
	if err := cmd.Process.Kill(); err != nil { // SIGKILL while it is delivering
		t.Fatal(err)
	}
	for sc.Scan() { // what the child wrote before it died
		read(sc.Text())
	}
	cmd.Wait()
	if !killed {
		t.Fatalf("the child started only %d ordered deliveries", len(before[killOrdered]))
	}
	if n := len(before[killOrdered]); n >= killKeys*killPerKey {
		t.Fatalf("the child ran all %d ordered deliveries before the kill: nothing was tested", n)
	}

	// Restart on the same directory, with a short ack wait: the unordered
	// trigger's events in flight at the kill come back after it, the
	// ordered trigger's must not wait for it (and would come back out of
	// order if they did).
	s := openStore(t, dir)
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	l, err := OpenLog(ctx, s.JetStream(), LogConfig{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(context.Background())
	var mu sync.Mutex
	after := map[string][]string{}
	d := NewDispatcher(s.JetStream(), l, killInvoker{report: func(trigger, id string) {
		mu.Lock()
		after[trigger] = append(after[trigger], id)
		mu.Unlock()
	}}, DispatcherOptions{Logger: testLogger(), Concurrency: 16, AckWait: 2 * time.Second})
	defer d.Close(context.Background())
	if err := d.Sync(ctx, killApp, killSpecs()); err != nil {
		t.Fatal(err)
	}
	for _, spec := range killSpecs() {
		waitConsumerDone(t, ctx, spec.withDefaults(), d)
	}
	if err := d.Close(ctx); err != nil {
		t.Fatal(err)
	}

	mu.Lock()
	defer mu.Unlock()
	for _, trig := range []string{killOrdered, killPlain} {
		ranBefore, ranAfter := map[string]bool{}, map[string]bool{}
		for _, id := range before[trig] {
			if ranBefore[id] {
				t.Errorf("%s: %s ran twice before the kill", trig, id)
			}
			ranBefore[id] = true
		}
		again := 0
		for _, id := range after[trig] {
			if ranAfter[id] {
				t.Errorf("%s: %s ran twice after the restart", trig, id)
			}
			ranAfter[id] = true
			if recorded[trig+"/"+id] {
				t.Errorf("%s: %s ran again after the restart although its delivery record was on disk before the kill", trig, id)
			}
			if ranBefore[id] {
				again++
			}
		}
		for k := range killKeys {
			for i := range killPerKey {
				if id := killID(k, i); !ranBefore[id] && !ranAfter[id] {
					t.Errorf("%s: %s never ran", trig, id)
				}
			}
		}
		t.Logf("%s: %d runs before the kill (%d recorded), %d after the restart, %d of them again",
			trig, len(before[trig]), countPrefix(recorded, trig+"/"), len(after[trig]), again)
	}
	checkKeyOrder(t, before[killOrdered], after[killOrdered])

	// Async invocations: none whose final record was on disk runs again,
	// none runs twice after the restart, every one queued runs.
	ranBefore, ranAfter := map[string]bool{}, map[string]bool{}
	for _, id := range before[killAsync] {
		ranBefore[id] = true
	}
	for _, id := range after[killAsync] {
		if ranAfter[id] {
			t.Errorf("async: %s ran twice after the restart", id)
		}
		ranAfter[id] = true
		if recorded[killAsync+"/"+id] {
			t.Errorf("async: %s ran again after the restart although its record was on disk before the kill", id)
		}
	}
	for id := range queued {
		if !ranBefore[id] && !ranAfter[id] {
			t.Errorf("async: %s was queued and never ran", id)
		}
	}
	t.Logf("async: %d queued, %d runs before the kill (%d recorded), %d after the restart",
		len(queued), len(before[killAsync]), countPrefix(recorded, killAsync+"/"), len(after[killAsync]))
}

// checkKeyOrder checks that per key, the runs before and after the crash
// follow publish order, and that only the key's last run before the crash
// may be repeated, as its first run after it.
func checkKeyOrder(t *testing.T, before, after []string) {
	t.Helper()
	last := map[int]int{} // key -> index of its last run before the crash
	for _, id := range before {
		k, i := parseKillID(t, id)
		if prev, ok := last[k]; ok && i <= prev {
			t.Errorf("key k%d before the kill: %s ran after k%d-%d", k, id, k, prev)
		}
		last[k] = i
	}
	first := map[int]bool{}
	for _, id := range after {
		k, i := parseKillID(t, id)
		prev, ok := last[k]
		switch {
		case !ok:
		case i < prev, i == prev && first[k]:
			t.Errorf("key k%d: %s ran after k%d-%d (across the restart: %v)", k, id, k, prev, first[k])
		}
		last[k], first[k] = i, true
	}
}

func killID(k, i int) string { return fmt.Sprintf("k%d-%d", k, i) }

func parseKillID(t *testing.T, id string) (k, i int) {
	t.Helper()
	if _, err := fmt.Sscanf(id, "k%d-%d", &k, &i); err != nil {
		t.Fatalf("event id %q: %v", id, err)
	}
	return k, i
}

func countPrefix(m map[string]bool, prefix string) int {
	n := 0
	for k := range m {
		if strings.HasPrefix(k, prefix) {
			n++
		}
	}
	return n
}

// waitConsumerDone waits until the trigger's consumer has delivered
// everything and has nothing unacknowledged.
func waitConsumerDone(t *testing.T, ctx context.Context, s TriggerSpec, d *Dispatcher) {
	t.Helper()
	var info *jetstream.ConsumerInfo
	for ctx.Err() == nil {
		c, err := d.js.Consumer(ctx, d.log.Stream(), consumerName(s))
		if err == nil {
			info, err = c.Info(ctx)
		}
		if err == nil && info.NumPending == 0 && info.NumAckPending == 0 {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("trigger %s: not done: %+v", s.ID, info)
}

// deliveryKillChild is the node that gets killed: it reports to stdout
// and never returns.
func deliveryKillChild(dir string) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	s := openStore(nopTB{}, dir)
	l, err := OpenLog(ctx, s.JetStream(), LogConfig{Logger: testLogger()})
	if err != nil {
		fail(err)
	}
	var mu sync.Mutex
	report := func(what, trigger, id string) {
		mu.Lock()
		fmt.Printf("%s %s %s\n", what, trigger, id) // one write per line: whole lines survive the kill
		mu.Unlock()
	}
	d := NewDispatcher(s.JetStream(), l, killInvoker{report: func(trigger, id string) { report("run", trigger, id) }},
		DispatcherOptions{Logger: testLogger(), Concurrency: 16, AckWait: 5 * time.Minute})
	d.onRecorded = func(t *trigger, dl *delivery) { report("recorded", t.spec.ID, dl.event.ID) }
	d.onAsyncRecorded = func(id string) { report("recorded", killAsync, id) }
	if err := d.Sync(ctx, killApp, killSpecs()); err != nil {
		fail(err)
	}
	// Async invocations queued one by one all along, so that some are
	// running or just recorded when the kill comes.
	go func() {
		for ctx.Err() == nil {
			ent, err := AsyncEntry(killApp, "f", &runtime.Request{Method: "POST", Path: "/", Header: http.Header{}}, "", nil)
			if err != nil {
				fail(err)
			}
			acks, err := l.Append(ctx, ent)
			if err != nil {
				fail(err)
			}
			report("queued", killAsync, AsyncID(acks[0].Seq, acks[0].Index))
		}
	}()
	var batch []Entry
	for i := range killPerKey {
		for k := range killKeys {
			e := &cloudevents.Event{
				SpecVersion: cloudevents.SpecVersion, ID: killID(k, i), Source: "/kill", Type: "t",
				Subject: fmt.Sprint("k", k), Data: []byte(`{}`), DataContentType: "application/json",
			}
			batch = append(batch, EventEntry(killApp, killTopic, e))
			if len(batch) == 100 {
				if _, err := l.Append(ctx, batch...); err != nil {
					fail(err)
				}
				batch = batch[:0]
			}
		}
	}
	<-ctx.Done()
	fail(fmt.Errorf("delivery kill child: not killed: %w", ctx.Err()))
}
