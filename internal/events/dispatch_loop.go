package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/telemetry"
	"github.com/nimbus-dev/nimbus/internal/throttle"
)

// trigger is the delivery loop of one trigger: a reader goroutine pulling
// from the trigger's durable consumer, at most Concurrency workers, a
// heartbeat, and (ordered triggers) goroutines waiting for a retry. All of
// them are in wg; stop cancels ctx and waits.
//
// Every event the loop has taken and not yet acked, nacked or terminated
// is in held (by stream sequence): the heartbeat keeps them alive on the
// server with InProgress, and a redelivery of one of them (its ack wait
// expired anyway) only refreshes its handle instead of running it twice.
//
// # Ordering per key
//
// JetStream delivers a consumer's new messages in stream order, and
// redelivers expired ones in stream order too; what breaks order is
// concurrency (two workers) and retries (a nacked message comes back after
// later ones). So for an ordered trigger:
//
//   - the reader puts every event in keys[key], a queue in stream order
//     whose head is the one event of that key being worked on; a new
//     event starts a worker only when it is the head (its key was idle).
//     The reader never waits for a key, only for a free worker slot, so
//     other keys keep flowing;
//   - a worker that finishes the head (recorded and acked, or
//     dead-lettered and terminated) pops it and goes on with the next event
//     of the same key (in a slot taken again: a success is recorded
//     without one, see work);
//   - a failed head is not nacked (JetStream would redeliver it after the
//     events behind it); it stays held and is retried in process after its
//     backoff, with the slot released meanwhile. Its attempt count is
//     NumDelivered-1 plus the attempts made in process;
//   - the events waiting behind a head are held too, so they are neither
//     acked nor redelivered while they wait.
//
// Across a crash or a restart of the loop, JetStream alone would not keep
// the order: the events held at the crash come back only when their ack
// wait expires, and the consumer hands out the events it never delivered
// first. So before an ordered loop takes anything, recoverOrder resets its
// consumer to the ack floor: everything above it is delivered again, in
// stream order, and what the earlier loop had finished is recognised by
// its delivery record. The reader also inserts by stream sequence. The
// cost: events waiting behind a slow or failing key count toward
// MaxAckPending, so more than MaxAckPending events stuck behind poison keys
// stall the trigger until those keys are dead-lettered (at most MaxAttempts
// backoffs).
type trigger struct {
	d       *Dispatcher
	spec    TriggerSpec
	name    string
	cons    jetstream.Consumer
	logger  *slog.Logger
	ordered bool
	// recoverTo is the last stream sequence the consumer had delivered when
	// recoverOrder reset it (0: no reset). Reader goroutine only.
	recoverTo uint64
	// recordedTo is the highest event position this trigger had recorded
	// as finished when its loop started (async triggers: the stream's last
	// position then; see recordsHorizon): a delivery at or below it may
	// have run before, even when the server counts it as a
	// first delivery, and goes through the record check. Set before the
	// first fetch, read-only after.
	recordedTo uint64

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	sem    chan struct{} // worker slots
	// handoff gives a delivery, with the slot its sender took, to a worker
	// that finished its last one less than workerLinger ago (unbuffered).
	handoff chan *delivery
	avgRun  atomic.Int64 // moving average of an invocation's duration, ns (observeRun)
	// recordErrs says, at most once per recordErrEvery, that delivery or
	// async invocation records fail (a full disk fails every one).
	recordErrs logEvery

	// perMsg is the entries per message the reader took lately (a pack
	// holds many, see pack.go): fetchSize asks for messages, and is meant
	// in events.
	perMsg perMessage

	mu       sync.Mutex
	held     map[uint64]*delivery   // position -> event held unacknowledged
	packs    map[uint64]*pack       // stream sequence -> pack with events held
	keys     map[string][]*delivery // ordered triggers: key -> events in stream order, head in progress
	deferred map[uint64]int         // position -> deliveries put off by a flow limit (not attempts)
}

// delivery is one event held by a trigger.
type delivery struct {
	msg       jetstream.Msg // the latest delivery of it (nil for an entry of a pack: pack.msg); guarded by trigger.mu
	pack      *pack         // the pack it is an entry of, nil when its message is its own
	seq       uint64        // stream sequence of its message
	pos       uint64        // position (Position: seq and index in the pack)
	delivered uint64        // NumDelivered of its message when taken
	stored    time.Time     // when the event was appended
	local     int           // attempts made in this process before the current one (ordered retries)
	event     *cloudevents.Event
	key       string
	lastErr   string
	succeeded bool // the function succeeded; work completes it (records and acks)
}

