package cloudevents_test

// Interoperability with the official CloudEvents Go SDK, in both directions,
// over real HTTP on 127.0.0.1.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	sdk "github.com/cloudevents/sdk-go/v2"
	sdkevent "github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
)

type received struct {
	events []cloudevents.Event
	mode   cloudevents.Mode
	err    error
}

// ingress is an httptest server whose handler calls ReadRequest and hands
// what it read to the test.
func ingress(t *testing.T) (url string, got <-chan received) {
	t.Helper()
	ch := make(chan received, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		events, mode, err := cloudevents.ReadRequest(r, 0)
		ch <- received{events, mode, err}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, ch
}

// sdkEvents are events built with the SDK, covering every attribute, the
// three extension types and JSON, text and binary data.
func sdkEvents(t *testing.T) []sdkevent.Event {
	t.Helper()
	var out []sdkevent.Event
	add := func(f func(e *sdkevent.Event) error) {
		e := sdk.NewEvent()
		e.SetID(fmt.Sprintf("id-%d", len(out)))
		e.SetSource("https://shop.example.com/orders")
		e.SetType("com.example.order.created")
		// NewClientHTTP's defaults set time when it is missing; set it so
		// the comparison is exact.
		e.SetTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("", 3600)))
		if err := f(&e); err != nil {
			t.Fatal(err)
		}
		if err := e.Validate(); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
	add(func(e *sdkevent.Event) error { return nil }) // no data, required attributes only
	add(func(e *sdkevent.Event) error {
		e.SetSubject("eu/42 café")
		e.SetTime(time.Date(2026, 11, 23, 12, 0, 0, 123456789, time.UTC))
		e.SetDataSchema("https://example.com/schemas/order.json")
		e.SetExtension("tenant", "acme")
		e.SetExtension("count", 42)
		e.SetExtension("flag", true)
		e.SetExtension("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
		return e.SetData(sdk.ApplicationJSON, map[string]any{"order": 42, "items": []string{"a", "b"}})
	})
	add(func(e *sdkevent.Event) error { return e.SetData("text/plain", "hello, world") })
	add(func(e *sdkevent.Event) error {
		return e.SetData("application/octet-stream", []byte{0, 1, 2, 0xfe, 0xff})
	})
	add(func(e *sdkevent.Event) error {
		e.SetExtension("averyveryverylongextensionname", "x") // > 20 characters: a SHOULD, sdk-go allows it
		return e.SetData(sdk.ApplicationJSON, "just a string")
	})
	return out
}

// expected is what ReadRequest must return for an SDK event.
func expected(t *testing.T, s sdkevent.Event) cloudevents.Event {
	t.Helper()
	e := cloudevents.Event{
		SpecVersion: s.SpecVersion(), ID: s.ID(), Source: s.Source(), Type: s.Type(),
		Subject: s.Subject(), DataContentType: s.DataContentType(), DataSchema: s.DataSchema(), Time: s.Time(),
		Data: s.Data(),
	}
	for name, v := range s.Extensions() {
		if e.Extensions == nil {
			e.Extensions = map[string]string{}
		}
		e.Extensions[name] = fmt.Sprint(v)
	}
	return e
}

// sameEvent compares with JSON data compared as JSON values, since a
// structured-mode writer may re-format it.
func sameEvent(t *testing.T, got, want cloudevents.Event) {
	t.Helper()
	if cloudevents.IsJSONContentType(want.DataContentType) && want.Data != nil {
		got.Data, want.Data = compact(t, got.Data), compact(t, want.Data)
	}
	if !equalEvent(got, want) {
		t.Errorf("\n got %s\nwant %s", show(got), show(want))
	}
}

func compact(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return b // not JSON: compare as is
	}
	return buf.Bytes()
}

