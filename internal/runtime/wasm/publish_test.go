package wasm

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/capability"
	"github.com/nimbus-dev/nimbus/internal/capability/captest"
	"github.com/nimbus-dev/nimbus/internal/events"
	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
	"github.com/nimbus-dev/nimbus/internal/guesttest"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/runtime/wasm/hostfn"
	"github.com/nimbus-dev/nimbus/internal/store"
	"github.com/nimbus-dev/nimbus/internal/telemetry"
)

// init registers the publish test guest with the guests TestMain builds
// (test registration only; guests_test.go lists the others).
func init() {
	guestSrcs = append(guestSrcs, guestSrc{"pub", "internal/runtime/wasm/testdata/pubguest", guesttest.Reactor})
}

// pubSetup is a real store and event log with topic shop/orders, and a
// runtime whose publish host function appends to it.
type pubSetup struct {
	st   *store.Store
	log  *events.Log
	rt   *Runtime
	slog *syncBuffer
}

func newPubSetup(t testing.TB) *pubSetup {
	t.Helper()
	st, l := captest.OpenLog(t)
	buf := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(buf, nil))
	svc := capability.New(capability.Config{Logger: logger, Publisher: &captest.Publisher{Log: l, Topics: []string{"orders"}}})
	reg := hostfn.NewDefaultRegistry(svc)
	return &pubSetup{st: st, log: l, rt: newRuntime(t, Config{Logger: logger, HostFunctions: reg}), slog: buf}
}

func (s *pubSetup) guest(t testing.TB, capabilities ...string) runtime.Instance {
	t.Helper()
	return instance(t, load(t, s.rt, runtime.Spec{App: "shop", Function: "fn", Artifact: guests["pub"], Capabilities: capabilities}))
}

// stored returns every event on shop/topic, in order.
func (s *pubSetup) stored(t testing.TB, topic string) []cloudevents.Event {
	t.Helper()
	ctx := context.Background()
	str, err := s.st.JetStream().Stream(ctx, s.log.Stream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := str.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	subject := events.SubjectFor(events.DefaultSubjectPrefix, "shop", topic)
	var out []cloudevents.Event
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		msg, err := str.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get %d: %v", seq, err)
		}
		if msg.Subject != subject {
			continue
		}
		var ev cloudevents.Event
		if err := ev.UnmarshalJSON(msg.Data); err != nil {
			t.Fatalf("stored event %s: %v", msg.Data, err)
		}
		out = append(out, ev)
	}
	return out
}

const invocationTrace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func pubReq(query, body string, log runtime.LogSink) *runtime.Request {
	r := get("/publish", query)
	r.Method, r.Body, r.Log, r.TraceParent, r.InvocationID = "POST", []byte(body), log, invocationTrace, "inv-1"
	return r
}

func TestPublishGuest(t *testing.T) {
	s := newPubSetup(t)
	inst := s.guest(t, "publish:orders")
	resp := mustHandle(t, inst, pubReq("t=orders&type=order.created&subject=42&ext=tenant=acme", `{"total":5}`, nil))
	if resp.Status != 200 || string(resp.Body) != "new" {
		t.Fatalf("publish: %d %s", resp.Status, resp.Body)
	}
	evs := s.stored(t, "orders")
	if len(evs) != 1 {
		t.Fatalf("%d events stored, want 1", len(evs))
	}
	ev := evs[0]
	if ev.Type != "order.created" || ev.Subject != "42" || ev.DataContentType != "application/json" || string(ev.Data) != `{"total":5}` || ev.Extensions["tenant"] != "acme" {
		t.Fatalf("stored %+v", ev)
	}
	if ev.Source != "/nimbus/shop/fn" || len(ev.ID) != 32 {
		t.Fatalf("defaults: source %q id %q", ev.Source, ev.ID)
	}
	tc, ok := telemetry.ParseTraceParent(ev.Extensions["traceparent"])
	if !ok || tc.TraceIDString() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("traceparent %q does not continue the invocation's trace", ev.Extensions["traceparent"])
	}
	// A second publish gets another random id: two events.
	if resp := mustHandle(t, inst, pubReq("t=orders&type=order.created", "", nil)); resp.Status != 200 || string(resp.Body) != "new" {
		t.Fatalf("second publish: %d %s", resp.Status, resp.Body)
	}
	// A fixed id and source: the second copy is a duplicate, stored once.
	for i, want := range []string{"new", "duplicate"} {
		resp := mustHandle(t, inst, pubReq("t=orders&type=t&id=fixed&source=/orders&ct=text/plain", "hi", nil))
		if resp.Status != 200 || string(resp.Body) != want {
			t.Fatalf("fixed id, publish %d: %d %s, want %s", i, resp.Status, resp.Body, want)
		}
	}
	evs = s.stored(t, "orders")
	if len(evs) != 3 || evs[1].ID == ev.ID || evs[2].ID != "fixed" || evs[2].Source != "/orders" || string(evs[2].Data) != "hi" {
		t.Fatalf("stored %+v", evs)
	}
}

