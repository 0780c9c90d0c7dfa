package capability_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/capability"
	"github.com/nimbus-dev/nimbus/internal/capability/captest"
	"github.com/nimbus-dev/nimbus/internal/events"
	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
	"github.com/nimbus-dev/nimbus/internal/store"
	"github.com/nimbus-dev/nimbus/internal/telemetry"
)

const traceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

type pubEnv struct {
	svc *capability.PublishService
	st  *store.Store
	log *events.Log
}

func newPubEnv(t testing.TB, logger *slog.Logger) *pubEnv {
	t.Helper()
	st, l := captest.OpenLog(t)
	svc := capability.New(capability.Config{Logger: logger, Publisher: &captest.Publisher{Log: l, Topics: []string{"orders", "other"}}})
	return &pubEnv{svc: svc.Publish, st: st, log: l}
}

// stored returns how many events the log holds.
func (e *pubEnv) stored(t testing.TB) uint64 {
	t.Helper()
	s, err := e.st.JetStream().Stream(context.Background(), e.log.Stream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// last reads back the last event stored on shop/topic.
func (e *pubEnv) last(t testing.TB, topic string) cloudevents.Event {
	t.Helper()
	ctx := context.Background()
	s, err := e.st.JetStream().Stream(ctx, e.log.Stream())
	if err != nil {
		t.Fatal(err)
	}
	msg, err := s.GetLastMsgForSubject(ctx, events.SubjectFor(events.DefaultSubjectPrefix, "shop", topic))
	if err != nil {
		t.Fatalf("read back %s: %v", topic, err)
	}
	var ev cloudevents.Event
	if err := ev.UnmarshalJSON(msg.Data); err != nil {
		t.Fatalf("stored event %s: %v", msg.Data, err)
	}
	return ev
}

func TestPublishService(t *testing.T) {
	e := newPubEnv(t, nil)
	call, s := caller("shop", "publish:orders")
	call.TraceParent = traceParent
	ctx := context.Background()
	raw := []byte(`{"specversion":"1.0","id":"1","type":"order.created","data":{"n":1}}`)
	dup, err := e.svc.Publish(ctx, call, "orders", raw)
	if err != nil || dup {
		t.Fatalf("publish: dup %v err %v", dup, err)
	}
	copy(raw, "xxxxxxxx") // the service is done with the bytes
	ev := e.last(t, "orders")
	if ev.ID != "1" || ev.Source != "/nimbus/shop/fn" || string(ev.Data) != `{"n":1}` {
		t.Fatalf("stored %+v", ev)
	}
	tc, ok := telemetry.ParseTraceParent(ev.Extensions["traceparent"])
	if !ok || tc.TraceIDString() != "0af7651916cd43dd8448eb211c80319c" || ev.Extensions["traceparent"] == traceParent {
		t.Fatalf("traceparent %q: want a new span of the invocation's trace", ev.Extensions["traceparent"])
	}
	if dup, err := e.svc.Publish(ctx, call, "orders", []byte(`{"specversion":"1.0","id":"1","type":"order.created"}`)); err != nil || !dup {
		t.Fatalf("same id again: dup %v err %v, want a duplicate", dup, err)
	}
	if n := e.stored(t); n != 1 {
		t.Fatalf("%d events stored, want 1", n)
	}
	if l := s.get(); len(l) != 0 {
		t.Fatalf("log %q", l)
	}
}

func TestPublishServiceRefuses(t *testing.T) {
	var slogBuf syncBuffer
	e := newPubEnv(t, slog.New(slog.NewTextHandler(&slogBuf, nil)))
	valid := `{"specversion":"1.0","id":"1","type":"t"}`
	tests := []struct {
		name    string
		grants  []string
		topic   string
		event   string
		want    error
		wantLog string // a substring of the one warning line, "" for none
	}{
		{"not granted", []string{"log", "kv:orders"}, "orders", valid, capability.ErrDenied,
			"nimbus.publish denied: capability \"publish:orders\" is not granted to function \"fn\"; add `capabilities: [publish:orders]` to the function in nimbus.yaml"},
		{"other topic granted", []string{"publish:other"}, "orders", valid, capability.ErrDenied, "add `capabilities: [publish:orders]`"},
		{"dead-letter even when granted", []string{"publish:dead-letter"}, "dead-letter", valid, events.ErrTopicReserved, ""},
		{"dead-letter", nil, "dead-letter", valid, capability.ErrDenied, ""},
		{"undeclared topic", []string{"publish:missing"}, "missing", valid, capability.ErrNoTopic, ""},
		{"topic not a name", []string{"publish:Orders"}, "Orders", valid, capability.ErrBadArgument, ""},
		{"missing type", []string{"publish:orders"}, "orders", `{"specversion":"1.0","id":"1"}`, capability.ErrBadArgument,
			`nimbus.publish to "orders": invalid event: cloudevents: attribute "type": missing`},
		{"not JSON", []string{"publish:orders"}, "orders", `{"specversion":`, capability.ErrBadArgument, "invalid event"},
		{"not granted, not JSON", nil, "orders", `{`, capability.ErrDenied, "add `capabilities: [publish:orders]`"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			call, s := caller("shop", tt.grants...)
			for range 3 { // refused again and again, logged once
				if _, err := e.svc.Publish(context.Background(), call, tt.topic, []byte(tt.event)); !errors.Is(err, tt.want) {
					t.Fatalf("err %v, want %v", err, tt.want)
				}
			}
			l := s.get()
			switch {
			case tt.wantLog == "" && len(l) != 0:
				t.Fatalf("unexpected log %q", l)
			case tt.wantLog != "" && (len(l) != 1 || l[0].level != "warn" || !strings.Contains(l[0].text, tt.wantLog)):
				t.Fatalf("log %q, want one warning containing %q", l, tt.wantLog)
			}
		})
	}
	if out := slogBuf.String(); !strings.Contains(out, "app=shop function=fn capability=publish:orders host_function=publish") {
		t.Fatalf("slog lacks the denial: %s", out)
	}
	if n := e.stored(t); n != 0 {
		t.Fatalf("%d events stored by refused calls", n)
	}
}

// failingPublisher fails every publish with err.
type failingPublisher struct{ err error }

func (failingPublisher) CheckPublish(context.Context, string, string, *cloudevents.Event) error {
	return nil
}

func (p failingPublisher) Publish(context.Context, string, string, []cloudevents.Event, string) (int, int, error) {
	return 0, 0, p.err
}

// TestPublishErrorsByType: the publisher's typed errors decide the
// service's, whatever their messages say.
func TestPublishErrorsByType(t *testing.T) {
	var slogBuf syncBuffer
	for _, c := range []struct {
		err, want error
		logged    bool
	}{
		{&events.TopicError{App: "shop", Topic: "orders", Err: events.ErrTopicNotFound}, capability.ErrNoTopic, false},
		{&events.TopicError{App: "shop", Topic: "orders", Err: events.ErrTopicReserved}, capability.ErrDenied, false},
		{&events.EventTooLargeError{Topic: "orders", Size: 2, Limit: 1}, capability.ErrTooLarge, false},
		{fmt.Errorf("append: %w", events.ErrTooLarge), capability.ErrTooLarge, false},
		{context.DeadlineExceeded, capability.ErrUnavailable, false},
		{errors.New("topic_not_found"), capability.ErrUnavailable, true}, // a message is not a type
	} {
		svc := capability.New(capability.Config{Publisher: failingPublisher{c.err}, Logger: slog.New(slog.NewTextHandler(&slogBuf, nil))})
		call, _ := caller("shop", "publish:orders")
		before := strings.Count(slogBuf.String(), "publish host function failed")
		_, err := svc.Publish.Publish(context.Background(), call, "orders", []byte(`{"specversion":"1.0","id":"1","type":"t"}`))
		if !errors.Is(err, c.want) || !errors.Is(err, c.err) {
			t.Errorf("%v: got %v, want %v wrapping it", c.err, err, c.want)
		}
		if logged := strings.Count(slogBuf.String(), "publish host function failed") > before; logged != c.logged {
			t.Errorf("%v: logged %v, want %v", c.err, logged, c.logged)
		}
	}
}

func TestPublishWithoutPublisher(t *testing.T) {
	pub := capability.New(capability.Config{}).Publish
	granted, _ := caller("shop", "publish:orders")
	_, err := pub.Publish(context.Background(), granted, "orders", []byte(`{"specversion":"1.0","id":"1","type":"t"}`))
	wantErr(t, "no publisher", err, capability.ErrUnavailable)
	_, err = pub.Publish(context.Background(), granted, "orders", []byte(`{`))
	wantErr(t, "no publisher, bad event", err, capability.ErrUnavailable)
}

func TestDecodeEvent(t *testing.T) {
	tests := []struct {
		in, source, wantErr string
	}{
		{`{"specversion":"1.0","id":"1","type":"t"}`, "/nimbus/a/f", ""},
		{` {"specversion":"1.0","id":"1","type":"t","source":"/s"}`, "/s", ""},
		{"\n{ \"specversion\":\"1.0\", \"id\":\"1\", \"type\":\"t\" }", "/nimbus/a/f", ""},
		{`{"specversion":"1.0","type":"t"}`, "", `"id"`},
		{`{"specversion":"1.0","id":"1"}`, "", `"type"`},
		{`{"specversion":"1.0","id":"1","type":"t","source":""}`, "", "source"},
		{`{"specversion":"1.0","id":"1","type":"t","source":"%zz"}`, "", "source"},
		{`{}`, "", "specversion"},
		{`null`, "", "cloudevents"},
	}
	for _, tt := range tests {
		ev, err := capability.DecodeEvent([]byte(tt.in), "/nimbus/a/f")
		switch {
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%s: err %v, want one naming %s", tt.in, err, tt.wantErr)
		case tt.wantErr == "" && (err != nil || ev.Source != tt.source || ev.Extensions == nil):
			t.Errorf("%s: %+v %v, want source %q", tt.in, ev, err, tt.source)
		}
	}
}

// FuzzDecodeEvent: any bytes a function passes as an event either decode
// to a valid event with a source, or give an error; never a panic.
func FuzzDecodeEvent(f *testing.F) {
	f.Add([]byte(`{"specversion":"1.0","id":"1","type":"t"}`))
	f.Add([]byte(`{"specversion":"1.0","id":"1","type":"t","source":"/s","data_base64":"AAE="}`))
	f.Add([]byte(`{"specversion":"1.0","id":"1","source":"","type":"t"}`))
	f.Add([]byte(`{"id":"1","type":"t","data":{"a":[1,2,{"b":null}]},"x":"y"}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := capability.DecodeEvent(b, "/nimbus/a/f")
		if err != nil {
			return
		}
		if verr := ev.Validate(); verr != nil || ev.Source == "" || ev.Extensions == nil {
			t.Fatalf("%q decoded to %+v (validate: %v)", b, ev, verr)
		}
		if _, err := json.Marshal(&ev); err != nil {
			t.Fatalf("decoded event does not encode: %v", err)
		}
	})
}

func ExampleDefaultSource() {
	fmt.Println(capability.DefaultSource("shop", "checkout"))
	// Output: /nimbus/shop/checkout
}
