package events

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
	"github.com/nimbus-dev/nimbus/internal/state"
)

// Bucket trigger constants.
const (
	// BucketPutType is the type of the event of a put.
	BucketPutType = "dev.nimbus.kv.put"
	// BucketDeleteType is the type of the event of a delete, a purge or an
	// expiry; ExtKVOp says which.
	BucketDeleteType = "dev.nimbus.kv.delete"

	// ExtKVRevision is the extension carrying the change's revision: the
	// sequence of the write in the bucket's stream, which is what a
	// compare-and-swap takes.
	ExtKVRevision = "nimbuskvrevision"
	// ExtKVOp is the extension naming the operation: KVOpPut, KVOpDelete,
	// KVOpPurge or KVOpExpire.
	ExtKVOp = "nimbuskvop"
	// ExtKVOmitted is set, to the value's size in bytes, on the event of a
	// put whose value was too large to travel in the event: the event has
	// no data, and the function reads the key.
	ExtKVOmitted = "nimbuskvomitted"

	// BucketDataContentType is the datacontenttype of a put's event: a
	// value is bytes; the function knows what its bucket holds.
	BucketDataContentType = "application/octet-stream"

	// BucketConsumer is the durable name of the bridge's consumer on a
	// bucket's stream (one per bucket, so a constant name).
	BucketConsumer = "nimbus_bucket_triggers"
	// DefaultBucketBatch is how many changes the bridge forwards in one
	// Log.Append at most.
	DefaultBucketBatch = 100
	// bucketFetchWait is how long one pull request waits on the server.
	bucketFetchWait = 5 * time.Second
	// bucketAppendTimeout bounds one Append of a batch (the Log bounds a
	// commit with its own CommitTimeout; this also bounds a wait for room
	// in its queue).
	bucketAppendTimeout = 30 * time.Second
	// bucketRetryMin and bucketRetryMax bound the delay before a failed
	// append or fetch is tried again.
	bucketRetryMin = time.Second
	bucketRetryMax = time.Minute
)

// The operations ExtKVOp names.
const (
	KVOpPut    = "put"
	KVOpDelete = "delete" // a delete (KV-Operation DEL)
	KVOpPurge  = "purge"  // a purge: the key and its history removed (KV-Operation PURGE)
	KVOpExpire = "expire" // the key's TTL ran out (a marker JetStream wrote)
)

// Metadata keys of a bridge's consumer.
const metaBucket = "nimbus.bucket"

// BucketTopic is the internal topic the changes of an app bucket are
// appended to: "_kv_<bucket>". Bucket names are DNS labels, so it is one
// subject token, and no user topic starts with '_'.
func BucketTopic(bucket string) string { return "_kv_" + bucket }

// BucketEventSource returns the CloudEvents source of a bucket's changes:
// "/nimbus/<app>/kv/<bucket>".
func BucketEventSource(app, bucket string) string { return "/nimbus/" + app + "/kv/" + bucket }

// bucketStream is the JetStream stream of an app bucket: JetStream names a
// KV bucket's stream "KV_" + the bucket's name.
func bucketStream(app, bucket string) string { return "KV_" + state.BucketName(app, bucket) }

// BucketSpec is one bucket of an active app with at least one bucket
// trigger on it.
type BucketSpec struct {
	App, Bucket string
}

func (s BucketSpec) validate(app string) error {
	if s.App != app {
		return fmt.Errorf("bucket %s: app %q, want %q", s.Bucket, s.App, app)
	}
	if !state.ValidName(s.App) || !state.ValidName(s.Bucket) {
		return fmt.Errorf("bucket %s/%s: app and bucket names are DNS labels", s.App, s.Bucket)
	}
	return nil
}

// BucketOptions configure a BucketSource. The zero value is usable.
type BucketOptions struct {
	// Logger receives failed appends and fetches. Optional: default
	// slog.Default().
	Logger *slog.Logger
	// BatchSize is how many changes one Append carries at most; it is also
	// the consumer's MaxAckPending. Optional: default 100, at most the
	// Log's MaxBatch.
	BatchSize int
	// AckWait is the consumer's ack wait: after a crash, changes that were
	// in flight come back after it unless the next start resets the
	// consumer (it does, see BucketSource). Optional: default 30s.
	AckWait time.Duration
}

