package events

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

	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
)

func TestBackoff(t *testing.T) {
	t.Parallel()
	s := TriggerSpec{Backoff: time.Second, MaxBackoff: 10 * time.Second}
	for _, c := range []struct {
		attempt int
		base    time.Duration
	}{{1, time.Second}, {2, 2 * time.Second}, {3, 4 * time.Second}, {4, 8 * time.Second}, {5, 10 * time.Second}, {40, 10 * time.Second}} {
		for range 50 {
			d := backoff(&s, c.attempt)
			lo, hi := time.Duration(float64(c.base)*0.8), min(time.Duration(float64(c.base)*1.2), s.MaxBackoff)
			if d < lo || d > hi {
				t.Fatalf("backoff(attempt %d) = %v, want in [%v, %v]", c.attempt, d, lo, hi)
			}
		}
	}
}

func TestFilterAndOrderingKey(t *testing.T) {
	t.Parallel()
	e := &cloudevents.Event{ID: "1", Source: "/s", Type: "t", Subject: "eu/1", Extensions: map[string]string{"tenant": "x"}}
	for _, c := range []struct {
		f    Filter
		want bool
	}{
		{Filter{}, true},
		{Filter{Type: "t"}, true},
		{Filter{Type: "u"}, false},
		{Filter{Source: "/s", SubjectPrefix: "eu/"}, true},
		{Filter{SubjectPrefix: "us/"}, false},
	} {
		if got := c.f.Match(e); got != c.want {
			t.Errorf("%+v.Match = %v", c.f, got)
		}
	}
	if (Filter{SubjectPrefix: "eu"}).Match(&cloudevents.Event{}) {
		t.Error("an event without subject matched a subject prefix")
	}
	for key, want := range map[string]string{"event.subject": "eu/1", "event.source": "/s", "event.type": "t", "event.id": "1", "event.tenant": "x", "event.missing": ""} {
		if got := orderingKey(e, key); got != want {
			t.Errorf("orderingKey(%s) = %q, want %q", key, got, want)
		}
	}
}

func TestEventEntryRoundTrip(t *testing.T) {
	t.Parallel()
	e := &cloudevents.Event{SpecVersion: "1.0", ID: "a1", Source: "/orders", Type: "order.created", Subject: "eu/1",
		DataContentType: "application/json", Data: []byte(`{"n":1}`), Extensions: map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}
	ent := EventEntry("shop", "orders", e)
	if ent.Subject != "nimbus.events.shop.orders" || ent.MsgID != IdempotencyKey(e) || len(ent.MsgID) != 64 || ent.Header != nil {
		t.Fatalf("entry %+v", ent)
	}
	got, err := DecodeEntry(ent.Data)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != e.ID || got.Source != e.Source || string(got.Data) != string(e.Data) || got.Extensions["traceparent"] != e.Extensions["traceparent"] {
		t.Fatalf("round trip: %+v", got)
	}
	// The key separates source and id, so ("a","bc") and ("ab","c") differ.
	if IdempotencyKey(&cloudevents.Event{Source: "a", ID: "bc"}) == IdempotencyKey(&cloudevents.Event{Source: "ab", ID: "c"}) {
		t.Fatal("idempotency keys collide")
	}
	if _, err := DecodeEntry([]byte("not json")); err == nil {
		t.Fatal("decoded garbage")
	}
}

func TestConsumerName(t *testing.T) {
	t.Parallel()
	a := consumerName(TriggerSpec{App: "shop", Function: "count", ID: "0", Topic: "orders"})
	b := consumerName(TriggerSpec{App: "shop", Function: "count", ID: "0", Topic: "payments"})
	c := consumerName(TriggerSpec{App: "shop", Function: "count", ID: "weird id/with.dots*", Topic: "orders"})
	if a == b {
		t.Fatal("a trigger moved to another topic keeps its consumer")
	}
	for _, n := range []string{a, b, c} {
		if strings.ContainsAny(n, ".*> /\\\t") || len(n) > 100 {
			t.Fatalf("consumer name %q is not a valid durable name", n)
		}
	}
}

// TestDeliveryRecordsReplaceTheOldBucket opens a dispatcher on a store
// where an earlier version kept the delivery records as a KV bucket (one
// key per delivery): the bucket is deleted, and records go to packs that
// a lookup finds.
func TestDeliveryRecordsReplaceTheOldBucket(t *testing.T) {
	t.Parallel()
	l, s := openLog(t, LogConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := s.JetStream()
	old := "KV_" + oldDeliveredBucket
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: old, Subjects: []string{"$KV." + oldDeliveredBucket + ".>"}, MaxMsgsPerSubject: 1,
		Storage: jetstream.FileStorage, AllowDirect: true, PersistMode: jetstream.AsyncPersistMode,
	}); err != nil {
		t.Fatal(err)
	}
	d := NewDispatcher(js, l, nil, DispatcherOptions{Logger: testLogger()})
	for i := range 2 { // the second open finds the records stream and keeps it
		d.recs, d.records = nil, nil
		if err := d.openRecords(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := js.Stream(ctx, old); !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Fatalf("old records bucket: %v, want it deleted", err)
		}
		st, err := js.Stream(ctx, RecordsStream)
		if err != nil {
			t.Fatal(err)
		}
		if m := st.CachedInfo().Config.PersistMode; m != jetstream.DefaultPersistMode {
			t.Fatalf("delivery records persist mode %v, want default (synchronous)", m)
		}
		tr := &trigger{d: d, name: "c", spec: TriggerSpec{}, ctx: ctx, logger: testLogger()}
		seq := uint64(7 + i)
		if !tr.recordDone(ctx, &delivery{seq: seq, pos: Position(seq, 0)}) {
			t.Fatal("record not written")
		}
		for _, want := range []uint64{7, seq} {
			if ok, err := d.recs.done(ctx, "c", Position(want, 0)); err != nil || !ok {
				t.Fatalf("record of %d: %v, %v; want found", want, ok, err)
			}
		}
		if ok, err := d.recs.done(ctx, "c", Position(100, 0)); err != nil || ok {
			t.Fatalf("record of 100: %v, %v; want none", ok, err)
		}
		if ok, err := d.recs.done(ctx, "other", Position(seq, 0)); err != nil || ok {
			t.Fatalf("record of another consumer: %v, %v; want none", ok, err)
		}
	}
}

