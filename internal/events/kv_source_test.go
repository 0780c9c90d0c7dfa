package events

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbus-dev/nimbus/internal/state"
	"github.com/nimbus-dev/nimbus/internal/store"
)

// The bucket source tests run a real embedded JetStream: a bucket made by
// state.Buckets, the source's bridge, and the event log it appends to.

// change is what a test reads back from the log: one event of a bucket.
type change struct {
	typ, op, key, value, rev string
	omitted                  string
	hasData                  bool
}

func (c change) String() string {
	s := c.op + " " + c.key
	if c.hasData {
		s += "=" + c.value
	}
	if c.omitted != "" {
		s += " (omitted " + c.omitted + ")"
	}
	return s + " @" + c.rev
}

// bucketChanges returns the events appended on a bucket's internal topic,
// in log order, checking the attributes every such event has.
func bucketChanges(t *testing.T, js jetstream.JetStream, app, bucket string) []change {
	t.Helper()
	var out []change
	for _, m := range readAll(t, js, DefaultStream) {
		if m.Subject() != SubjectFor(DefaultSubjectPrefix, app, BucketTopic(bucket)) {
			continue
		}
		e, err := DecodeEntry(m.Data())
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Validate(); err != nil {
			t.Fatalf("invalid event %s: %v", m.Data(), err)
		}
		if e.Source != BucketEventSource(app, bucket) || e.ID != e.Extensions[ExtKVRevision] || e.Time.IsZero() {
			t.Fatalf("event attributes: %s", m.Data())
		}
		c := change{typ: e.Type, op: e.Extensions[ExtKVOp], key: e.Subject, rev: e.ID,
			value: string(e.Data), hasData: e.Data != nil, omitted: e.Extensions[ExtKVOmitted]}
		wantType := BucketDeleteType
		if c.op == KVOpPut {
			wantType = BucketPutType
			if c.hasData && e.DataContentType != BucketDataContentType {
				t.Fatalf("put with datacontenttype %q", e.DataContentType)
			}
		}
		if c.typ != wantType {
			t.Fatalf("op %s with type %s", c.op, c.typ)
		}
		out = append(out, c)
	}
	return out
}

func changeStrings(cs []change) string {
	var s []string
	for _, c := range cs {
		s = append(s, c.String())
	}
	return strings.Join(s, ", ")
}

// countChanges returns how many events the bucket's topic holds. Polls use
// it rather than bucketChanges, which creates a consumer per call.
func countChanges(t *testing.T, js jetstream.JetStream, app, bucket string) int {
	t.Helper()
	subj := SubjectFor(DefaultSubjectPrefix, app, BucketTopic(bucket))
	n := 0
	for _, e := range readAll(t, js, DefaultStream) {
		if e.Subject() == subj {
			n++
		}
	}
	return n
}

func waitChanges(t *testing.T, js jetstream.JetStream, app, bucket string, want ...string) []change {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d changes of %s", len(want), bucket), func() bool {
		return countChanges(t, js, app, bucket) >= len(want)
	})
	got := bucketChanges(t, js, app, bucket)
	if g := changeStrings(got); g != strings.Join(want, ", ") {
		t.Fatalf("changes:\n got %s\nwant %s", g, strings.Join(want, ", "))
	}
	return got
}