// BucketSource turns bucket changes into events: the source of bucket
// triggers.
//
// # How a change is delivered
//
// Like a cron firing, a change is not an invocation but an event APPENDED to
// the event log, on the app's internal topic BucketTopic(bucket); each bucket
// trigger is an ordinary topic trigger on that topic (TriggerSpec with
// Filter.SubjectPrefix = the trigger's key prefix) that the caller registers
// with the Dispatcher. Retries, dead letters and at-least-once delivery are
// the Dispatcher's.
//
// # The bridge
//
// For each bucket with a trigger, one bridge: a durable pull consumer
// (BucketConsumer) on the bucket's stream, explicit ack, DeliverNew when it
// is created (a trigger sees the changes made after it was deployed), then
// resuming at its ack floor, also across restarts. The bridge fetches up to
// BatchSize changes, appends their events in one Log.Append (one commit),
// and acks them only then. A change is thus in the log before it leaves
// the bucket's consumer: nothing is lost by a crash. The entry's MsgID is
// derived from the bucket's stream (its name and creation time) and the
// change's stream sequence, so a change appended again after a crash
// between append and ack is stored once (within the log's duplicate window).
//
// Order: MaxAckPending is BatchSize, so one batch at a time is in flight,
// and changes reach the log in the bucket's write order. After a crash the
// changes of the interrupted batch are still pending on the server; the next
// start resets the consumer to its ack floor (JetStream's consumer reset)
// so they come back at once and in order, rather than after AckWait behind
// later ones.
//
// # The event
//
// specversion 1.0; type BucketPutType or BucketDeleteType; source
// BucketEventSource(app, bucket); subject the key; id the change's revision
// in decimal (unique per bucket: a bucket deleted and created again starts
// over); time the write's time; extensions ExtKVRevision (the revision) and
// ExtKVOp. A put carries the value as data (BucketDataContentType), or, when
// the event would exceed the log's MaxEventBytes, no data and ExtKVOmitted.
//
// # What a trigger sees of quick successive writes
//
// JetStream keeps History revisions per key (1 by default) and drops older
// ones as new ones are written. A change dropped before the bridge read it
// is never seen: if the bridge lags (a restart, a burst, a slow log), several
// writes to one key may arrive as one change, the latest. Every key's latest
// state is always delivered; intermediate values are delivered only if
// still kept. A bucket with history N keeps up to N writes per key for the
// bridge to read.
type BucketSource struct {
	js     jetstream.JetStream
	log    *Log
	opts   BucketOptions
	logger *slog.Logger

	mu      sync.Mutex               // serializes Sync and Close; held while bridges start and stop
	bridges map[string]*bucketBridge // bucket stream -> running bridge
	closed  bool

	// testAppended, when set, is called after a batch was appended and
	// before it is acked; returning false ends the bridge there (a crash).
	testAppended func(BucketSpec) bool
}

// bucketBridge is one bucket's goroutine; halt ends it and waits.
type bucketBridge struct {
	spec    BucketSpec
	stream  string // KV_nimbus_kv_<app>_<bucket>
	keyPre  string // "$KV.nimbus_kv_<app>_<bucket>." : the subject prefix of keys
	idBase  string // stream name and creation time: what the MsgIDs hash
	subject string // the log subject of the bucket's topic
	cons    jetstream.Consumer
	logger  *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

// ErrBucketSourceClosed is returned by BucketSource.Sync after Close.
var ErrBucketSourceClosed = errors.New("events: bucket trigger source is closed")

// NewBucketSource returns a BucketSource appending changes to log (on js's
// stream). It starts nothing until Sync.
func NewBucketSource(js jetstream.JetStream, log *Log, opts BucketOptions) *BucketSource {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = DefaultBucketBatch
	}
	opts.BatchSize = min(opts.BatchSize, log.maxBatch)
	if opts.AckWait <= 0 {
		opts.AckWait = DefaultAckWait
	}
	return &BucketSource{
		js: js, log: log, opts: opts,
		logger:  opts.Logger.With("component", "events.kv"),
		bridges: map[string]*bucketBridge{},
	}
}