// pack is a message holding several events (pack.go) that a trigger took.
// Its events are delivered as events of their own; the message is acked
// once every one of them is done (acked, terminated, or filtered out), or
// nacked when one of them is to be tried again (settle). Guarded by
// trigger.mu.
type pack struct {
	msg   jetstream.Msg // the latest delivery of it
	seq   uint64
	left  int           // events not settled yet
	retry bool          // an event is to be tried again: nak, not ack
	delay time.Duration // the longest delay an event asked for
}

func (d *Dispatcher) start(name string, s TriggerSpec, cons jetstream.Consumer) *trigger {
	ctx, cancel := context.WithCancel(context.Background())
	t := &trigger{
		d: d, spec: s, name: name, cons: cons,
		logger:  d.logger.With("app", s.App, "function", s.Function, "trigger", s.ID, "topic", s.Topic),
		ordered: s.OrderingKey != "",
		ctx:     ctx, cancel: cancel,
		sem:      make(chan struct{}, d.opts.Concurrency),
		handoff:  make(chan *delivery),
		held:     map[uint64]*delivery{},
		packs:    map[uint64]*pack{},
		keys:     map[string][]*delivery{},
		deferred: map[uint64]int{},
	}
	t.wg.Go(t.run)
	t.wg.Go(t.heartbeat)
	return t
}

// stop ends the loop and waits for every goroutine of it. In-flight
// invocations are cancelled; what was not acked is redelivered later.
func (t *trigger) stop() {
	t.cancel()
	t.wg.Wait()
}

// fetchWait is how long one pull request waits on the server. Messages
// are handled as they arrive, so it only bounds how often an idle trigger
// asks again.
const fetchWait = 5 * time.Second

// run is the reader. It pulls with Fetch in a loop rather than with
// Consumer.Messages: under load with a reader that blocks for worker slots,
// the Messages iterator of nats.go v1.55 was seen to stop pulling (no
// waiting request on the server, messages pending) until its 30 s expiry.
func (t *trigger) run() {
	t.recordsHorizon()
	if t.ordered {
		t.recoverOrder()
	}
	for t.ctx.Err() == nil {
		fctx, cancel := context.WithTimeout(t.ctx, fetchWait)
		batch, err := t.cons.Fetch(t.fetchSize(), jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			if t.ctx.Err() != nil {
				return
			}
			t.logger.Warn("trigger consumer fetch", "err", err)
			t.pause(time.Second)
			continue
		}
		for msg := range batch.Messages() {
			t.accept(msg)
		}
		cancel()
		if err := batch.Error(); err != nil && t.ctx.Err() == nil &&
			!errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
			t.logger.Warn("trigger consumer fetch", "err", err)
			t.pause(time.Second)
		}
	}
}

// fetchSize is how many events the reader asks for at once: enough that
// one pull feeds the workers for a while (a pull is a round trip and a
// subscription of its own), few enough that the last event of a pull
// does not wait in process longer than about AckWait/10 for a worker
// slot (its ack wait runs from the pull, and the heartbeat keeps only
// the events taken). From the average invocation time: 2 to 16 times
// Concurrency, at most MaxAckPending. A pull counts messages: when the
// messages are packs, it asks for as many as hold about that many events
// (perMsg), at least one.
func (t *trigger) fetchSize() int {
	c := t.d.opts.Concurrency
	k := 16
	if avg := time.Duration(t.avgRun.Load()); avg > 0 {
		k = int(min(16, max(2, t.d.opts.AckWait/10/avg)))
	}
	n := k * c
	switch per, known := t.perMsg.value(); {
	case !known:
		n = c // nothing taken yet: the messages may be large packs
	case per > 1:
		n = max(1, int(float64(n)/per))
	}
	return min(n, t.d.opts.MaxAckPending)
}

// observeRun folds one invocation's duration into avgRun (a moving
// average over about the last 8).
func (t *trigger) observeRun(d time.Duration) {
	old := t.avgRun.Load()
	if old == 0 {
		t.avgRun.Store(int64(d))
		return
	}
	t.avgRun.Store(old + (int64(d)-old)/8)
}