func newBuckets(t *testing.T, st *store.Store, cfgs ...state.BucketConfig) *state.Buckets {
	t.Helper()
	b := state.NewBuckets(st.JetStream(), testLogger())
	for _, c := range cfgs {
		if err := b.Ensure(context.Background(), c); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func newBucketSource(t *testing.T, st *store.Store, l *Log, opts BucketOptions) *BucketSource {
	t.Helper()
	opts.Logger = testLogger()
	s := NewBucketSource(st.JetStream(), l, opts)
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

func put(t *testing.T, b *state.Buckets, bucket, key, value string) uint64 {
	t.Helper()
	rev, err := b.Put(context.Background(), "shop", bucket, key, []byte(value), state.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return rev
}

func r(rev uint64) string { return strconv.FormatUint(rev, 10) }

// Put, overwrite, delete, purge and expiry each become one event, in write
// order, with the revision of the write; a value too large for the log
// travels without data; a write before the trigger existed does not.
//
// The bucket keeps 10 revisions per key, so an overwrite does not drop a
// change the bridge has not read yet (see TestBucketLaggingBridgeSeesLatestPerKey);
// a purge or an expiry drops the key's revisions whatever the history, so
// the test waits for the put before them.
func TestBucketChangesBecomeEvents(t *testing.T) {
	t.Parallel()
	l, st := openLog(t, LogConfig{MaxEventBytes: 4096})
	js := st.JetStream()
	b := newBuckets(t, st, state.BucketConfig{App: "shop", Name: "counts", History: 10},
		// History 1: with more, JetStream raises a key TTL below a minute to a minute.
		state.BucketConfig{App: "shop", Name: "sessions"})
	ctx := context.Background()
	put(t, b, "counts", "old", "x") // before the trigger: not delivered
	src := newBucketSource(t, st, l, BucketOptions{})
	if err := src.Sync(ctx, "shop", []BucketSpec{{App: "shop", Bucket: "counts"}, {App: "shop", Bucket: "sessions"}}); err != nil {
		t.Fatal(err)
	}
	r1 := put(t, b, "counts", "orders.eu", "1")
	r2 := put(t, b, "counts", "orders.eu", "2")
	if err := b.Delete(ctx, "shop", "counts", "orders.eu", nil); err != nil {
		t.Fatal(err)
	}
	r4 := put(t, b, "counts", "big", strings.Repeat("v", 5000))
	r5 := put(t, b, "counts", "empty", "")
	waitFor(t, "five changes", func() bool { return countChanges(t, js, "shop", "counts") >= 5 })
	kv, err := js.KeyValue(ctx, state.BucketName("shop", "counts"))
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Purge(ctx, "empty"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "six changes", func() bool { return countChanges(t, js, "shop", "counts") >= 6 })
	got := bucketChanges(t, js, "shop", "counts")
	want := []string{
		"put orders.eu=1 @" + r(r1),
		"put orders.eu=2 @" + r(r2),
		"delete orders.eu @" + r(r2+1),
		"put big (omitted 5000) @" + r(r4),
		"put empty= @" + r(r5),
		"purge empty @" + r(r5+1),
	}
	if g := changeStrings(got); g != strings.Join(want, ", ") {
		t.Fatalf("changes:\n got %s\nwant %s", g, strings.Join(want, ", "))
	}

	// A key whose TTL runs out: the marker JetStream writes is a delete
	// with op expire. The put is normally read long before the second is
	// up; if the bridge lagged that long, the expiry removed it first.
	rt, err := b.Put(ctx, "shop", "sessions", "session", []byte("s"), state.PutOptions{TTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a change of session", func() bool { return countChanges(t, js, "shop", "sessions") >= 1 })
	expired := bucketChanges(t, js, "shop", "sessions")
	if expired[0].op == KVOpPut {
		waitFor(t, "the expiry", func() bool { return countChanges(t, js, "shop", "sessions") >= 2 })
		expired = bucketChanges(t, js, "shop", "sessions")
	}
	last := expired[len(expired)-1]
	if last.typ != BucketDeleteType || last.key != "session" || last.hasData ||
		len(expired) > 2 || len(expired) == 2 && expired[0].String() != "put session=s @"+r(rt) {
		t.Fatalf("TTL changes: %s", changeStrings(expired))
	}
}

// A stopped source and a new one on the same store: changes made while no
// bridge ran are delivered after, none lost and none twice.
func TestBucketSourceRestartLosesNothing(t *testing.T) {
	t.Parallel()
	l, st := openLog(t, LogConfig{})
	js := st.JetStream()
	b := newBuckets(t, st, state.BucketConfig{App: "shop", Name: "counts"})
	ctx := context.Background()
	specs := []BucketSpec{{App: "shop", Bucket: "counts"}}
	a := newBucketSource(t, st, l, BucketOptions{})
	if err := a.Sync(ctx, "shop", specs); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 3 {
		rev := put(t, b, "counts", "k"+strconv.Itoa(i), "a")
		want = append(want, fmt.Sprintf("put k%d=a @%d", i, rev))
	}
	waitChanges(t, js, "shop", "counts", want...)
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 3; i < 6; i++ {
		rev := put(t, b, "counts", "k"+strconv.Itoa(i), "b")
		want = append(want, fmt.Sprintf("put k%d=b @%d", i, rev))
	}
	c := newBucketSource(t, st, l, BucketOptions{})
	if err := c.Sync(ctx, "shop", specs); err != nil {
		t.Fatal(err)
	}
	rev := put(t, b, "counts", "k6", "c")
	want = append(want, fmt.Sprintf("put k6=c @%d", rev))
	waitChanges(t, js, "shop", "counts", want...)
	if d := l.Stats().Duplicates; d != 0 {
		t.Fatalf("%d duplicates appended after a clean stop", d)
	}
}

// A bridge that dies between append and ack (a crash): the next process
// (new store, log and source on the same data directory) takes the
// unacknowledged changes again at once, in order, and the log stores
// them once.
func TestBucketSourceCrashBetweenAppendAndAck(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	st := openStore(t, dir)
	l, err := OpenLog(context.Background(), st.JetStream(), LogConfig{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	b := newBuckets(t, st, state.BucketConfig{App: "shop", Name: "counts"})
	ctx := context.Background()
	specs := []BucketSpec{{App: "shop", Bucket: "counts"}}
	src := NewBucketSource(st.JetStream(), l, BucketOptions{Logger: testLogger()})
	var crashed atomic.Bool
	src.testAppended = func(BucketSpec) bool { return !crashed.CompareAndSwap(false, true) }
	if err := src.Sync(ctx, "shop", specs); err != nil {
		t.Fatal(err)
	}
	r1 := put(t, b, "counts", "a", "1")
	waitFor(t, "the crash", func() bool { return crashed.Load() })
	r2 := put(t, b, "counts", "b", "2") // never fetched by the dead bridge
	waitChanges(t, st.JetStream(), "shop", "counts", "put a=1 @"+r(r1))
	src.Close(ctx)
	l.Close(ctx)
	st.Close()

	st = openStore(t, dir)
	t.Cleanup(func() { st.Close() })
	l, err = OpenLog(ctx, st.JetStream(), LogConfig{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(context.Background()) })
	// An ack wait far beyond the test's deadline: only the reset at start
	// brings the pending change back in time.
	src = newBucketSource(t, st, l, BucketOptions{AckWait: time.Hour})
	if err := src.Sync(ctx, "shop", specs); err != nil {
		t.Fatal(err)
	}
	b = newBuckets(t, st)
	r3 := put(t, b, "counts", "c", "3")
	waitChanges(t, st.JetStream(), "shop", "counts", "put a=1 @"+r(r1), "put b=2 @"+r(r2), "put c=3 @"+r(r3))
	if d := l.Stats().Duplicates; d != 1 {
		t.Fatalf("log duplicates %d, want 1 (the change appended before the crash)", d)
	}
}

// What a bridge that lags sees of quick writes to one key: with history 1
// only the latest (JetStream dropped the others before it read them); with
// history 5 every one.
func TestBucketLaggingBridgeSeesLatestPerKey(t *testing.T) {
	t.Parallel()
	l, st := openLog(t, LogConfig{})
	js := st.JetStream()
	b := newBuckets(t, st, state.BucketConfig{App: "shop", Name: "latest"},
		state.BucketConfig{App: "shop", Name: "hist", History: 5})
	ctx := context.Background()
	specs := []BucketSpec{{App: "shop", Bucket: "latest"}, {App: "shop", Bucket: "hist"}}
	a := newBucketSource(t, st, l, BucketOptions{})
	if err := a.Sync(ctx, "shop", specs); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	var revs = map[string][]uint64{}
	for i := 1; i <= 3; i++ {
		for _, bk := range []string{"latest", "hist"} {
			revs[bk] = append(revs[bk], put(t, b, bk, "k", strconv.Itoa(i)))
		}
	}
	c := newBucketSource(t, st, l, BucketOptions{})
	if err := c.Sync(ctx, "shop", specs); err != nil {
		t.Fatal(err)
	}
	h := revs["hist"]
	waitChanges(t, js, "shop", "hist", "put k=1 @"+r(h[0]), "put k=2 @"+r(h[1]), "put k=3 @"+r(h[2]))
	waitChanges(t, js, "shop", "latest", "put k=3 @"+r(revs["latest"][2]))
}

// Sync removes the consumers of buckets no trigger uses, also ones an
// earlier process left; it refuses a bucket that does not exist and a spec
// of another app.
func TestBucketSyncRemovesConsumers(t *testing.T) {
	t.Parallel()
	l, st := openLog(t, LogConfig{})
	js := st.JetStream()
	b := newBuckets(t, st, state.BucketConfig{App: "shop", Name: "counts"},
		state.BucketConfig{App: "shop", Name: "carts"}, state.BucketConfig{App: "shopx", Name: "counts"})
	ctx := context.Background()
	hasConsumer := func(app, bucket string) bool {
		_, err := js.Consumer(ctx, bucketStream(app, bucket), BucketConsumer)
		if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			t.Fatal(err)
		}
		return err == nil
	}
	old := newBucketSource(t, st, l, BucketOptions{})
	if err := old.Sync(ctx, "shop", []BucketSpec{{App: "shop", Bucket: "counts"}, {App: "shop", Bucket: "carts"}}); err != nil {
		t.Fatal(err)
	}
	if err := old.Sync(ctx, "shopx", []BucketSpec{{App: "shopx", Bucket: "counts"}}); err != nil {
		t.Fatal(err)
	}
	old.Close(ctx) // its consumers stay, as after a crash

	src := newBucketSource(t, st, l, BucketOptions{})
	if err := src.Sync(ctx, "shop", []BucketSpec{{App: "shop", Bucket: "counts"}}); err != nil {
		t.Fatal(err)
	}
	if !hasConsumer("shop", "counts") || hasConsumer("shop", "carts") || !hasConsumer("shopx", "counts") {
		t.Fatalf("consumers: counts %v, carts %v (removed), shopx %v (other app, kept)",
			hasConsumer("shop", "counts"), hasConsumer("shop", "carts"), hasConsumer("shopx", "counts"))
	}
	put(t, b, "carts", "c", "1") // no trigger: no event
	rev := put(t, b, "counts", "n", "1")
	waitChanges(t, js, "shop", "counts", "put n=1 @"+r(rev))
	if got := bucketChanges(t, js, "shop", "carts"); len(got) != 0 {
		t.Fatalf("a bucket without trigger produced events: %s", changeStrings(got))
	}
	if err := src.Sync(ctx, "shop", nil); err != nil {
		t.Fatal(err)
	}
	if hasConsumer("shop", "counts") {
		t.Fatal("Sync(nil) left the consumer")
	}
	put(t, b, "counts", "n", "2") // no trigger: never delivered
	// A trigger added again starts afresh, after n=2.
	if err := src.Sync(ctx, "shop", []BucketSpec{{App: "shop", Bucket: "counts"}}); err != nil {
		t.Fatal(err)
	}
	rev3 := put(t, b, "counts", "n", "3")
	waitChanges(t, js, "shop", "counts", "put n=1 @"+r(rev), "put n=3 @"+r(rev3))

	if err := src.Sync(ctx, "shop", []BucketSpec{{App: "shop", Bucket: "nope"}}); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("Sync of a missing bucket: %v", err)
	}
	if err := src.Sync(ctx, "shop", []BucketSpec{{App: "other", Bucket: "counts"}}); err == nil {
		t.Fatal("Sync accepted a bucket of another app")
	}
	if err := src.Sync(ctx, "shop", []BucketSpec{{App: "shop", Bucket: "Bad_Name"}}); err == nil {
		t.Fatal("Sync accepted an invalid bucket name")
	}
	if err := src.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := src.Sync(ctx, "shop", nil); !errors.Is(err, ErrBucketSourceClosed) {
		t.Fatalf("Sync after Close: %v", err)
	}
}

func TestBucketEventFormat(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 23, 12, 0, 0, 5, time.FixedZone("x", 3600))
	e := BucketEvent("shop", "counts", "orders.eu", KVOpPut, 42, at, []byte{0, 1, 2})
	if err := e.Validate(); err != nil {
		t.Fatal(err)
	}
	back, err := DecodeEntry(e.AppendJSON(nil))
	if err != nil {
		t.Fatal(err)
	}
	if back.ID != "42" || back.Type != BucketPutType || back.Subject != "orders.eu" || back.Source != "/nimbus/shop/kv/counts" ||
		!back.Time.Equal(at) || back.Extensions[ExtKVRevision] != "42" || back.Extensions[ExtKVOp] != KVOpPut ||
		!bytes.Equal(back.Data, []byte{0, 1, 2}) || back.DataContentType != BucketDataContentType {
		t.Fatalf("put event: %+v", back)
	}
	d := BucketEvent("shop", "counts", "orders.eu", KVOpDelete, 43, at, []byte("ignored"))
	if d.Type != BucketDeleteType || d.Data != nil || d.DataContentType != "" || d.Extensions[ExtKVOp] != KVOpDelete {
		t.Fatalf("delete event: %+v", d)
	}
}