// Sync makes the app's bridges match specs: it starts one for each bucket
// listed that has none (creating its consumer, or resuming it), and stops
// the bridges of, and deletes the consumers on, the app's other buckets
// (also those left by an earlier process). Sync(ctx, app, nil) removes them
// all. A bucket listed must exist (state.Buckets.Ensure).
func (s *BucketSource) Sync(ctx context.Context, app string, specs []BucketSpec) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrBucketSourceClosed
	}
	want := map[string]BucketSpec{}
	for _, sp := range specs {
		if err := sp.validate(app); err != nil {
			return fmt.Errorf("sync bucket triggers of %s: %w", app, err)
		}
		want[bucketStream(sp.App, sp.Bucket)] = sp // listing a bucket twice is harmless
	}

	var errs []error
	for stream, sp := range want {
		if b := s.bridges[stream]; b != nil {
			select {
			case <-b.done: // ended (a test crash): start again
			default:
				continue
			}
		}
		b, err := s.open(ctx, sp)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.bridges[stream] = b
		go s.run(b)
	}
	for stream, b := range s.bridges {
		if _, ok := want[stream]; !ok && b.spec.App == app {
			b.halt()
			delete(s.bridges, stream)
		}
	}

	// Delete the consumers on the app's buckets without triggers, running
	// here or left over, so they stop holding changes. App and bucket names
	// are DNS labels (no '_'), so the prefix selects exactly this app's.
	prefix := bucketStream(app, "")
	names := s.js.StreamNames(ctx)
	var stale []string
	for name := range names.Name() {
		if _, ok := want[name]; !ok && strings.HasPrefix(name, prefix) && state.ValidName(name[len(prefix):]) {
			stale = append(stale, name)
		}
	}
	if err := names.Err(); err != nil {
		errs = append(errs, fmt.Errorf("sync bucket triggers of %s: list buckets: %w", app, err))
	}
	for _, name := range stale {
		if err := s.js.DeleteConsumer(ctx, name, BucketConsumer); err != nil &&
			!errors.Is(err, jetstream.ErrConsumerNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound) {
			errs = append(errs, fmt.Errorf("sync bucket triggers of %s: delete consumer on %s: %w", app, name, err))
		}
	}
	return errors.Join(errs...)
}

// open creates (or resumes) the consumer of a bucket and returns its bridge,
// not started.
func (s *BucketSource) open(ctx context.Context, sp BucketSpec) (*bucketBridge, error) {
	stream := bucketStream(sp.App, sp.Bucket)
	st, err := s.js.Stream(ctx, stream)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("bucket trigger on %s/%s: the bucket does not exist: declare it under buckets: in nimbus.yaml and deploy", sp.App, sp.Bucket)
		}
		return nil, fmt.Errorf("bucket trigger on %s/%s: %w", sp.App, sp.Bucket, err)
	}
	info := st.CachedInfo()
	kvName := state.BucketName(sp.App, sp.Bucket)
	cons, err := st.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       BucketConsumer,
		Description:   fmt.Sprintf("Nimbus bucket triggers of %s/%s: changes to topic %s", sp.App, sp.Bucket, BucketTopic(sp.Bucket)),
		FilterSubject: "$KV." + kvName + ".>",
		DeliverPolicy: jetstream.DeliverNewPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.opts.AckWait,
		MaxDeliver:    -1,
		// One batch in flight: changes reach the log in write order.
		MaxAckPending: s.opts.BatchSize,
		Metadata:      map[string]string{metaApp: sp.App, metaBucket: sp.Bucket},
	})
	if err != nil {
		return nil, fmt.Errorf("bucket trigger on %s/%s: consumer: %w", sp.App, sp.Bucket, err)
	}
	logger := s.logger.With("app", sp.App, "bucket", sp.Bucket)
	if ci := cons.CachedInfo(); ci.NumAckPending > 0 {
		// Changes taken by a process that died before acking them: have
		// them delivered again now, in order, rather than after AckWait
		// behind newer ones. They were perhaps appended already; their
		// MsgIDs make that harmless.
		if _, err := s.js.ResetConsumer(ctx, stream, BucketConsumer); err != nil {
			logger.Warn("bucket trigger consumer not reset; changes left in flight come back after the ack wait",
				"pending", ci.NumAckPending, "ack_wait", s.opts.AckWait, "error", err)
		}
	}
	bctx, cancel := context.WithCancel(context.Background())
	return &bucketBridge{
		spec:    sp,
		stream:  stream,
		keyPre:  "$KV." + kvName + ".",
		idBase:  stream + "\x00" + strconv.FormatInt(info.Created.UnixNano(), 10),
		subject: SubjectFor(s.log.prefix, sp.App, BucketTopic(sp.Bucket)),
		cons:    cons,
		logger:  logger,
		ctx:     bctx,
		cancel:  cancel,
		done:    make(chan struct{}),
	}, nil
}

