package events_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/nimbus-dev/nimbus/internal/events"
	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
)

// TestPackSettlesEachEventOnItsOwn: one Append of many events is one
// pack; its events that succeed run once, its failing ones are retried
// (the pack comes back, and what was done is skipped by its records), a
// filtered one never runs, and once every event is done the pack is
// acknowledged: nothing is pending on the consumer.
func TestPackSettlesEachEventOnItsOwn(t *testing.T) {
	t.Parallel()
	for _, ordered := range []bool{false, true} {
		t.Run(fmt.Sprint("ordered=", ordered), func(t *testing.T) {
			e := newEnv(t, events.DispatcherOptions{Concurrency: 4}, "a")
			s := spec("a", "0", "orders")
			s.MaxAttempts = 3
			s.Filter = events.Filter{Source: "/test"}
			if ordered {
				s.OrderingKey = "event.subject"
			}
			e.sync(s)
			var evs []*cloudevents.Event
			for i := range 40 {
				evs = append(evs, event(fmt.Sprint("ok", i), "ok", fmt.Sprint("k", i%5)))
			}
			evs = slices.Insert(evs, 7, event("flaky", "flaky", "k2", "failtimes", "2"))
			evs = slices.Insert(evs, 20, event("poison", "fail", "k3"))
			other := event("filtered", "ok", "k1")
			other.Source = "/elsewhere"
			evs = slices.Insert(evs, 30, other)
			before := e.log.Stats()
			e.publish("orders", evs...)
			if st := e.log.Stats(); st.Packs != before.Packs+1 || st.Messages != before.Messages+1 {
				t.Fatalf("log stats %+v after %+v: want one more pack, one more message", st, before)
			}

			e.waitSucceeded(append(ids("a", "ok", 40), "a/flaky"))
			readDeadLetters(t, e, 1)
			cons, err := e.st.JetStream().Consumer(ctx30(t), e.log.Stream(), events.ConsumerNameForTest(s))
			if err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the pack acknowledged", func() error {
				info, err := cons.Info(ctx30(t))
				if err != nil {
					return err
				}
				if info.NumAckPending != 0 || info.NumPending != 0 || info.AckFloor.Stream != info.Delivered.Stream {
					return fmt.Errorf("consumer: %d ack pending, %d pending, ack floor %d, delivered %d",
						info.NumAckPending, info.NumPending, info.AckFloor.Stream, info.Delivered.Stream)
				}
				return nil
			})

			runs := map[string][]int{}
			for _, c := range e.rec.snapshot() {
				runs[c.id] = append(runs[c.id], c.attempt)
			}
			for i := range 40 {
				if id := fmt.Sprint("ok", i); len(runs[id]) != 1 {
					t.Errorf("%s ran %d times, want once", id, len(runs[id]))
				}
			}
			if !slices.Equal(runs["flaky"], []int{1, 2, 3}) || !slices.Equal(runs["poison"], []int{1, 2, 3}) {
				t.Errorf("attempts: flaky %v, poison %v; want [1 2 3] each", runs["flaky"], runs["poison"])
			}
			if len(runs["filtered"]) != 0 {
				t.Errorf("the filtered event ran %d times", len(runs["filtered"]))
			}
			if ov := e.rec.overlap; len(ov) > 0 && ordered {
				t.Errorf("events of one key overlapped: %v", ov)
			}
		})
	}
}

// TestMalformedPackIsDeadLettered: a message that says it is a pack and is
// not one (written by something else than the Log) is dead-lettered as it
// is, and the events after it flow.
func TestMalformedPackIsDeadLettered(t *testing.T) {
	t.Parallel()
	e := newEnv(t, events.DispatcherOptions{}, "a")
	e.sync(spec("a", "0", "orders"))
	msg := nats.NewMsg(events.SubjectFor(events.DefaultSubjectPrefix, testApp, "orders"))
	msg.Header.Set(events.HeaderPack, "3")
	msg.Data = []byte{0xff, 0xff, 0xff}
	if _, err := e.st.JetStream().PublishMsg(ctx30(t), msg); err != nil {
		t.Fatal(err)
	}
	e.publish("orders", event("after0", "ok", ""), event("after1", "ok", ""))
	e.waitSucceeded(ids("a", "after", 2))
	waitFor(t, "the malformed pack dead-lettered", func() error {
		if st := e.disp.Stats(); st.DeadLettered != 1 || st.Malformed != 1 {
			return fmt.Errorf("stats %+v", st)
		}
		return nil
	})
}

// TestPackDuplicatesAcrossRestart: the Log's own duplicate index is read
// back at open, so an id stored inside a pack before a restart is still
// a duplicate after it, alone or inside another batch.
func TestPackDuplicatesAcrossRestart(t *testing.T) {
	t.Parallel()
	e := newEnv(t, events.DispatcherOptions{}, "a")
	ctx := ctx30(t)
	var ents []events.Entry
	for i := range 10 {
		ents = append(ents, events.EventEntry(testApp, "orders", event(fmt.Sprint("p", i), "ok", "")))
	}
	first, err := e.log.Append(ctx, ents...)
	if err != nil {
		t.Fatal(err)
	}
	e.close()
	e.open(nil)

	again, err := e.log.Append(ctx, ents[4])
	if err != nil || len(again) != 1 || !again[0].Duplicate || again[0] != (events.Ack{Seq: first[4].Seq, Index: first[4].Index, Duplicate: true}) {
		t.Fatalf("p4 alone after a restart: %+v %v; first stored as %+v", again, err, first[4])
	}
	mixed := []events.Entry{events.EventEntry(testApp, "orders", event("new", "ok", "")), ents[7], ents[2]}
	acks, err := e.log.Append(ctx, mixed...)
	if err != nil {
		t.Fatal(err)
	}
	if acks[0].Duplicate || !acks[1].Duplicate || !acks[2].Duplicate ||
		acks[1].Index != first[7].Index || acks[2].Index != first[2].Index || acks[1].Seq != first[0].Seq {
		t.Fatalf("a batch with two old ids after a restart: %+v; first %+v", acks, first)
	}
}