// recoverOrder puts an ordered trigger's consumer back to its ack floor
// before the loop takes anything, when an earlier loop (a crashed or
// stopped process, or a loop Sync replaced) left events delivered and not
// acknowledged.
//
// JetStream would redeliver those only once their ack wait expires, and
// meanwhile hand out the events never delivered, so a key's later events
// would run before its earlier ones. After the reset the consumer delivers
// everything above the ack floor again, in stream order, at once: the
// events held by the earlier loop first, where they belong. Events above
// the floor that the earlier loop finished (acked or terminated) come back
// too and are recognised by their delivery record (recordDone) without
// running; filtered ones are filtered again.
//
// The reset forgets the server's delivery counts, so recoverTo (the last
// stream sequence delivered before it) marks the events that were
// delivered before: each counts as delivered once more than the server
// says, which keeps the attempt of an event cut by a crash counted, as a
// plain redelivery would, and sends it through the record check.
//
// If the reset fails (a server without the reset API answers with an
// error, or keeps not answering) the loop goes on without it and logs it:
// held events then come back after the ack wait, maybe after later events
// of their key, as they did before.
func (t *trigger) recoverOrder() {
	for try := 1; t.ctx.Err() == nil; try++ {
		err := t.resetToAckFloor()
		if err == nil {
			return
		}
		if t.ctx.Err() != nil {
			return
		}
		if try == 3 {
			t.logger.Error("ordered trigger: cannot reset the consumer to its ack floor; held events come back after the ack wait, maybe out of order", "err", err)
			return
		}
		t.logger.Warn("ordered trigger: reset the consumer to its ack floor; will retry", "err", err)
		t.pause(time.Second)
	}
}

// resetToAckFloor resets the consumer to its ack floor if anything is
// delivered beyond it, and sets recoverTo. Called by the reader before it
// fetches, so nothing of this loop is held yet.
func (t *trigger) resetToAckFloor() error {
	ctx, cancel := context.WithTimeout(t.ctx, 10*time.Second)
	defer cancel()
	info, err := t.cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("consumer info: %w", err)
	}
	if info.NumAckPending == 0 && info.Delivered.Stream <= info.AckFloor.Stream {
		return nil
	}
	if _, err := t.d.js.ResetConsumer(ctx, t.d.log.Stream(), t.name); err != nil {
		return fmt.Errorf("reset consumer: %w", err)
	}
	t.recoverTo = info.Delivered.Stream
	t.logger.Info("ordered trigger: consumer reset to its ack floor", "ack_floor", info.AckFloor.Stream, "delivered", info.Delivered.Stream, "ack_pending", info.NumAckPending)
	return nil
}

// recordsHorizon sets recordedTo from the trigger's delivery records.
//
// The server's delivery counts are not enough to tell a redelivery after
// a crash: the consumer's state is written to disk in the background, so
// after a kill -9 it can have forgotten deliveries (and acks) of its last
// moments, and hand those events out again as first deliveries. Their
// records are on disk (fsynced before the ack), so every delivery up to
// the highest recorded sequence is checked against them. Above it nothing
// was recorded, so nothing there can have finished. Async triggers keep
// their invocation records instead, one KV key each, with no highest to
// ask for: their horizon is the stream's last sequence at the start, so
// every invocation stored before it is checked against its record once
// (deliverAsync).
func (t *trigger) recordsHorizon() {
	for try := 1; t.ctx.Err() == nil; try++ {
		ctx, cancel := context.WithTimeout(t.ctx, 10*time.Second)
		var hi uint64
		var err error
		if t.spec.Async {
			hi, err = t.d.lastPosition(ctx)
		} else {
			hi, err = t.d.recs.highest(ctx, t.name)
		}
		cancel()
		if err == nil {
			t.recordedTo = hi
			return
		}
		if try == 3 {
			t.logger.Error("read delivery records at start; events finished just before a crash may run again", "err", err)
			return
		}
		t.pause(time.Second)
	}
}

// lastPosition returns the position of the last entry the events stream
// may hold: its last message, read as a pack of the most entries.
func (d *Dispatcher) lastPosition(ctx context.Context) (uint64, error) {
	st, err := d.js.Stream(ctx, d.log.Stream())
	if err != nil {
		return 0, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, err
	}
	return Position(info.State.LastSeq, 1<<positionIndexBits-1), nil
}

