package hostfn_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/nimbus-dev/nimbus/internal/capability"
	"github.com/nimbus-dev/nimbus/internal/capability/captest"
	"github.com/nimbus-dev/nimbus/internal/events"
	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
	"github.com/nimbus-dev/nimbus/internal/runtime/wasm/hostfn"
	"github.com/nimbus-dev/nimbus/internal/runtime/wasm/wasmbin"
	"github.com/nimbus-dev/nimbus/internal/store"
	"github.com/nimbus-dev/nimbus/internal/telemetry"
	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

type pubEnv struct {
	mod api.Module
	st  *store.Store
	log *events.Log
}

// Layout of the publish guest's memory.
const (
	atTopics = 0    // topic names, see topicArg
	atEvent  = 4096 // the event JSON, written by each test
	atPubOut = 2048
)

var topicAt = map[string]uint32{"orders": 0, "other": 16, "dead-letter": 32, "missing": 48, "Orders": 64}

func topicArg(name string) (uint64, uint64) { return uint64(topicAt[name]), uint64(len(name)) }

// pubGuest imports nimbus.publish and exports it as "publish", passing any
// arguments through.
func pubGuest() []byte {
	m := &wasmbin.Module{
		Types:       []wasmbin.FuncType{{Params: []byte{wasmbin.I32, wasmbin.I32, wasmbin.I32, wasmbin.I32, wasmbin.I32}, Results: []byte{wasmbin.I32}}},
		Imports:     []wasmbin.Import{{Module: "nimbus", Name: wire.FuncPublish, Type: 0}},
		Funcs:       []wasmbin.Func{{Type: 0, Body: wasmbin.Concat(wasmbin.LocalGet(0), wasmbin.LocalGet(1), wasmbin.LocalGet(2), wasmbin.LocalGet(3), wasmbin.LocalGet(4), wasmbin.Call(0))}},
		MemoryPages: 1,
		Exports:     []wasmbin.Export{{Name: "publish", Kind: wasmbin.KindFunc, Index: 1}, {Name: "memory", Kind: wasmbin.KindMemory}},
	}
	for name, at := range topicAt {
		m.Data = append(m.Data, wasmbin.Data{Offset: at, Bytes: []byte(name)})
	}
	return m.Encode()
}

func newPubEnv(t testing.TB, logger *slog.Logger, withPublisher bool) *pubEnv {
	t.Helper()
	ctx := context.Background()
	e := &pubEnv{}
	cfg := capability.Config{Logger: logger}
	if withPublisher {
		e.st, e.log = captest.OpenLog(t)
		cfg.Publisher = &captest.Publisher{Log: e.log, Topics: []string{"orders", "other"}}
	}
	rt := wazero.NewRuntime(ctx)
	t.Cleanup(func() { rt.Close(ctx) })
	if _, err := hostfn.NewDefaultRegistry(capability.New(cfg)).Instantiate(ctx, rt); err != nil {
		t.Fatal(err)
	}
	mod, err := rt.Instantiate(ctx, pubGuest())
	if err != nil {
		t.Fatal(err)
	}
	e.mod = mod
	return e
}

// publish writes event into guest memory and calls publish on topic.
func (e *pubEnv) publish(t testing.TB, ctx context.Context, topic, event string) (int32, uint32) {
	t.Helper()
	if !e.mod.Memory().Write(atEvent, []byte(event)) {
		t.Fatalf("event of %d bytes does not fit", len(event))
	}
	tp, tl := topicArg(topic)
	return e.call(t, ctx, tp, tl, atEvent, uint64(len(event)), atPubOut)
}

func (e *pubEnv) call(t testing.TB, ctx context.Context, args ...uint64) (int32, uint32) {
	t.Helper()
	e.mod.Memory().WriteUint32Le(atPubOut, 0xdeadbeef)
	res, err := e.mod.ExportedFunction("publish").Call(ctx, args...)
	if err != nil {
		t.Fatalf("publish trapped: %v", err)
	}
	flags, _ := e.mod.Memory().ReadUint32Le(atPubOut)
	return api.DecodeI32(res[0]), flags
}

// last reads back the last event stored on app/topic.
func (e *pubEnv) last(t testing.TB, topic string) (cloudevents.Event, uint64) {
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
	return ev, msg.Sequence
}

const traceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

func pubCtx(grants []string, s *sink) context.Context {
	return capability.WithCaller(context.Background(), &capability.Caller{App: "shop", Function: "fn", InvocationID: "inv1",
		TraceParent: traceParent, Grants: capability.NewGrants(grants), Sink: s})
}

