package cloudevents_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
)

// Fuzz properties: the reader never panics; whatever it accepts passes
// Validate; and the JSON format round-trips it (AppendJSON then
// UnmarshalJSON gives the same event, and the result is a fixed point).
// Seeds are below and in testdata/fuzz.

func FuzzReadStructured(f *testing.F) {
	for _, s := range structuredSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		events, _, err := cloudevents.ReadRequest(request(cloudevents.MediaTypeStructured, nil, body), 1<<16)
		if err != nil {
			return
		}
		checkEvent(t, events[0], true)
	})
}

func FuzzReadBatched(f *testing.F) {
	f.Add(`[]`)
	for _, s := range structuredSeeds {
		f.Add("[" + s + "]")
		f.Add("[" + s + "," + s + "]")
	}
	f.Fuzz(func(t *testing.T, body string) {
		l := cloudevents.Limits{MaxEventBytes: 1 << 16, MaxBatchEvents: 100, MaxExtensions: 8}
		events, _, err := l.ReadRequest(request(cloudevents.MediaTypeBatch, nil, body))
		if err != nil {
			return
		}
		if len(events) > 100 {
			t.Fatalf("%d events past the limit of 100", len(events))
		}
		for _, e := range events {
			checkEvent(t, e, true)
		}
	})
}

// FuzzReadBinaryHeaders takes header lines ("name: value\n"), a
// Content-Type and a body.
func FuzzReadBinaryHeaders(f *testing.F) {
	req := "ce-specversion: 1.0\nce-id: 1\nce-source: /orders\nce-type: order.created\n"
	f.Add(req, "", []byte(nil))
	f.Add(req+"ce-subject: Euro%20%E2%82%AC\nce-time: 2018-04-05T03:56:24Z\n", "application/json", []byte(`{"a": 1} `))
	f.Add(req+`ce-subject: "quoted \"x\""`+"\nce-traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n", "text/plain; charset=utf-8", []byte("hi"))
	f.Add(req+"ce-dataschema: https://example.com/s\nce-n: 5\n", "image/png", []byte{0x89, 'P', 0})
	f.Add(req+"ce-bad_name: x\n", "", []byte(nil))
	f.Add(req+"ce-x: %C0%A0\n", "", []byte(nil))
	f.Add(req, "application/json", []byte(" 1 "))
	f.Fuzz(func(t *testing.T, headers, ct string, body []byte) {
		r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		for line := range strings.Lines(headers) {
			k, v, ok := strings.Cut(strings.TrimRight(line, "\r\n"), ":")
			if !ok {
				continue
			}
			r.Header.Add(k, strings.TrimSpace(v))
		}
		if ct != "" {
			r.Header.Set("Content-Type", ct)
		}
		events, mode, err := cloudevents.Limits{MaxEventBytes: 1 << 16, MaxExtensions: 8}.ReadRequest(r)
		if err != nil || mode != cloudevents.Binary {
			return
		}
		e := events[0]
		checkEvent(t, e, false)
		// WriteRequest then ReadRequest gives the same event.
		out := httptest.NewRequest(http.MethodPost, "/", nil)
		if err := cloudevents.WriteRequest(out, &e); err != nil {
			t.Fatalf("WriteRequest of an event ReadRequest accepted: %v", err)
		}
		again, _, err := cloudevents.ReadRequest(out, 1<<16)
		if err != nil {
			t.Fatalf("reading what WriteRequest wrote: %v", err)
		}
		if !equalEvent(again[0], e) {
			t.Fatalf("binary round trip:\n got %s\nwant %s", show(again[0]), show(e))
		}
	})
}

// checkEvent asserts the fuzz properties of an accepted event. fromJSON
// events must round-trip exactly; binary ones may gain the implied
// application/json content type and lose white space around JSON data.
func checkEvent(t *testing.T, e cloudevents.Event, fromJSON bool) {
	t.Helper()
	if err := e.Validate(); err != nil {
		t.Fatalf("accepted an invalid event: %v\n%s", err, show(e))
	}
	b, err := e.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var e1 cloudevents.Event
	if err := e1.UnmarshalJSON(b); err != nil {
		t.Fatalf("cannot read back %s: %v", b, err)
	}
	want := e
	if !fromJSON && e.Data != nil && e1.DataContentType == "application/json" && e.DataContentType == "" {
		want.DataContentType = "application/json"
	}
	if !fromJSON && len(e1.Data) != len(e.Data) {
		want.Data = bytes.Trim(e.Data, " \t\r\n")
	}
	if !equalEvent(e1, want) {
		t.Fatalf("JSON round trip of %s:\n got %s\nwant %s", b, show(e1), show(want))
	}
	b2, _ := e1.MarshalJSON()
	if !bytes.Equal(b, b2) {
		t.Fatalf("JSON round trip is not a fixed point:\n%s\n%s", b, b2)
	}
}

var structuredSeeds = []string{
	minimal,
	`{"specversion":"1.0","id":"A234-1234-1234","source":"https://shop.example.com/orders","type":"com.example.order.created","subject":"eu/42","time":"2018-04-05T17:31:00.123+02:00","dataschema":"https://example.com/s.json","datacontenttype":"application/json","ext1":"value","n":5,"b":true,"u":null,"data":{"a":[1,2.5e3,"x",null,false]}}`,
	`{"specversion":"1.0","id":"\u00e9\ud83d\ude00","source":"/a\/b","type":"t\"q\\"}`,
	`{"specversion":"1.0","id":"1","source":"/","type":"t","data":"I'm just a string"}`,
	`{"specversion":"1.0","id":"1","source":"/","type":"t","datacontenttype":"application/xml","data":"<much wow=\"xml\"/>"}`,
	`{"specversion":"1.0","id":"1","source":"/","type":"t","datacontenttype":"application/octet-stream","data_base64":"AAEC/w=="}`,
	`{"specversion":"1.0","id":"1","source":"/","type":"t","data":null}`,
	`{"specversion":"1.0","id":"1","source":"/","type":"t","data":{},"data_base64":"AA=="}`,
	`{"specversion":"0.3","id":1}`,
	`{"specversion":"1.0","id":"1","source":"/","type":"t","data":[[[[[[]]]]]]}`,
}