// pause waits for d or the end of the loop.
func (t *trigger) pause(d time.Duration) {
	select {
	case <-time.After(d):
	case <-t.ctx.Done():
	}
}

// accept takes one message from the consumer: an event, or the events of
// a pack.
func (t *trigger) accept(msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		t.logger.Error("message without JetStream metadata", "err", err)
		return
	}
	seq := meta.Sequence.Stream
	delivered := meta.NumDelivered
	if seq <= t.recoverTo {
		delivered++ // delivered before recoverOrder's reset, which forgot it
	}
	n := packCount(msg.Headers())
	t.perMsg.observe(n, 8)
	if n == 0 {
		pos := Position(seq, 0)
		t.mu.Lock()
		if h := t.held[pos]; h != nil {
			h.msg = msg // redelivered while held: keep the newest handle, do not run it twice
			t.mu.Unlock()
			return
		}
		t.mu.Unlock()
		t.take(&delivery{msg: msg, seq: seq, pos: pos, delivered: delivered, stored: meta.Timestamp}, msg.Data())
		return
	}
	t.mu.Lock()
	if p := t.packs[seq]; p != nil {
		p.msg = msg // redelivered while its events are held: as above
		t.mu.Unlock()
		return
	}
	p := &pack{msg: msg, seq: seq, left: max(n, 1)}
	t.packs[seq] = p
	t.mu.Unlock()
	var dls []*delivery
	var datas [][]byte
	err = unpack(msg.Data(), func(i int, _ string, data []byte) bool {
		dls = append(dls, &delivery{pack: p, seq: seq, pos: Position(seq, i), delivered: delivered, stored: meta.Timestamp})
		datas = append(datas, data)
		return true
	})
	if err == nil && len(dls) != n {
		err = fmt.Errorf("%w: %d entries, its header says %d", errMalformedPack, len(dls), n)
	}
	if err != nil {
		// No event of it can be trusted: dead-letter the message as it is.
		t.mu.Lock()
		p.left = 1
		t.mu.Unlock()
		t.d.malformed.Add(1)
		t.final(&delivery{pack: p, seq: seq, pos: Position(seq, 0), delivered: delivered, stored: meta.Timestamp}, msg.Data(), 0, err.Error())
		return
	}
	for i, dl := range dls {
		t.take(dl, datas[i])
	}
}

// take starts delivering the event dl, whose stored entry is data.
func (t *trigger) take(dl *delivery, data []byte) {
	e, err := DecodeEntry(data)
	if err != nil {
		// Not a CloudEvent: no attempt can succeed. Dead-letter it as it is.
		t.d.malformed.Add(1)
		t.final(dl, data, 0, err.Error())
		return
	}
	if !t.spec.Filter.Match(e) {
		t.d.filtered.Add(1)
		t.ack(dl)
		return
	}
	dl.event = e
	start := true
	t.mu.Lock()
	t.held[dl.pos] = dl
	if t.ordered {
		dl.key = orderingKey(e, t.spec.OrderingKey)
		q := t.keys[dl.key]
		i := len(q)
		for i > 1 && q[i-1].pos > dl.pos { // in stream order, never before the head
			i--
		}
		q = slices.Insert(q, i, dl)
		t.keys[dl.key] = q
		start = len(q) == 1
	}
	t.mu.Unlock()
	if start && t.acquire() {
		t.spawn(dl)
	}
}

// How settle ends the trigger's part in an event.
const (
	settleAck  = iota // done: acknowledged
	settleNak         // to be delivered again after a delay
	settleTerm        // done, never to be delivered again
)

func (t *trigger) ack(dl *delivery)                      { t.settle(dl, settleAck, 0, "") }
func (t *trigger) nak(dl *delivery, delay time.Duration) { t.settle(dl, settleNak, delay, "") }
func (t *trigger) term(dl *delivery, reason string)      { t.settle(dl, settleTerm, 0, reason) }