func TestPublishStoresEvent(t *testing.T) {
	e := newPubEnv(t, nil, true)
	s := &sink{}
	ctx := pubCtx([]string{"publish:orders"}, s)
	code, flags := e.publish(t, ctx, "orders", `{"specversion":"1.0","id":"1","type":"order.created","subject":"42","datacontenttype":"application/json","data":{"n":1}}`)
	if code != hostfn.CodeOK || flags != 0 {
		t.Fatalf("publish: code %d flags %#x", code, flags)
	}
	ev, seq := e.last(t, "orders")
	if ev.ID != "1" || ev.Type != "order.created" || ev.Subject != "42" || string(ev.Data) != `{"n":1}` {
		t.Fatalf("stored %+v", ev)
	}
	if ev.Source != "/nimbus/shop/fn" {
		t.Fatalf("default source %q", ev.Source)
	}
	tc, ok := telemetry.ParseTraceParent(ev.Extensions["traceparent"])
	if !ok || tc.TraceIDString() != "0af7651916cd43dd8448eb211c80319c" || ev.Extensions["traceparent"] == traceParent {
		t.Fatalf("traceparent %q: want a new span of the invocation's trace", ev.Extensions["traceparent"])
	}
	// The same source and id again: a duplicate, not stored twice.
	code, flags = e.publish(t, ctx, "orders", `{"specversion":"1.0","id":"1","type":"order.created"}`)
	if code != hostfn.CodeOK || flags != wire.PublishDuplicate {
		t.Fatalf("duplicate: code %d flags %#x", code, flags)
	}
	if _, seq2 := e.last(t, "orders"); seq2 != seq {
		t.Fatalf("duplicate stored again at %d (first at %d)", seq2, seq)
	}
	// The guest's own source and traceparent are kept.
	own := "00-11111111111111111111111111111111-2222222222222222-01"
	code, _ = e.publish(t, ctx, "orders", `{"specversion":"1.0","id":"2","source":"https://shop.example.com","type":"t","traceparent":"`+own+`"}`)
	if code != hostfn.CodeOK {
		t.Fatalf("publish with source: %d", code)
	}
	if ev, _ := e.last(t, "orders"); ev.Source != "https://shop.example.com" || ev.Extensions["traceparent"] != own {
		t.Fatalf("stored %+v", ev)
	}
	if len(s.lines) != 0 {
		t.Fatalf("log %q", s.lines)
	}
}

func TestPublishRefused(t *testing.T) {
	var slogBuf bytes.Buffer
	e := newPubEnv(t, slog.New(slog.NewTextHandler(&slogBuf, nil)), true)
	valid := `{"specversion":"1.0","id":"1","type":"t"}`
	tests := []struct {
		name    string
		grants  []string
		topic   string
		event   string
		want    int32
		wantLog string // a substring of the one warning line, "" for none
	}{
		{"not granted", []string{"log", "kv:orders"}, "orders", valid, hostfn.CodeDenied,
			"nimbus.publish denied: capability \"publish:orders\" is not granted to function \"fn\"; add `capabilities: [publish:orders]` to the function in nimbus.yaml"},
		{"other topic granted", []string{"publish:other"}, "orders", valid, hostfn.CodeDenied, "add `capabilities: [publish:orders]`"},
		{"dead-letter even when granted", []string{"publish:dead-letter"}, "dead-letter", valid, hostfn.CodeDenied, ""},
		{"dead-letter", nil, "dead-letter", valid, hostfn.CodeDenied, ""},
		{"undeclared topic", []string{"publish:missing"}, "missing", valid, wire.CodeNoTopic, ""},
		{"topic not a name", []string{"publish:Orders"}, "Orders", valid, hostfn.CodeBadArgument, ""},
		{"missing type", []string{"publish:orders"}, "orders", `{"specversion":"1.0","id":"1"}`, hostfn.CodeBadArgument,
			`nimbus.publish to "orders": invalid event: cloudevents: attribute "type": missing`},
		{"missing id", []string{"publish:orders"}, "orders", `{"specversion":"1.0","type":"t"}`, hostfn.CodeBadArgument, `attribute "id": missing`},
		{"bad extension name", []string{"publish:orders"}, "orders", `{"specversion":"1.0","id":"1","type":"t","Bad_Ext":"x"}`, hostfn.CodeBadArgument, `"Bad_Ext"`},
		{"empty source", []string{"publish:orders"}, "orders", `{"specversion":"1.0","id":"1","type":"t","source":""}`, hostfn.CodeBadArgument, "invalid event"},
		{"not JSON", []string{"publish:orders"}, "orders", `{"specversion":`, hostfn.CodeBadArgument, "invalid event"},
		{"not an object", []string{"publish:orders"}, "orders", `[1]`, hostfn.CodeBadArgument, "invalid event"},
		{"empty", []string{"publish:orders"}, "orders", ``, hostfn.CodeBadArgument, "invalid event"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &sink{}
			ctx := pubCtx(tt.grants, s)
			for range 3 { // refused again and again, logged once
				if code, _ := e.publish(t, ctx, tt.topic, tt.event); code != tt.want {
					t.Fatalf("code %d, want %d", code, tt.want)
				}
			}
			switch {
			case tt.wantLog == "" && len(s.lines) != 0:
				t.Fatalf("unexpected log %q", s.lines)
			case tt.wantLog != "" && (len(s.lines) != 1 || s.lines[0].level != "warn" || !strings.Contains(s.lines[0].text, tt.wantLog)):
				t.Fatalf("log %q, want one warning containing %q", s.lines, tt.wantLog)
			}
		})
	}
	if out := slogBuf.String(); !strings.Contains(out, "app=shop function=fn capability=publish:orders host_function=publish") {
		t.Fatalf("slog lacks the denial: %s", out)
	}
	// Nothing refused was stored.
	if s, err := e.st.JetStream().Stream(context.Background(), e.log.Stream()); err != nil {
		t.Fatal(err)
	} else if info, err := s.Info(context.Background()); err != nil || info.State.Msgs != 0 {
		t.Fatalf("%d events stored by refused calls (%v)", info.State.Msgs, err)
	}
}