// TestRecordPacks checks the packs' encoding and the records' lookups:
// many concurrent records share packs, every one is found, a pack larger
// than a write splits, and a lookup reads the packs written after its
// index was loaded.
func TestRecordPacks(t *testing.T) {
	t.Parallel()
	for _, seqs := range [][]uint64{{1}, {1, 2, 3}, {5, 900, 1 << 40, 1<<40 + 1}} {
		b, n := appendPack(nil, seqs, 1<<20)
		if n != len(seqs) {
			t.Fatalf("appendPack took %d of %v", n, seqs)
		}
		p, err := decodePack(b)
		if err != nil || !slices.Equal(p.seqs, seqs) || p.lo != seqs[0] || p.hi != seqs[len(seqs)-1] {
			t.Fatalf("decodePack(appendPack(%v)) = %+v, %v", seqs, p, err)
		}
	}
	if b, n := appendPack(nil, []uint64{1, 2, 3, 300, 301}, 3); n != 3 || len(b) != 3 {
		t.Fatalf("appendPack with room for 3 bytes took %d in %d bytes", n, len(b))
	}
	if _, n := appendPack(nil, []uint64{1 << 40}, 1); n != 1 {
		t.Fatalf("appendPack took %d of a sequence larger than max; want it anyway", n)
	}
	if _, err := decodePack([]byte{0x80}); err == nil {
		t.Fatal("decodePack of a truncated varint: no error")
	}

	l, s := openLog(t, LogConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d := NewDispatcher(s.JetStream(), l, nil, DispatcherOptions{Logger: testLogger()})
	if err := d.openRecords(ctx); err != nil {
		t.Fatal(err)
	}
	const n = 2000
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := d.recs.record(ctx, fmt.Sprint("c", i%3), uint64(i+1)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	st, err := s.JetStream().Stream(ctx, RecordsStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs >= n {
		t.Fatalf("%d records made %d messages: not packed", n, info.State.Msgs)
	}
	t.Logf("%d records in %d messages", n, info.State.Msgs)
	for i := range n {
		if ok, err := d.recs.done(ctx, fmt.Sprint("c", i%3), uint64(i+1)); err != nil || !ok {
			t.Fatalf("record %d: %v, %v", i+1, ok, err)
		}
		if ok, _ := d.recs.done(ctx, fmt.Sprint("c", (i+1)%3), uint64(i+1)); ok {
			t.Fatalf("record %d found for another consumer", i+1)
		}
	}
	// A record written after the index was read is found: the miss reads on.
	if err := d.recs.record(ctx, "c0", n+1); err != nil {
		t.Fatal(err)
	}
	if ok, err := d.recs.done(ctx, "c0", n+1); err != nil || !ok {
		t.Fatalf("record written after the index: %v, %v", ok, err)
	}
	// A pack larger than one write is split and still found whole.
	d.recs.maxPack = 1000
	big := make([]uint64, 0, 1000)
	for i := range cap(big) {
		big = append(big, uint64(10_000+i*1_000_000))
	}
	if err := d.recs.commit(map[string][]uint64{"big": big}); err != nil {
		t.Fatal(err)
	}
	for _, seq := range big {
		if ok, err := d.recs.done(ctx, "big", seq); err != nil || !ok {
			t.Fatalf("record %d of a split pack: %v, %v", seq, ok, err)
		}
	}
	if idx := d.recs.index("big"); len(idx.packs) < 3 {
		t.Fatalf("a pack of %d sequences in %d messages of 1000 bytes: not split", len(big), len(idx.packs))
	}
}

// TestLogEvery: a repeated error is reported once per recordErrEvery with
// how many times it happened (a full disk fails every delivery record).
func TestLogEvery(t *testing.T) {
	var l logEvery
	t0 := time.Unix(1000, 0)
	if n, ok := l.due(t0); !ok || n != 1 {
		t.Fatalf("first: %d %v", n, ok)
	}
	for i := range 5 {
		if _, ok := l.due(t0.Add(time.Duration(i) * time.Second)); ok {
			t.Fatalf("reported again %ds after", i)
		}
	}
	if n, ok := l.due(t0.Add(recordErrEvery)); !ok || n != 6 {
		t.Fatalf("after the interval: %d %v, want 6 true", n, ok)
	}
}