// settle ends the trigger's part in dl. An event with a message of its
// own is acked, nacked or terminated. An event of a pack counts down its
// pack: the pack's message is acked when its last event is settled, or
// nacked (after the longest delay its events asked for) when one of them
// was nacked. On that redelivery the events already done are found by
// their delivery records (they were recorded before they were settled)
// and only the others run again; a filtered event is filtered again.
// A nacked event leaves held first: its redelivery is a new delivery.
func (t *trigger) settle(dl *delivery, how int, delay time.Duration, reason string) {
	t.mu.Lock()
	if how == settleNak && t.held[dl.pos] == dl {
		delete(t.held, dl.pos)
	}
	p := dl.pack
	if p == nil {
		msg := dl.msg
		t.mu.Unlock()
		switch how {
		case settleAck:
			_ = msg.Ack()
		case settleNak:
			_ = msg.NakWithDelay(delay)
		default:
			_ = msg.TermWithReason(reason)
		}
		return
	}
	if how == settleNak {
		p.retry = true
		p.delay = max(p.delay, delay)
	}
	p.left--
	if p.left > 0 {
		t.mu.Unlock()
		return
	}
	if t.packs[p.seq] == p {
		delete(t.packs, p.seq)
	}
	msg, retry, d := p.msg, p.retry, p.delay
	t.mu.Unlock()
	if retry {
		_ = msg.NakWithDelay(d)
	} else {
		_ = msg.Ack()
	}
}

// defaultWorkerLinger is how long a worker that finished a delivery waits
// for the next one before it exits (DispatcherOptions.WorkerLinger). A
// busy trigger keeps its goroutines, and with them their grown stacks: a
// new goroutine per event grew its stack through the delivery's call
// depth (invocation, guest call) every time, 5-8% of the CPU an event
// costs with a Go guest (BenchmarkDispatch, cpu-us/event). An idle
// trigger keeps none.
const defaultWorkerLinger = 250 * time.Millisecond

// spawn runs dl, whose worker slot the caller took, on a lingering worker
// or on a new one.
func (t *trigger) spawn(dl *delivery) {
	select {
	case t.handoff <- dl:
	default:
		t.d.workersStarted.Add(1)
		t.wg.Go(func() { t.worker(dl) })
	}
}

// worker runs deliveries handed to it until none comes for WorkerLinger.
func (t *trigger) worker(dl *delivery) {
	var idle *time.Timer
	for {
		t.work(dl)
		if idle == nil {
			idle = time.NewTimer(t.d.opts.WorkerLinger)
		} else {
			idle.Reset(t.d.opts.WorkerLinger)
		}
		select {
		case dl = <-t.handoff:
		case <-idle.C:
			return
		case <-t.ctx.Done():
			idle.Stop()
			return
		}
	}
}

// acquire takes a worker slot; false when the loop is stopping.
func (t *trigger) acquire() bool {
	select {
	case t.sem <- struct{}{}:
		return true
	case <-t.ctx.Done():
		return false
	}
}

// work delivers dl, then (ordered) the events queued behind it on its key,
// each in a worker slot, which it releases when done.
//
// A success is recorded and acked (complete) after the slot is released:
// the record waits for a commit of the store (an fsync shared with the
// other completions of the node), and holding the slot meanwhile would
// bound the trigger at Concurrency events per commit. The next event of
// an ordered key still waits for it, so that a crash cannot run a key's
// event again after a later one.
func (t *trigger) work(dl *delivery) {
	slot := true // the caller took a worker slot for us
	defer func() {
		if slot {
			<-t.sem
		}
	}()
	for dl != nil && t.ctx.Err() == nil {
		if !slot {
			if !t.acquire() {
				return
			}
			slot = true
		}
		began := time.Now()
		retry, delay := t.deliver(dl)
		t.observeRun(time.Since(began))
		if dl.succeeded {
			<-t.sem
			slot = false
			if !t.ordered && !t.spec.Async {
				t.completeLater(dl) // it forgets dl once acked
				return
			}
			t.complete(dl)
		} else if t.ctx.Err() != nil {
			return // stopped mid-delivery: left unacknowledged, redelivered later
		}
		if retry {
			dl.local++
			t.wg.Go(func() { t.retryAfter(dl, delay) })
			return
		}
		t.mu.Lock()
		if t.held[dl.pos] == dl {
			delete(t.held, dl.pos)
		}
		var next *delivery
		if t.ordered {
			q := t.keys[dl.key][1:] // dl is the head
			if len(q) == 0 {
				delete(t.keys, dl.key)
			} else {
				t.keys[dl.key] = q
				next = q[0]
			}
		}
		t.mu.Unlock()
		dl = next
	}
}