// TestPublishHostileArguments: arguments out of range give CodeBadArgument
// (CodeTooLarge for an event over the cap), never a trap.
func TestPublishHostileArguments(t *testing.T) {
	e := newPubEnv(t, nil, true)
	ctx := pubCtx([]string{"publish:orders"}, &sink{})
	valid := `{"specversion":"1.0","id":"1","type":"t"}`
	e.mod.Memory().Write(atEvent, []byte(valid))
	tp, tl := topicArg("orders")
	good := func() []uint64 { return []uint64{tp, tl, atEvent, uint64(len(valid)), atPubOut} }
	const past = memSize - 2
	tests := []struct {
		name string
		args []uint64
		want int32
	}{
		{"topic out of memory", with(good(), 0, past), hostfn.CodeBadArgument},
		{"topic pointer past 4GiB", with(good(), 0, 0xffffffff), hostfn.CodeBadArgument},
		{"topic too long", with(good(), 1, 64), hostfn.CodeBadArgument},
		{"topic length 4GiB", with(good(), 1, 0xffffffff), hostfn.CodeBadArgument},
		{"empty topic", with(good(), 1, 0), hostfn.CodeBadArgument},
		{"event out of memory", with(good(), 2, past), hostfn.CodeBadArgument},
		{"event pointer past 4GiB", with(good(), 2, 0xfffffff0), hostfn.CodeBadArgument},
		{"event past the end of memory", with(good(), 3, memSize), hostfn.CodeBadArgument},
		{"event over the cap", with(good(), 3, wire.PublishMaxEventLen+1), hostfn.CodeTooLarge},
		{"event length 4GiB", with(good(), 3, 0xffffffff), hostfn.CodeTooLarge},
		{"out out of memory", with(good(), 4, past), hostfn.CodeBadArgument},
		{"out past 4GiB", with(good(), 4, 0xfffffffc), hostfn.CodeBadArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if code, _ := e.call(t, ctx, tt.args...); code != tt.want {
				t.Fatalf("code %d, want %d", code, tt.want)
			}
		})
	}
	if code, _ := e.call(t, ctx, good()...); code != hostfn.CodeOK {
		t.Fatalf("good call after hostile ones: %d", code)
	}
}

func TestPublishWithoutPublisher(t *testing.T) {
	e := newPubEnv(t, nil, false)
	ctx := pubCtx([]string{"publish:orders"}, &sink{})
	if code, _ := e.publish(t, ctx, "orders", `{"specversion":"1.0","id":"1","type":"t"}`); code != hostfn.CodeUnavailable {
		t.Fatalf("code %d, want unavailable", code)
	}
	if code, _ := e.publish(t, pubCtx(nil, &sink{}), "orders", `{}`); code != hostfn.CodeDenied {
		t.Fatalf("not granted: code %d, want denied", code)
	}
}

// FuzzPublishArgs: whatever pointers and lengths a guest passes to publish,
// the host returns a status code and never traps. No publisher is
// configured, so calls with good arguments stop at CodeUnavailable.
func FuzzPublishArgs(f *testing.F) {
	f.Add(uint32(0), uint32(6), uint32(atEvent), uint32(40), uint32(atPubOut))
	f.Add(uint32(0xffffffff), uint32(0xffffffff), uint32(0xffffffff), uint32(0xffffffff), uint32(0xffffffff))
	f.Add(uint32(32), uint32(11), uint32(memSize-1), uint32(1), uint32(memSize-8))
	f.Add(uint32(0), uint32(6), uint32(0), uint32(wire.PublishMaxEventLen+1), uint32(memSize-7))
	e := newPubEnv(f, nil, false)
	ctx := pubCtx([]string{"publish:orders", "publish:o", "publish:dead-letter"}, &sink{})
	ok := map[int32]bool{hostfn.CodeUnavailable: true, hostfn.CodeBadArgument: true, hostfn.CodeTooLarge: true, hostfn.CodeDenied: true}
	f.Fuzz(func(t *testing.T, tp, tl, ep, el, out uint32) {
		if code, _ := e.call(t, ctx, uint64(tp), uint64(tl), uint64(ep), uint64(el), uint64(out)); !ok[code] {
			t.Fatalf("code %d", code)
		}
	})
}