func TestSDKClientToReadRequest(t *testing.T) {
	url, got := ingress(t)
	client, err := sdk.NewClientHTTP(cehttp.WithTarget(url))
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []cloudevents.Mode{cloudevents.Binary, cloudevents.Structured} {
		for i, s := range sdkEvents(t) {
			t.Run(fmt.Sprintf("%v/%d", mode, i), func(t *testing.T) {
				ctx := t.Context()
				if mode == cloudevents.Structured {
					ctx = sdk.WithEncodingStructured(ctx)
				}
				if res := client.Send(ctx, s); !sdk.IsACK(res) {
					t.Fatalf("send: %v", res)
				}
				r := <-got
				if r.err != nil {
					t.Fatal(r.err)
				}
				if r.mode != mode || len(r.events) != 1 {
					t.Fatalf("mode %v, %d events", r.mode, len(r.events))
				}
				sameEvent(t, r.events[0], expected(t, s))
			})
		}
	}
}

func TestSDKBatchToReadRequest(t *testing.T) {
	url, got := ingress(t)
	events := sdkEvents(t)
	req, err := cehttp.NewHTTPRequestFromEvents(t.Context(), url, events)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	r := <-got
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.mode != cloudevents.Batched || len(r.events) != len(events) {
		t.Fatalf("mode %v, %d events", r.mode, len(r.events))
	}
	for i := range events {
		sameEvent(t, r.events[i], expected(t, events[i]))
	}
}

// ours are events as the platform writes them to functions. Values avoid
// characters that need percent-encoding: sdk-go does not percent-decode
// header values (see doc.go).
func ours() []cloudevents.Event {
	return []cloudevents.Event{
		{SpecVersion: "1.0", ID: "1", Source: "/orders", Type: "order.created"},
		{
			SpecVersion: "1.0", ID: "2", Source: "https://shop.example.com/orders", Type: "order.created",
			Subject: "eu/42", DataSchema: "https://example.com/s.json", DataContentType: "application/json",
			Time:       time.Date(2026, 11, 23, 12, 0, 0, 5000, time.UTC),
			Extensions: map[string]string{"tenant": "acme", "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
			Data:       []byte(`{"order":42}`),
		},
		{SpecVersion: "1.0", ID: "3", Source: "/img", Type: "image.stored", DataContentType: "image/png", Data: []byte{0x89, 'P', 'N', 'G', 0, 0xff}},
		{SpecVersion: "1.0", ID: "4", Source: "/notes", Type: "note", DataContentType: "text/plain; charset=utf-8", Data: []byte("héllo")},
	}
}

// fromSDK converts an SDK event to ours, extension values by their
// canonical string form.
func fromSDK(t *testing.T, s *sdkevent.Event) cloudevents.Event {
	t.Helper()
	if err := s.Validate(); err != nil {
		t.Fatalf("SDK says the event is invalid: %v", err)
	}
	return expected(t, *s)
}

func TestWriteRequestToSDK(t *testing.T) {
	type result struct {
		e   *sdkevent.Event
		err error
	}
	ch := make(chan result, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e, err := cehttp.NewEventFromHTTPRequest(r)
		ch <- result{e, err}
	}))
	defer srv.Close()
	for i, e := range ours() {
		req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, srv.URL, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := cloudevents.WriteRequest(req, &e); err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		r := <-ch
		if r.err != nil {
			t.Fatalf("event %d: SDK: %v", i, r.err)
		}
		sameEvent(t, fromSDK(t, r.e), e)
	}
}

func TestJSONFormatToSDK(t *testing.T) {
	var batch []byte
	batch = append(batch, '[')
	for i, e := range ours() {
		b, err := e.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		var s sdkevent.Event
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatalf("event %d: SDK cannot read %s: %v", i, b, err)
		}
		sameEvent(t, fromSDK(t, &s), e)
		if i > 0 {
			batch = append(batch, ',')
		}
		batch = e.AppendJSON(batch)
	}
	batch = append(batch, ']')
	req := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(batch))
	req.Header.Set("Content-Type", cloudevents.MediaTypeBatch)
	got, err := cehttp.NewEventsFromHTTPRequest(req)
	if err != nil {
		t.Fatalf("SDK cannot read our batch: %v", err)
	}
	for i, e := range ours() {
		sameEvent(t, fromSDK(t, &got[i]), e)
	}
}