func TestPublishGuestRefused(t *testing.T) {
	s := newPubSetup(t)
	tests := []struct {
		name    string
		caps    []string
		query   string
		status  int
		body    string // a substring of the guest's error
		wantLog string // a substring of the warning each invocation logs, "" for none
	}{
		{"not granted", []string{"log"}, "t=orders&type=t", 403, "capability not granted: grant it with `capabilities: [publish:orders]`",
			"nimbus.publish denied: capability \"publish:orders\" is not granted to function \"fn\"; add `capabilities: [publish:orders]`"},
		{"other topic granted", []string{"publish:other"}, "t=orders&type=t", 403, "capability not granted", "add `capabilities: [publish:orders]`"},
		{"dead-letter", []string{"publish:dead-letter"}, "t=dead-letter&type=t", 403, "only Nimbus writes the dead-letter topic", ""},
		{"undeclared topic", []string{"publish:other"}, "t=other&type=t", 404, "topic not found: declare it under topics:", ""},
		{"missing type", []string{"publish:orders"}, "t=orders", 400, "bad argument: the event needs a type", ""},
		{"invalid extension", []string{"publish:orders"}, "t=orders&type=t&ext=Bad_Name=x", 400, "bad argument", `invalid event: cloudevents: attribute "Bad_Name"`},
		{"invalid source", []string{"publish:orders"}, "t=orders&type=t&source=%25zz", 400, "bad argument", `attribute "source"`},
		{"topic not a name", []string{"publish:orders"}, "t=Orders&type=t", 400, "bad argument", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inst := s.guest(t, tt.caps...)
			log := &sink{}
			for range 2 { // two invocations, each refused and logged once
				resp := mustHandle(t, inst, pubReq(tt.query, "", log))
				if resp.Status != tt.status || !strings.Contains(string(resp.Body), tt.body) {
					t.Fatalf("%d %q, want %d with %q", resp.Status, resp.Body, tt.status, tt.body)
				}
			}
			switch {
			case tt.wantLog == "" && len(log.lines) != 0:
				t.Fatalf("unexpected log %s", log)
			case tt.wantLog != "" && (len(log.lines) != 2 || log.lines[0] != log.lines[1] || log.lines[0].level != "warn" || !strings.Contains(log.lines[0].text, tt.wantLog)):
				t.Fatalf("log %s, want one warning per invocation with %q", log, tt.wantLog)
			}
		})
	}
	if n := len(s.stored(t, "orders")) + len(s.stored(t, "dead-letter")); n != 0 {
		t.Fatalf("refused publishes stored %d events", n)
	}
	if !strings.Contains(s.slog.String(), "capability=publish:orders ") {
		t.Fatalf("slog lacks the denial: %s", s.slog)
	}
}

// TestPublishGuestHostile: a guest passing pointers outside its memory gets
// CodeBadArgument (CodeTooLarge for a 4GiB event) back, and the instance
// keeps serving.
func TestPublishGuestHostile(t *testing.T) {
	s := newPubSetup(t)
	inst := s.guest(t, "publish:orders")
	resp := mustHandle(t, inst, get("/hostile", ""))
	b, tl := hostfn.CodeBadArgument, hostfn.CodeTooLarge
	want := fmt.Sprintln(b) + fmt.Sprintln(b) + fmt.Sprintln(b) + fmt.Sprintln(b) + fmt.Sprintln(tl) + fmt.Sprintln(b)
	if resp.Status != 200 || string(resp.Body) != want {
		t.Fatalf("hostile calls: %d %q, want %q", resp.Status, resp.Body, want)
	}
	if resp := mustHandle(t, inst, pubReq("t=orders&type=after", "", nil)); resp.Status != 200 {
		t.Fatalf("instance after hostile calls: %d %s", resp.Status, resp.Body)
	}
	if evs := s.stored(t, "orders"); len(evs) != 1 || evs[0].Type != "after" {
		t.Fatalf("stored %+v: a refused call stored something", evs)
	}
}

func TestPublishGuestUnavailable(t *testing.T) {
	rt := newRuntime(t, Config{})
	inst := instance(t, load(t, rt, runtime.Spec{App: "shop", Function: "fn", Artifact: guests["pub"], Capabilities: []string{"publish:orders"}}))
	if resp := mustHandle(t, inst, pubReq("t=orders&type=t", "", nil)); resp.Status != 503 || !strings.Contains(string(resp.Body), "unavailable") {
		t.Fatalf("no publisher: %d %s", resp.Status, resp.Body)
	}
}