// Close stops every bridge and waits for them; ctx bounds the wait. A bridge
// in the middle of an append finishes it and acks.
func (s *BucketSource) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	bridges := s.bridges
	s.bridges = map[string]*bucketBridge{}
	s.mu.Unlock()
	for _, b := range bridges {
		b.cancel()
	}
	for _, b := range bridges {
		select {
		case <-b.done:
		case <-ctx.Done():
			return fmt.Errorf("close bucket trigger source: %w", ctx.Err())
		}
	}
	return nil
}

func (b *bucketBridge) halt() {
	b.cancel()
	<-b.done
}

// run is a bridge's loop: fetch, append, ack.
func (s *BucketSource) run(b *bucketBridge) {
	defer close(b.done)
	retry := bucketRetryMin
	for b.ctx.Err() == nil {
		// The deadline makes the server end the pull a little before it
		// (FetchContext), so a timeout never drops a message in transit.
		fctx, cancel := context.WithTimeout(b.ctx, bucketFetchWait)
		batch, err := b.cons.Fetch(s.opts.BatchSize, jetstream.FetchContext(fctx))
		if err != nil {
			cancel()
			if b.ctx.Err() != nil {
				return
			}
			b.logger.Warn("bucket trigger fetch failed; retrying", "retry_in", retry, "error", err)
			if !b.sleep(retry) {
				return
			}
			retry = min(2*retry, bucketRetryMax)
			continue
		}
		retry = bucketRetryMin
		// Forward what arrived together as one batch, then go on reading
		// the same pull: batches grow with the write rate, and a lone
		// change is forwarded at once.
		msgs := batch.Messages()
		open := true
		for open {
			m, ok := <-msgs
			if !ok {
				break
			}
			group := []jetstream.Msg{m}
		drain:
			for len(group) < s.opts.BatchSize {
				select {
				case m, ok := <-msgs:
					if !ok {
						open = false
						break drain
					}
					group = append(group, m)
				default:
					break drain
				}
			}
			if !s.forward(b, group) {
				cancel()
				return
			}
		}
		cancel()
		if err := batch.Error(); err != nil && b.ctx.Err() == nil {
			if !errors.Is(err, context.DeadlineExceeded) {
				b.logger.Warn("bucket trigger fetch ended with an error", "error", err)
			}
			// A pull cut short may have dropped changes the server sent.
			s.resendLost(b)
		}
	}
}

// resendLost resets the consumer to its ack floor if changes are pending on
// it. Called between batches, when the bridge holds nothing unacked, so
// pending changes were sent by the server and lost on the way (a pull cut
// short): without the reset they would come back only after AckWait, behind
// newer ones.
func (s *BucketSource) resendLost(b *bucketBridge) {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	info, err := b.cons.Info(ctx)
	if err != nil || info.NumAckPending == 0 {
		return
	}
	if _, err := s.js.ResetConsumer(ctx, b.stream, BucketConsumer); err != nil && b.ctx.Err() == nil {
		b.logger.Warn("bucket trigger consumer not reset; lost changes come back after the ack wait",
			"pending", info.NumAckPending, "ack_wait", s.opts.AckWait, "error", err)
	}
}

