package events

import (
	"context"
	"strings"
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

// TestDeliveryRecordsMadeDurable opens a dispatcher on a store where an
// earlier version left the delivery records in async persist mode (which a
// stream update cannot change): the stream is replaced by a synchronous
// one that the commit path writes.
func TestDeliveryRecordsMadeDurable(t *testing.T) {
	t.Parallel()
	l, s := openLog(t, LogConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := s.JetStream()
	name := "KV_" + DeliveredBucket
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: name, Subjects: []string{"$KV." + DeliveredBucket + ".>"}, MaxMsgsPerSubject: 1,
		Storage: jetstream.FileStorage, AllowDirect: true, PersistMode: jetstream.AsyncPersistMode,
	}); err != nil {
		t.Fatal(err)
	}
	d := NewDispatcher(js, l, nil, DispatcherOptions{Logger: testLogger()})
	for range 2 { // the second open finds the new stream and keeps it
		d.delivered, d.records = nil, nil
		if err := d.openRecords(ctx); err != nil {
			t.Fatal(err)
		}
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if m := st.CachedInfo().Config.PersistMode; m != jetstream.DefaultPersistMode {
			t.Fatalf("delivery records persist mode %v, want default (synchronous)", m)
		}
		tr := &trigger{d: d, name: "c", spec: TriggerSpec{}, ctx: ctx, logger: testLogger()}
		if !tr.recordDone(ctx, &delivery{seq: 7, msgID: "m"}) {
			t.Fatal("record not written")
		}
		if _, err := d.delivered.Get(ctx, "c.m"); err != nil {
			t.Fatalf("record: %v", err)
		}
	}
}
