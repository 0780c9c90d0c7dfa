package events_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/events"
	"github.com/nimbus-dev/nimbus/internal/state"
)

// Bucket triggers end to end: writes through state.Buckets, the bucket
// source's bridge, the event log, the dispatcher and a real wasm guest. A
// trigger with a key prefix gets only its keys, in write order.
func TestBucketTriggerDeliversChanges(t *testing.T) {
	t.Parallel()
	e := newEnv(t, events.DispatcherOptions{}, "orders", "all")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b := state.NewBuckets(e.st.JetStream(), quietLogger())
	// History 5: the delete of orders.eu must not drop its put before the
	// bridge read it (with history 1 a lagging bridge sees only the delete).
	if err := b.Ensure(ctx, state.BucketConfig{App: testApp, Name: "counts", History: 5}); err != nil {
		t.Fatal(err)
	}
	onBucket := func(fn, prefix string) events.TriggerSpec {
		s := spec(fn, "bucket-counts", events.BucketTopic("counts"))
		s.Filter = events.Filter{SubjectPrefix: prefix}
		s.OrderingKey = "event.subject"
		return s
	}
	e.sync(onBucket("orders", "orders."), onBucket("all", ""))
	src := events.NewBucketSource(e.st.JetStream(), e.log, events.BucketOptions{Logger: quietLogger()})
	defer src.Close(ctx)
	if err := src.Sync(ctx, testApp, []events.BucketSpec{{App: testApp, Bucket: "counts"}}); err != nil {
		t.Fatal(err)
	}

	r1, err := b.Put(ctx, testApp, "counts", "orders.eu", []byte("12"), state.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := b.Put(ctx, testApp, "counts", "users.ann", []byte("x"), state.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, testApp, "counts", "orders.eu", nil); err != nil {
		t.Fatal(err)
	}
	r3 := r2 + 1 // the delete's revision: the next write of the bucket
	id := func(fn string, rev uint64) string { return fmt.Sprintf("%s/%d", fn, rev) }
	e.waitSucceeded([]string{id("orders", r1), id("orders", r3), id("all", r1), id("all", r2), id("all", r3)})

	var order []string
	for _, c := range e.rec.snapshot() {
		if c.fn != "orders" {
			continue
		}
		if c.subject != "orders.eu" {
			t.Fatalf("the orders. trigger got key %q", c.subject)
		}
		order = append(order, c.typ)
		if c.typ == events.BucketPutType {
			body := string(c.resp.Body)
			for _, want := range []string{"ce-nimbuskvrevision=" + fmt.Sprint(r1), "ce-nimbuskvop=put",
				"ce-source=/nimbus/shop/kv/counts", "content-type=application/octet-stream"} {
				if !strings.Contains(body, want) {
					t.Fatalf("guest saw\n%s\nwithout %q", body, want)
				}
			}
			if string(c.req.Body) != "12" {
				t.Fatalf("put delivered with body %q, want the value", c.req.Body)
			}
		}
	}
	if !slices.Equal(order, []string{events.BucketPutType, events.BucketDeleteType}) {
		t.Fatalf("orders. trigger got %v, want put then delete", order)
	}
	// users.ann reached the orders. trigger too, which skipped it.
	waitFor(t, "the filter", func() error {
		if st := e.disp.Stats(); st.Filtered != 1 {
			return fmt.Errorf("filtered %d, want 1 (users.ann for the orders. trigger)", st.Filtered)
		}
		return nil
	})
}