// retryAfter runs an ordered trigger's in-process retry of a key's head.
func (t *trigger) retryAfter(dl *delivery, delay time.Duration) {
	select {
	case <-t.d.opts.After(delay):
	case <-t.ctx.Done():
		return
	}
	if t.acquire() {
		t.work(dl)
	}
}

// deliver makes one attempt at dl. It acks, nacks (unordered: the server
// redelivers after the backoff) or terminates the message, or returns
// retry (ordered: the caller retries after delay in process), or sets
// dl.succeeded for the caller to complete.
func (t *trigger) deliver(dl *delivery) (retry bool, delay time.Duration) {
	s := &t.spec
	if s.Async {
		pol := withPolicy(t.spec, dl.event) // the invocation's own retries
		s = &pol
	}
	t.mu.Lock()
	attempt := int(dl.delivered) + dl.local - t.deferred[dl.pos]
	t.mu.Unlock()
	if !s.Async && dl.local == 0 && (dl.delivered > 1 || dl.pos <= t.recordedTo) {
		// A redelivery: the function may have succeeded (or the event been
		// dead-lettered) just before a crash that lost the ack. Checked
		// before the attempt count: a recorded event is done, whatever
		// its count.
		done, err := t.d.recs.done(t.ctx, t.name, dl.pos)
		if err != nil && t.ctx.Err() == nil {
			t.logger.Warn("read delivery records; running the redelivered event", "event", t.where(dl), "err", err)
		}
		if done {
			t.d.dups.Add(1)
			t.forget(dl.pos)
			t.ack(dl)
			return false, 0
		}
	}
	if attempt > s.MaxAttempts {
		// The last attempt ran (or was cut short by a crash) but its dead
		// letter was not appended and terminated.
		cause := dl.lastErr
		if cause == "" {
			cause = "the last attempt's error was lost in a restart"
		}
		return t.final(dl, nil, s.MaxAttempts, cause)
	}
	if s.Async {
		return t.deliverAsync(dl, attempt, s)
	}
	resp, err := t.d.inv.Invoke(t.ctx, s.App, s.Function, t.request(dl, attempt))
	if t.ctx.Err() != nil {
		return false, 0
	}
	if errors.Is(err, throttle.ErrSuperseded) {
		// Debounced: a later event with the same flow key runs instead.
		if !t.recordDone(t.ctx, dl) {
			return false, 0
		}
		t.forget(dl.pos)
		t.ack(dl)
		return false, 0
	}
	if wait, ok := flowDeferral(err); ok {
		return t.putOff(dl, wait)
	}
	if err == nil && resp.Status >= 200 && resp.Status < 300 {
		dl.succeeded = true // work completes it once the worker slot is free
		return false, 0
	}
	t.d.failed.Add(1)
	var cause string
	if err != nil {
		cause = err.Error()
	} else {
		body := resp.Body
		if len(body) > 256 {
			body = body[:256]
		}
		cause = fmt.Sprintf("function answered %d: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	dl.lastErr = cause
	if attempt < s.MaxAttempts {
		delay := backoff(s, attempt)
		t.logger.Debug("delivery failed, will retry", "event", t.where(dl), "attempt", attempt, "retry_in", delay, "err", cause)
		return t.retryLater(dl, delay)
	}
	return t.final(dl, nil, attempt, cause)
}

// recordDone writes dl's delivery record (the next pack, see records.go)
// and waits until it is on disk, before the caller acks or
// terminates dl: then a redelivery of dl (its ack lost in a crash, or an
// ordered trigger's recovery, see recoverOrder) is acked without running
// the function again. Concurrent records share a commit and its fsync.
// Async triggers keep their own records (Invocations) and write none.
//
// It reports false when ctx ended (the loop is stopping) and dl must be
// left unacknowledged (the record may or may not be stored). A record that
// cannot be written otherwise is logged and the caller acks anyway: the
// event is done, and only a lost ack would then run it again.
func (t *trigger) recordDone(ctx context.Context, dl *delivery) bool {
	if t.spec.Async {
		return true
	}
	if err := t.d.recs.record(ctx, t.name, dl.pos); err != nil {
		if ctx.Err() != nil {
			return false
		}
		if n, ok := t.recordErrs.due(time.Now()); ok {
			t.logger.Error("record delivery; a redelivery would run it again", "event", t.where(dl), "err", err, "failed_since_last_report", n)
		}
		return true
	}
	if h := t.d.onRecorded; h != nil {
		h(t, dl)
	}
	return true
}

// recordErrEvery is how often a trigger reports failing delivery records.
const recordErrEvery = 10 * time.Second

// logEvery lets a repeated error be logged once per recordErrEvery, with
// how many times it happened since the last report.
type logEvery struct {
	mu   sync.Mutex
	last time.Time
	n    int
}

// due counts one occurrence and reports whether to log it now, with the
// occurrences since the last report (this one included).
func (l *logEvery) due(now time.Time) (int, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n++
	if !l.last.IsZero() && now.Sub(l.last) < recordErrEvery {
		return 0, false
	}
	n := l.n
	l.last, l.n = now, 0
	return n, true
}

// complete records dl's success, then acks it: the record is on disk
// before the ack, so if the ack is lost in a crash the redelivery finds it
// and does not run the function again. A success is completed even when
// the loop is stopping meanwhile (Close waits for it; the commit has its
// own timeout), so that a graceful stop does not run it twice.
func (t *trigger) complete(dl *delivery) {
	t.recordDone(context.WithoutCancel(t.ctx), dl)
	t.d.nDelivered.Add(1)
	t.forget(dl.pos)
	t.ack(dl)
}

// completeLater is complete without waiting: the recorder acks dl once
// its record is on disk, and the worker goes on at once with another
// event. Waiting for the record's fsync in the worker left it busy for the
// commit's duration after its slot was free, so the next event needed a
// new goroutine. dl stays held (a redelivery meanwhile is not run) until
// it is acked.
func (t *trigger) completeLater(dl *delivery) {
	t.wg.Add(1)
	t.d.recs.recordThen(t.name, dl.pos, func(err error) {
		defer t.wg.Done()
		if err != nil {
			if n, ok := t.recordErrs.due(time.Now()); ok {
				t.logger.Error("record delivery; a redelivery would run it again", "event", t.where(dl), "err", err, "failed_since_last_report", n)
			}
		} else if h := t.d.onRecorded; h != nil {
			h(t, dl)
		}
		t.d.nDelivered.Add(1)
		t.forget(dl.pos)
		t.ack(dl)
		t.mu.Lock()
		if t.held[dl.pos] == dl {
			delete(t.held, dl.pos)
		}
		t.mu.Unlock()
	})
}

// flowDeferral reports whether err is a flow limit refusing to start an
// invocation now (a rate limit with a known wait) rather than a failure,
// and how long to wait.
func flowDeferral(err error) (time.Duration, bool) {
	var le *throttle.LimitError
	if !errors.As(err, &le) || le.Err != nil || le.RetryAfter <= 0 {
		return 0, false
	}
	return le.RetryAfter, true
}

// putOff delays dl because a flow limit refused it: it is not an attempt
// (deferred is subtracted from the attempt count), and it runs again after
// wait plus up to 10% jitter, so the events refused together do not all
// come back at the same instant.
func (t *trigger) putOff(dl *delivery, wait time.Duration) (retry bool, delay time.Duration) {
	delay = wait + time.Duration(rand.Int64N(int64(wait)/10+1))
	t.mu.Lock()
	t.deferred[dl.pos]++
	t.mu.Unlock()
	t.logger.Debug("delivery put off by flow limit", "event", t.where(dl), "retry_in", delay)
	return t.retryLater(dl, delay) // ordered: work counts it in local; deferred takes it back
}

// retryLater schedules another try at dl after delay: unordered triggers
// nak with that delay (the server keeps the schedule), ordered ones return
// retry for work to wait in process.
func (t *trigger) retryLater(dl *delivery, delay time.Duration) (retry bool, d time.Duration) {
	if t.ordered {
		return true, delay
	}
	t.nak(dl, delay)
	return false, 0
}

// forget drops what the trigger remembers of an event it is done with.
func (t *trigger) forget(pos uint64) {
	t.mu.Lock()
	delete(t.deferred, pos)
	t.mu.Unlock()
}

// where names dl's event in logs: its stream sequence, with its index
// when it is an entry of a pack.
func (t *trigger) where(dl *delivery) string {
	return formatPosition(dl.seq, PositionIndex(dl.pos), dl.pack != nil)
}

// final dead-letters dl after its last attempt (raw is the entry's data
// when it is not a CloudEvent) and terminates it. If the dead letter cannot
// be appended the event is retried later (nacked, or retry for ordered
// triggers) and comes back straight here.
func (t *trigger) final(dl *delivery, raw []byte, attempts int, cause string) (retry bool, delay time.Duration) {
	return t.finalThen(dl, raw, attempts, cause, nil)
}

// finalThen is final, calling then (when not nil) once the dead letter is
// in the log and before the delivery is acknowledged: the async queue
// writes its failed record there, so a client that reads "failed, dead
// letter X" finds the letter in X, and a crash before the record leaves
// the delivery to run again rather than a record pointing at no letter.
func (t *trigger) finalThen(dl *delivery, raw []byte, attempts int, cause string, then func()) (retry bool, delay time.Duration) {
	s := &t.spec
	if s.Topic == s.DeadLetter {
		// A trigger on the dead-letter topic itself: dead-lettering again
		// would loop.
		t.logger.Error("dead letter could not be delivered; dropped", "event", t.where(dl), "attempts", attempts, "err", cause)
		if !t.recordDone(t.ctx, dl) {
			return false, 0
		}
		t.term(dl, "dead letter not delivered")
		return false, 0
	}
	ent := t.d.deadLetterEntry(t, dl, raw, attempts, cause)
	if _, err := t.d.log.Append(t.ctx, ent); err != nil {
		if t.ctx.Err() != nil {
			return false, 0
		}
		delay := backoff(s, max(attempts, 1))
		t.logger.Error("append dead letter; will retry", "event", t.where(dl), "retry_in", delay, "err", err)
		if t.ordered && dl.event != nil {
			return true, delay
		}
		t.nak(dl, delay)
		return false, 0
	}
	if then != nil {
		then()
	}
	if !t.recordDone(t.ctx, dl) {
		return false, 0
	}
	t.d.dead.Add(1)
	t.forget(dl.pos)
	t.logger.Warn("event dead-lettered", "event", t.where(dl), "attempts", attempts, "dead_letter", s.DeadLetter, "err", cause)
	t.term(dl, "dead-lettered")
	return false, 0
}

// request is the invocation of dl: the CloudEvents HTTP binary mode
// (cloudevents.WriteRequest) as a runtime.Request, POST /, with the
// attempt and trigger headers and, when the event carries a valid
// traceparent extension, a child span of it.
func (t *trigger) request(dl *delivery, attempt int) *runtime.Request {
	e := dl.event
	// DecodeEntry validated e: only its headers are written again.
	h := make(http.Header, 10+len(e.Extensions))
	cloudevents.WriteHeaders(h, e)
	h.Set(HeaderAttempt, strconv.Itoa(attempt))
	h.Set(HeaderTrigger, t.spec.Function+"/"+t.spec.ID)
	return &runtime.Request{
		Method:      http.MethodPost,
		Path:        "/",
		Header:      h,
		Body:        e.Data,
		TraceParent: telemetry.Continue(e.Extensions["traceparent"]).String(),
	}
}

// heartbeat keeps held events alive on the server.
func (t *trigger) heartbeat() {
	tick := time.NewTicker(t.d.opts.AckWait / 3)
	defer tick.Stop()
	var msgs []jetstream.Msg
	for {
		select {
		case <-t.ctx.Done():
			return
		case <-tick.C:
		}
		msgs = msgs[:0]
		t.mu.Lock()
		for _, dl := range t.held {
			if dl.pack == nil {
				msgs = append(msgs, dl.msg)
			}
		}
		for _, p := range t.packs {
			msgs = append(msgs, p.msg)
		}
		t.mu.Unlock()
		for _, m := range msgs {
			_ = m.InProgress()
		}
	}
}

// backoff is the delay after a failed attempt (1 = the first): Backoff
// doubled per attempt, capped at MaxBackoff, with ±20% jitter (never past
// MaxBackoff).
func backoff(s *TriggerSpec, attempt int) time.Duration {
	d := s.Backoff
	for i := 1; i < attempt && d < s.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, s.MaxBackoff)
	d = time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
	return min(d, s.MaxBackoff)
}

// orderingKey is the value of an ordering key attribute of e.
func orderingKey(e *cloudevents.Event, key string) string {
	switch key {
	case "event.subject":
		return e.Subject
	case "event.source":
		return e.Source
	case "event.type":
		return e.Type
	case "event.id":
		return e.ID
	}
	return e.Extensions[strings.TrimPrefix(key, "event.")]
}