// sleep waits d or until the bridge stops; false means stopped.
func (b *bucketBridge) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-b.ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// forward appends the events of msgs, retrying until it succeeds or the
// bridge stops, then acks them. It returns false if the bridge must end.
func (s *BucketSource) forward(b *bucketBridge, msgs []jetstream.Msg) bool {
	entries := make([]Entry, 0, len(msgs))
	keep := msgs[:0:0]
	for _, m := range msgs {
		ent, err := s.changeEntry(b, m)
		if err != nil {
			// Not a change a bucket can hold (a message published on the
			// stream by hand): skip it rather than stop the bucket.
			b.logger.Error("bucket trigger skipped a message", "subject", m.Subject(), "error", err)
			m.Ack()
			continue
		}
		entries = append(entries, ent)
		keep = append(keep, m)
	}
	msgs = keep
	retry := bucketRetryMin
	for len(entries) > 0 {
		// Not b.ctx: a stop lets the append in flight finish, so its
		// changes are acked rather than appended again by the next start.
		actx, cancel := context.WithTimeout(context.Background(), bucketAppendTimeout)
		_, err := s.log.Append(actx, entries...)
		cancel()
		if err == nil {
			break
		}
		var ee *EntryError
		if errors.As(err, &ee) {
			// Cannot happen for an entry changeEntry built (its size is
			// checked); never let one block the bucket.
			b.logger.Error("bucket trigger dropped a change the log refused", "subject", msgs[ee.Index].Subject(), "error", err)
			msgs[ee.Index].Ack()
			entries = append(entries[:ee.Index], entries[ee.Index+1:]...)
			msgs = append(msgs[:ee.Index], msgs[ee.Index+1:]...)
			continue
		}
		b.logger.Error("bucket trigger append failed; retrying", "changes", len(entries), "retry_in", retry, "error", err)
		if !b.sleep(retry) {
			return false // not acked: the next start resets the consumer and appends them again
		}
		retry = min(2*retry, bucketRetryMax)
		for _, m := range msgs {
			m.InProgress()
		}
	}
	if s.testAppended != nil && !s.testAppended(b.spec) {
		return false
	}
	if len(msgs) == 0 {
		return true
	}
	for _, m := range msgs[:len(msgs)-1] {
		m.Ack()
	}
	// The last ack waits for the server, so acks are recorded before the
	// next pull and before Close returns. A lost ack only means the batch
	// is appended again (and deduplicated).
	actx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := msgs[len(msgs)-1].DoubleAck(actx); err != nil {
		b.logger.Warn("bucket trigger ack not confirmed", "error", err)
	}
	return true
}

// changeEntry is the log entry of the change in m.
func (s *BucketSource) changeEntry(b *bucketBridge, m jetstream.Msg) (Entry, error) {
	meta, err := m.Metadata()
	if err != nil {
		return Entry{}, fmt.Errorf("metadata: %w", err)
	}
	key, ok := strings.CutPrefix(m.Subject(), b.keyPre)
	if !ok || key == "" {
		return Entry{}, fmt.Errorf("subject outside the bucket")
	}
	e := BucketEvent(b.spec.App, b.spec.Bucket, key, kvOp(m.Headers()), meta.Sequence.Stream, meta.Timestamp, m.Data())
	h := sha256.Sum256(fmt.Appendf(nil, "kv\x00%s\x00%d", b.idBase, meta.Sequence.Stream))
	ent := Entry{Subject: b.subject, MsgID: hex.EncodeToString(h[:])}
	ent.Data = e.AppendJSON(make([]byte, 0, 256+len(e.Data)*4/3))
	if e.Data != nil && len(ent.Data)+len(nats.MsgIdHdr)+len(ent.MsgID)+4 > s.log.MaxEventBytes() {
		e.Data, e.DataContentType = nil, ""
		e.Extensions[ExtKVOmitted] = strconv.Itoa(len(m.Data()))
		ent.Data = e.AppendJSON(nil)
	}
	return ent, nil
}

// kvOp is the operation of a message on a KV stream, from its headers: a
// KV-Operation set by a delete or purge, or the reason of a marker the
// server wrote (a key whose TTL ran out).
func kvOp(h nats.Header) string {
	switch h.Get("KV-Operation") {
	case "DEL":
		return KVOpDelete
	case "PURGE":
		return KVOpPurge
	}
	switch h.Get(jetstream.MarkerReasonHeader) {
	case "MaxAge":
		return KVOpExpire
	case "Purge":
		return KVOpPurge
	case "Remove":
		return KVOpDelete
	}
	return KVOpPut
}

// BucketEvent is the event of one change to an app bucket: op is KVOpPut
// (value is the new value) or another KVOp* (value ignored), revision the
// change's stream sequence, at the time of the write.
func BucketEvent(app, bucket, key, op string, revision uint64, at time.Time, value []byte) *cloudevents.Event {
	rev := strconv.FormatUint(revision, 10)
	e := &cloudevents.Event{
		SpecVersion: cloudevents.SpecVersion,
		ID:          rev,
		Source:      BucketEventSource(app, bucket),
		Type:        BucketDeleteType,
		Subject:     key,
		Time:        at.UTC(),
		Extensions:  map[string]string{ExtKVRevision: rev, ExtKVOp: op},
	}
	if op == KVOpPut {
		e.Type, e.DataContentType = BucketPutType, BucketDataContentType
		e.Data = value
		if e.Data == nil {
			e.Data = []byte{} // an empty value is still a value
		}
	}
	return e
}
