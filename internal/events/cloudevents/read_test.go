package cloudevents_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
)

func request(ct string, headers map[string]string, body string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
	if ct != "" {
		r.Header.Set("Content-Type", ct)
	}
	for k, v := range headers {
		r.Header.Set(k, v)
	}
	return r
}

const minimal = `{"specversion":"1.0","id":"1","source":"/orders","type":"order.created"}`

func base() cloudevents.Event {
	return cloudevents.Event{SpecVersion: "1.0", ID: "1", Source: "/orders", Type: "order.created"}
}

// with returns base() changed by f.
func with(f func(e *cloudevents.Event)) cloudevents.Event {
	e := base()
	f(&e)
	return e
}

func mustTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t
}

// equalEvent compares events, times by instant.
func equalEvent(a, b cloudevents.Event) bool {
	if !a.Time.Equal(b.Time) {
		return false
	}
	a.Time, b.Time = time.Time{}, time.Time{}
	if len(a.Extensions) == 0 && len(b.Extensions) == 0 {
		a.Extensions, b.Extensions = nil, nil
	}
	if len(a.Data) == 0 && len(b.Data) == 0 && (a.Data == nil) == (b.Data == nil) {
		a.Data, b.Data = nil, nil
	}
	return reflect.DeepEqual(a, b)
}

func show(e cloudevents.Event) string {
	return fmt.Sprintf("%+v data=%q", e, e.Data)
}

func TestReadStructured(t *testing.T) {
	ct := cloudevents.MediaTypeStructured
	tests := []struct {
		name string
		ct   string
		body string
		want cloudevents.Event
	}{
		{"minimal", ct, minimal, base()},
		{"charset and white space", ct + "; charset=UTF-8", " \n" + minimal + "\n", base()},
		{"all attributes", ct, `{
			"specversion": "1.0", "id": "A234-1234-1234", "source": "https://shop.example.com/orders",
			"type": "com.example.order.created", "subject": "eu/42", "time": "2018-04-05T17:31:00.123+02:00",
			"dataschema": "https://example.com/schemas/order.json", "datacontenttype": "application/json",
			"comexampleextension1": "value", "comexampleothervalue": 5, "flag": true, "neg": -7, "unset": null,
			"data": {"appinfoA": "abc", "appinfoB": 123}
		}`, cloudevents.Event{
			SpecVersion: "1.0", ID: "A234-1234-1234", Source: "https://shop.example.com/orders",
			Type: "com.example.order.created", Subject: "eu/42", Time: mustTime("2018-04-05T15:31:00.123Z"),
			DataSchema: "https://example.com/schemas/order.json", DataContentType: "application/json",
			Extensions: map[string]string{"comexampleextension1": "value", "comexampleothervalue": "5", "flag": "true", "neg": "-7"},
			Data:       []byte(`{"appinfoA": "abc", "appinfoB": 123}`),
		}},
		{"escaped strings", ct, `{"specversion":"1.0","id":"\u00e9\ud83d\ude00","source":"/a\/b","type":"t\"q\\"}`,
			cloudevents.Event{SpecVersion: "1.0", ID: "é😀", Source: "/a/b", Type: `t"q\`}},
		{"JSON string data without datacontenttype", ct, `{"specversion":"1.0","id":"1","source":"/orders","type":"order.created","data":"I'm just a string"}`,
			with(func(e *cloudevents.Event) {
				e.DataContentType = "application/json"
				e.Data = []byte(`"I'm just a string"`)
			})},
		{"null data is a JSON null payload", ct, `{"specversion":"1.0","id":"1","source":"/orders","type":"order.created","datacontenttype":"application/json","data":null}`,
			with(func(e *cloudevents.Event) { e.DataContentType = "application/json"; e.Data = []byte(`null`) })},
		{"XML data as a string", ct, `{"specversion":"1.0","id":"1","source":"/orders","type":"order.created","datacontenttype":"application/xml","data":"<much wow=\"xml\"/>"}`,
			with(func(e *cloudevents.Event) {
				e.DataContentType = "application/xml"
				e.Data = []byte(`<much wow="xml"/>`)
			})},
		{"binary data", ct, `{"specversion":"1.0","id":"1","source":"/orders","type":"order.created","datacontenttype":"application/octet-stream","data_base64":"AAEC/w=="}`,
			with(func(e *cloudevents.Event) {
				e.DataContentType = "application/octet-stream"
				e.Data = []byte{0, 1, 2, 255}
			})},
		{"null optional attributes are absent", ct, `{"specversion":"1.0","id":"1","source":"/orders","type":"order.created","subject":null,"time":null,"data_base64":null}`, base()},
		{"plus-json data", ct, `{"specversion":"1.0","id":"1","source":"/orders","type":"order.created","datacontenttype":"application/cloudevents+json","data":[1,2]}`,
			with(func(e *cloudevents.Event) {
				e.DataContentType = "application/cloudevents+json"
				e.Data = []byte(`[1,2]`)
			})},
		{"urn source", ct, `{"specversion":"1.0","id":"1","source":"urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66","type":"t"}`,
			cloudevents.Event{SpecVersion: "1.0", ID: "1", Source: "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66", Type: "t"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			events, mode, err := cloudevents.ReadRequest(request(tt.ct, nil, tt.body), 0)
			if err != nil {
				t.Fatal(err)
			}
			if mode != cloudevents.Structured || len(events) != 1 {
				t.Fatalf("mode %v, %d events", mode, len(events))
			}
			if !equalEvent(events[0], tt.want) {
				t.Errorf("got  %s\nwant %s", show(events[0]), show(tt.want))
			}
		})
	}
}

func TestReadStructuredErrors(t *testing.T) {
	ct := cloudevents.MediaTypeStructured
	ev := func(members string) string {
		return `{"specversion":"1.0","id":"1","source":"/orders","type":"order.created"` + members + `}`
	}
	tests := []struct {
		name, ct, body, want string
	}{
		{"missing id", ct, `{"specversion":"1.0","source":"/orders","type":"t"}`,
			`cloudevents: attribute "id": missing: every event needs an id, unique within its source, such as a UUID`},
		{"missing type", ct, `{"specversion":"1.0","id":"1","source":"/orders"}`,
			`cloudevents: attribute "type": missing: every event needs a type, such as "com.example.order.created"`},
		{"missing source", ct, `{"specversion":"1.0","id":"1","type":"t"}`,
			`cloudevents: attribute "source": missing: every event needs a source, a URI-reference such as "/orders" or "https://shop.example.com"`},
		{"missing specversion", ct, `{"id":"1","source":"/orders","type":"t"}`,
			`cloudevents: attribute "specversion": missing: every event needs specversion "1.0"`},
		{"empty object", ct, `{}`,
			`cloudevents: attribute "specversion": missing: every event needs specversion "1.0"`},
		{"old specversion", ct, `{"specversion":"0.3","id":"1","source":"/orders","type":"t"}`,
			`cloudevents: attribute "specversion": unsupported version "0.3": this server speaks CloudEvents 1.0, set specversion to "1.0"`},
		{"id is a number", ct, `{"specversion":"1.0","id":1,"source":"/orders","type":"t"}`,
			`cloudevents: attribute "id": must be a JSON string, not a number`},
		{"duplicate id", ct, ev(`,"id":"2"`),
			`cloudevents: attribute "id": appears more than once; give each attribute once`},
		{"duplicate extension", ct, ev(`,"tenant":"a","tenant":"b"`),
			`cloudevents: attribute "tenant": appears more than once; give each attribute once`},
		{"data and data_base64", ct, ev(`,"data":{},"data_base64":"AA=="`),
			`cloudevents: attribute "data_base64": an event has data or data_base64, not both: use data_base64 for binary data, data otherwise`},
		{"bad base64", ct, ev(`,"data_base64":"AA=!"`),
			`cloudevents: attribute "data_base64": not valid base64 at byte 2: use standard base64 (RFC 4648, alphabet A-Z a-z 0-9 + /, padded with =)`},
		{"base64 not a string", ct, ev(`,"data_base64":12`),
			`cloudevents: attribute "data_base64": must be a JSON string holding base64, not a number`},
		{"bad time", ct, ev(`,"time":"yesterday"`),
			`cloudevents: attribute "time": invalid timestamp "yesterday": use RFC 3339, such as "2026-11-23T12:00:00Z"`},
		{"time without zone", ct, ev(`,"time":"2026-11-23T12:00:00"`),
			`cloudevents: attribute "time": invalid timestamp "2026-11-23T12:00:00": use RFC 3339, such as "2026-11-23T12:00:00Z"`},
		{"source with space", ct, `{"specversion":"1.0","id":"1","source":"my orders","type":"t"}`,
			`cloudevents: attribute "source": invalid URI-reference "my orders": character ' ' at byte 2 is not allowed in a URI (percent-encode it); use a URI-reference such as "/orders" or "https://shop.example.com"`},
		{"source with bad scheme", ct, `{"specversion":"1.0","id":"1","source":"1a:b","type":"t"}`,
			`cloudevents: attribute "source": invalid URI-reference "1a:b": the part before ':' is not a valid scheme (a letter, then letters, digits, '+', '-' or '.'); use a URI-reference such as "/orders" or "https://shop.example.com"`},
		{"relative dataschema", ct, ev(`,"dataschema":"/schemas/order.json"`),
			`cloudevents: attribute "dataschema": "/schemas/order.json" is not an absolute URI: use an absolute URI such as "https://example.com/schemas/order.json"`},
		{"bad datacontenttype", ct, ev(`,"datacontenttype":"json"`),
			`cloudevents: attribute "datacontenttype": invalid media type "json": expected type/subtype; use a media type such as "application/json" or "text/plain; charset=utf-8"`},
		{"empty subject", ct, ev(`,"subject":""`),
			`cloudevents: attribute "subject": is empty: when present it must not be empty; leave it out instead`},
		{"control character", ct, ev(`,"subject":"a\u0001b"`),
			`cloudevents: attribute "subject": contains control character U+0001 at byte 1; strings may not contain control characters`},
		{"text data must be a string", ct, ev(`,"datacontenttype":"text/plain","data":{"a":1}`),
			`cloudevents: attribute "data": datacontenttype "text/plain" is not JSON, so data must be a JSON string, not an object; send binary data as data_base64`},
		{"upper-case extension", ct, ev(`,"Tenant":"a"`),
			`cloudevents: attribute "Tenant": invalid extension name: names are lower-case letters a-z and digits 0-9 (at most 20 recommended), such as "traceparent" or "tenantid"`},
		{"extension with underscore", ct, ev(`,"my_ext":"a"`),
			`cloudevents: attribute "my_ext": invalid extension name: names are lower-case letters a-z and digits 0-9 (at most 20 recommended), such as "traceparent" or "tenantid"`},
		{"object extension", ct, ev(`,"meta":{"a":1}`),
			`cloudevents: attribute "meta": extension values are strings, booleans or integers, not an object`},
		{"fractional extension", ct, ev(`,"ratio":1.5`),
			`cloudevents: attribute "ratio": number 1.5 is not a CloudEvents Integer (a whole number between -2147483648 and 2147483647); send other values as strings`},
		{"extension out of int32", ct, ev(`,"big":2147483648`),
			`cloudevents: attribute "big": number 2147483648 is not a CloudEvents Integer (a whole number between -2147483648 and 2147483647); send other values as strings`},
		{"lone surrogate", ct, ev(`,"subject":"\ud800"`),
			`cloudevents: invalid JSON at byte 82: lone UTF-16 surrogate \uD800 in string`},
		{"not an object", ct, `["x"]`,
			`cloudevents: invalid JSON at byte 0: an event must be a JSON object`},
		{"empty body", ct, ``,
			`cloudevents: invalid JSON at byte 0: unexpected end of input, expected '{'`},
		{"truncated", ct, `{"specversion":"1.0"`,
			`cloudevents: invalid JSON at byte 20: unexpected end of input, expected ',' or '}'`},
		{"trailing garbage", ct, minimal + `x`,
			`cloudevents: invalid JSON at byte 72: unexpected 'x' after the event object`},
		{"two events", ct, minimal + minimal,
			`cloudevents: invalid JSON at byte 72: unexpected '{' after the event object`},
		{"bad data JSON", ct, ev(`,"data":{"a":tru}`),
			`cloudevents: invalid JSON at byte 84: invalid literal, expected true`},
		{"raw control character in string", ct, "{\"specversion\":\"1.0\n\"}",
			`cloudevents: invalid JSON at byte 19: control character 0xa in string (escape it)`},
		{"latin1 charset", ct + "; charset=ISO-8859-1", minimal,
			`cloudevents: unsupported charset "ISO-8859-1": CloudEvents JSON is UTF-8; send charset=utf-8 or none`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			events, _, err := cloudevents.ReadRequest(request(tt.ct, nil, tt.body), 0)
			if err == nil {
				t.Fatalf("no error; events %+v", events)
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("error\n got: %s\nwant: %s", got, tt.want)
			}
			var me *cloudevents.MalformedError
			if !errors.As(err, &me) {
				t.Errorf("%T is not a *MalformedError", err)
			}
		})
	}
}

func TestAttributeErrorIsReachable(t *testing.T) {
	_, _, err := cloudevents.ReadRequest(request(cloudevents.MediaTypeStructured, nil, `{"specversion":"1.0","source":"/","type":"t"}`), 0)
	var ae *cloudevents.AttributeError
	if !errors.As(err, &ae) || ae.Attribute != "id" {
		t.Fatalf("errors.As AttributeError: %v (%#v)", err, ae)
	}
}

func TestTooManyExtensions(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"specversion":"1.0","id":"1","source":"/","type":"t"`)
	for i := range 3 {
		fmt.Fprintf(&b, `,"x%d":"v"`, i)
	}
	b.WriteString(`}`)
	l := cloudevents.Limits{MaxExtensions: 2}
	_, _, err := l.ReadRequest(request(cloudevents.MediaTypeStructured, nil, b.String()))
	want := `cloudevents: attribute "x2": too many extensions: at most 2 per event`
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %s", err, want)
	}
	r := request("text/plain", map[string]string{"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/", "ce-type": "t", "ce-a": "1", "ce-b": "2", "ce-c": "3"}, "")
	if _, _, err := l.ReadRequest(r); err == nil || !strings.Contains(err.Error(), "too many extensions: at most 2 per event") {
		t.Fatalf("binary: got %v", err)
	}
}

func TestReadBatched(t *testing.T) {
	ct := cloudevents.MediaTypeBatch
	t.Run("empty batch", func(t *testing.T) {
		events, mode, err := cloudevents.ReadRequest(request(ct, nil, " [ ] "), 0)
		if err != nil || mode != cloudevents.Batched || events == nil || len(events) != 0 {
			t.Fatalf("events %v, mode %v, err %v", events, mode, err)
		}
	})
	t.Run("two events", func(t *testing.T) {
		body := `[
		  {"specversion":"1.0","type":"com.example.someevent","source":"/mycontext/4","id":"B234","datacontenttype":"application/vnd.apache.thrift.binary","data_base64":"3q2+7w=="},
		  {"specversion":"1.0","type":"com.example.someotherevent","source":"/mycontext/9","id":"C234","datacontenttype":"application/json","data":{"appinfoA":"abc"}}
		]`
		events, _, err := cloudevents.ReadRequest(request(ct+"; charset=utf-8", nil, body), 0)
		if err != nil {
			t.Fatal(err)
		}
		want := []cloudevents.Event{
			{SpecVersion: "1.0", Type: "com.example.someevent", Source: "/mycontext/4", ID: "B234", DataContentType: "application/vnd.apache.thrift.binary", Data: []byte{0xde, 0xad, 0xbe, 0xef}},
			{SpecVersion: "1.0", Type: "com.example.someotherevent", Source: "/mycontext/9", ID: "C234", DataContentType: "application/json", Data: []byte(`{"appinfoA":"abc"}`)},
		}
		if len(events) != 2 || !equalEvent(events[0], want[0]) || !equalEvent(events[1], want[1]) {
			t.Fatalf("got %+v", events)
		}
		// Data is capacity-limited: appending must not overwrite the next bytes.
		d := append(events[1].Data, '!')
		_ = d
		if string(events[1].Data) != `{"appinfoA":"abc"}` {
			t.Fatal("append to Data changed it")
		}
	})

	errs := []struct {
		name, body, want string
	}{
		{"event 3 missing id",
			"[" + strings.Repeat(minimal+",", 3) + `{"specversion":"1.0","source":"/","type":"t"}]`,
			`cloudevents: event 3: attribute "id": missing: every event needs an id, unique within its source, such as a UUID`},
		{"element not an object", `[` + minimal + `, 7]`,
			`cloudevents: event 1: invalid JSON at byte 75: an event must be a JSON object`},
		{"not an array", minimal,
			`cloudevents: invalid JSON at byte 0: a batch must be a JSON array of events`},
		{"missing comma", `[` + minimal + minimal + `]`,
			`cloudevents: invalid JSON at byte 73: expected ',' or ']' after event 0, found '{'`},
		{"unterminated", `[` + minimal,
			`cloudevents: invalid JSON at byte 73: unexpected end of input, expected ',' or ']'`},
		{"trailing comma", `[` + minimal + `,]`,
			`cloudevents: event 1: invalid JSON at byte 74: an event must be a JSON object`},
		{"garbage after", `[]x`,
			`cloudevents: invalid JSON at byte 2: unexpected 'x' after the batch`},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := cloudevents.ReadRequest(request(ct, nil, tt.body), 0)
			if err == nil || err.Error() != tt.want {
				t.Errorf("error\n got: %v\nwant: %s", err, tt.want)
			}
		})
	}
}

func TestLimits(t *testing.T) {
	ct := cloudevents.MediaTypeBatch
	tooLarge := func(t *testing.T, err error, want string) {
		t.Helper()
		var tl *cloudevents.TooLargeError
		if !errors.As(err, &tl) {
			t.Fatalf("got %v (%T), want *TooLargeError", err, err)
		}
		if err.Error() != want {
			t.Fatalf("error\n got: %s\nwant: %s", err, want)
		}
	}
	t.Run("too many events", func(t *testing.T) {
		body := "[" + strings.Repeat(minimal+",", 3) + minimal + "]"
		_, _, err := cloudevents.Limits{MaxBatchEvents: 3}.ReadRequest(request(ct, nil, body))
		tooLarge(t, err, "cloudevents: batch has more than 3 events; split it into smaller batches")
		if _, _, err := (cloudevents.Limits{MaxBatchEvents: 4}).ReadRequest(request(ct, nil, body)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("event larger than MaxEventBytes in a batch", func(t *testing.T) {
		big := `{"specversion":"1.0","id":"1","source":"/","type":"t","data":"` + strings.Repeat("x", 200) + `"}`
		body := "[" + minimal + "," + big + "]"
		_, _, err := cloudevents.Limits{MaxEventBytes: 100, MaxBatchBytes: 1000}.ReadRequest(request(ct, nil, body))
		tooLarge(t, err, "cloudevents: event 1 is larger than the limit of 100 bytes")
	})
	t.Run("batch body", func(t *testing.T) {
		body := "[" + strings.Repeat(minimal+",", 20) + minimal + "]"
		_, _, err := cloudevents.Limits{MaxEventBytes: 100, MaxBatchBytes: 1000}.ReadRequest(request(ct, nil, body))
		tooLarge(t, err, "cloudevents: request body is larger than the limit of 1000 bytes")
	})
	t.Run("structured body, Content-Length known", func(t *testing.T) {
		_, _, err := cloudevents.ReadRequest(request(cloudevents.MediaTypeStructured, nil, minimal), 50)
		tooLarge(t, err, "cloudevents: request body is larger than the limit of 50 bytes")
	})
	t.Run("binary body, Content-Length unknown", func(t *testing.T) {
		r := request("application/octet-stream", map[string]string{"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/", "ce-type": "t"}, "")
		r.Body = io.NopCloser(struct{ io.Reader }{strings.NewReader(strings.Repeat("x", 5000))})
		r.ContentLength = -1
		_, _, err := cloudevents.ReadRequest(r, 4096)
		tooLarge(t, err, "cloudevents: request body is larger than the limit of 4096 bytes")
		r.Body = io.NopCloser(struct{ io.Reader }{strings.NewReader(strings.Repeat("x", 4096))})
		events, _, err := cloudevents.ReadRequest(r, 4096)
		if err != nil || len(events[0].Data) != 4096 {
			t.Fatalf("at the limit: %v", err)
		}
	})
	t.Run("http.MaxBytesReader", func(t *testing.T) {
		r := request(cloudevents.MediaTypeStructured, nil, minimal)
		r.Body = http.MaxBytesReader(httptest.NewRecorder(), r.Body, 10)
		r.ContentLength = -1
		_, _, err := cloudevents.ReadRequest(r, 0)
		tooLarge(t, err, "cloudevents: request body is larger than the limit of 10 bytes")
	})
	t.Run("huge Content-Length is refused before reading", func(t *testing.T) {
		r := request(cloudevents.MediaTypeStructured, nil, minimal)
		r.ContentLength = 1 << 40
		_, _, err := cloudevents.ReadRequest(r, 0)
		tooLarge(t, err, "cloudevents: request body is larger than the limit of 1048576 bytes")
	})
}

func TestReadBinary(t *testing.T) {
	required := map[string]string{"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/orders", "ce-type": "order.created"}
	plus := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range required {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "" {
				delete(m, kv[i])
				continue
			}
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	tests := []struct {
		name    string
		ct      string
		headers map[string]string
		body    string
		want    cloudevents.Event
	}{
		{"minimal, no body", "", required, "", base()},
		{"all attributes", "application/json; charset=utf-8",
			plus("CE-Subject", "eu/42", "Ce-Time", "2018-04-05T03:56:24Z", "ce-dataschema", "https://example.com/s.json",
				"ce-traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "ce-count", "5"),
			`{"a": 1}`,
			with(func(e *cloudevents.Event) {
				e.Subject, e.Time, e.DataSchema = "eu/42", mustTime("2018-04-05T03:56:24Z"), "https://example.com/s.json"
				e.DataContentType, e.Data = "application/json; charset=utf-8", []byte(`{"a": 1}`)
				e.Extensions = map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "count": "5"}
			})},
		{"percent-decoded", "", plus("ce-subject", "Euro%20%E2%82%AC%20%f0%9f%98%80", "ce-note", "100%25"), "",
			with(func(e *cloudevents.Event) {
				e.Subject = "Euro € 😀"
				e.Extensions = map[string]string{"note": "100%"}
			})},
		{"quoted strings", "", plus("ce-subject", `"a \"b\" c"`, "ce-note", `x"%41 "y`), "",
			with(func(e *cloudevents.Event) {
				e.Subject = `a "b" c`
				e.Extensions = map[string]string{"note": "xA y"}
			})},
		{"raw UTF-8 and stray percent, as sdk-go sends", "", plus("ce-subject", "café 100%"), "",
			with(func(e *cloudevents.Event) { e.Subject = "café 100%" })},
		{"binary body", "application/octet-stream", required, "\x00\x01\xff",
			with(func(e *cloudevents.Event) { e.DataContentType = "application/octet-stream"; e.Data = []byte{0, 1, 255} })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			events, mode, err := cloudevents.ReadRequest(request(tt.ct, tt.headers, tt.body), 0)
			if err != nil {
				t.Fatal(err)
			}
			if mode != cloudevents.Binary || len(events) != 1 {
				t.Fatalf("mode %v, %d events", mode, len(events))
			}
			if !equalEvent(events[0], tt.want) {
				t.Errorf("got  %s\nwant %s", show(events[0]), show(tt.want))
			}
		})
	}

	errs := []struct {
		name    string
		ct      string
		headers map[string]string
		want    string
	}{
		{"missing type", "", plus("ce-type", ""),
			`cloudevents: attribute "type": missing: every event needs a type, such as "com.example.order.created"`},
		{"missing specversion", "", plus("ce-specversion", ""),
			`cloudevents: attribute "specversion": missing: every event needs specversion "1.0"`},
		{"ce-datacontenttype", "", plus("ce-datacontenttype", "text/plain"),
			`cloudevents: attribute "datacontenttype": in binary mode datacontenttype travels in the Content-Type header; remove the ce-datacontenttype header`},
		{"bad time", "", plus("ce-time", "2018-04-05 03:56:24"),
			`cloudevents: attribute "time": invalid timestamp "2018-04-05 03:56:24": use RFC 3339, such as "2026-11-23T12:00:00Z"`},
		{"empty subject", "", plus("ce-subject", `""`),
			`cloudevents: attribute "subject": is empty: when present it must not be empty; leave the header out instead`},
		{"overlong UTF-8", "", plus("ce-subject", "%C0%A0"),
			`cloudevents: attribute "subject": header Ce-Subject: percent-decodes to invalid UTF-8`},
		{"unterminated quote", "", plus("ce-subject", `"abc`),
			`cloudevents: attribute "subject": header Ce-Subject: unterminated quoted string`},
		{"bad extension name", "", plus("ce-my_ext", "x"),
			`cloudevents: attribute "my_ext": invalid extension name: names are lower-case letters a-z and digits 0-9 (at most 20 recommended), such as "traceparent" or "tenantid"`},
		{"data as an extension", "", plus("ce-data", "x"),
			`cloudevents: attribute "data": is a core attribute, not an extension: set it through its own field`},
		{"bad content type", "json", required,
			`cloudevents: attribute "datacontenttype": invalid media type "json": expected type/subtype; use a media type such as "application/json" or "text/plain; charset=utf-8"`},
		{"not a CloudEvent", "application/json", map[string]string{"X-Other": "1"},
			`cloudevents: not a CloudEvent: no ce-* headers and Content-Type "application/json"; send binary mode (ce-specversion, ce-id, ce-source, ce-type headers) or Content-Type application/cloudevents+json`},
		{"unsupported format", "application/cloudevents+xml", required,
			`cloudevents: unsupported event format "application/cloudevents+xml": send binary mode (ce-* headers), application/cloudevents+json (one event) or application/cloudevents-batch+json (a JSON array of events)`},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := cloudevents.ReadRequest(request(tt.ct, tt.headers, "{}"), 0)
			if err == nil || err.Error() != tt.want {
				t.Errorf("error\n got: %v\nwant: %s", err, tt.want)
			}
		})
	}

	t.Run("header twice", func(t *testing.T) {
		r := request("", required, "")
		r.Header.Add("ce-id", "2")
		_, _, err := cloudevents.ReadRequest(r, 0)
		want := `cloudevents: attribute "id": header Ce-Id appears 2 times; send each attribute once`
		if err == nil || err.Error() != want {
			t.Errorf("error\n got: %v\nwant: %s", err, want)
		}
	})
	t.Run("unsupported format and charset are ErrUnsupportedFormat", func(t *testing.T) {
		for _, ct := range []string{"application/cloudevents+avro", cloudevents.MediaTypeBatch + "; charset=utf-16"} {
			_, _, err := cloudevents.ReadRequest(request(ct, nil, ""), 0)
			if !errors.Is(err, cloudevents.ErrUnsupportedFormat) {
				t.Fatalf("%s: got %v", ct, err)
			}
		}
		_, _, err := cloudevents.ReadRequest(request("application/json", nil, "{}"), 0)
		if err == nil || errors.Is(err, cloudevents.ErrUnsupportedFormat) {
			t.Fatalf("not a CloudEvent: got %v, want a plain *MalformedError (400)", err)
		}
	})
}

func TestWriteRequestRoundTrip(t *testing.T) {
	events := []cloudevents.Event{
		base(),
		with(func(e *cloudevents.Event) {
			e.Subject = `Euro € 😀 "quoted" 100%`
			e.Time = mustTime("2026-11-23T12:00:00.123456789+01:00")
			e.DataSchema = "https://example.com/s.json"
			e.DataContentType = "application/json"
			e.Data = []byte(`{"n":1}`)
			e.Extensions = map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "note": "a b\u00e9"}
		}),
		with(func(e *cloudevents.Event) { e.DataContentType = "image/png"; e.Data = []byte{0x89, 'P', 'N', 'G', 0} }),
	}
	for i, e := range events {
		req := httptest.NewRequest(http.MethodPost, "/", nil)
		req.Header.Set("Ce-Stale", "left over")
		if err := cloudevents.WriteRequest(req, &e); err != nil {
			t.Fatal(err)
		}
		for k, vs := range req.Header {
			for _, v := range vs {
				for j := 0; j < len(v); j++ {
					if v[j] <= ' ' || v[j] >= 0x7f {
						t.Errorf("event %d: header %s has byte %#x: not percent-encoded", i, k, v[j])
					}
				}
			}
		}
		got, mode, err := cloudevents.ReadRequest(req, 0)
		if err != nil {
			t.Fatal(err)
		}
		if mode != cloudevents.Binary || !equalEvent(got[0], e) {
			t.Errorf("event %d:\n got %s\nwant %s", i, show(got[0]), show(e))
		}
		// WriteHeaders (the dispatcher's path) writes the same headers.
		h := http.Header{"Ce-Stale": {"left over"}, "Content-Type": {"text/old"}}
		cloudevents.WriteHeaders(h, &e)
		if !reflect.DeepEqual(h, req.Header) {
			t.Errorf("event %d: WriteHeaders wrote\n%v\nWriteRequest\n%v", i, h, req.Header)
		}
	}
	bad := base()
	bad.Type = ""
	if err := cloudevents.WriteRequest(httptest.NewRequest(http.MethodPost, "/", nil), &bad); err == nil {
		t.Fatal("WriteRequest accepted an event without type")
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		e    cloudevents.Event
		want string // "" = valid
	}{
		{"valid", base(), ""},
		{"long extension name is accepted (a SHOULD in the spec)", with(func(e *cloudevents.Event) {
			e.Extensions = map[string]string{"averyveryverylongextensionname": "x"}
		}), ""},
		{"empty extension value", with(func(e *cloudevents.Event) { e.Extensions = map[string]string{"x": ""} }), ""},
		{"core name as extension", with(func(e *cloudevents.Event) { e.Extensions = map[string]string{"subject": "x"} }),
			`cloudevents: attribute "subject": is a core attribute, not an extension: set it through its own field`},
		{"empty extension name", with(func(e *cloudevents.Event) { e.Extensions = map[string]string{"": "x"} }),
			`cloudevents: attribute "": empty extension name: names are lower-case letters a-z and digits 0-9`},
		{"year 10000", with(func(e *cloudevents.Event) { e.Time = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }),
			`cloudevents: attribute "time": year 10000 cannot be written in RFC 3339; use a year between 0000 and 9999`},
		{"zone offset with seconds", with(func(e *cloudevents.Event) { e.Time = time.Date(1900, 1, 1, 0, 0, 0, 0, time.FixedZone("LMT", -75)) }),
			`cloudevents: attribute "time": zone offset of -75 seconds cannot be written in RFC 3339 (whole minutes only); convert the time to UTC`},
		{"invalid UTF-8", with(func(e *cloudevents.Event) { e.ID = "a\xffb" }),
			`cloudevents: attribute "id": not valid UTF-8`},
		{"noncharacter", with(func(e *cloudevents.Event) { e.ID = "a\uFFFEb" }),
			`cloudevents: attribute "id": contains Unicode noncharacter U+FFFE at byte 1`},
		{"bad percent in source", with(func(e *cloudevents.Event) { e.Source = "/a%2" }),
			`cloudevents: attribute "source": invalid URI-reference "/a%2": '%' at byte 2 is not followed by two hex digits; use a URI-reference such as "/orders" or "https://shop.example.com"`},
		{"media type with parameters", with(func(e *cloudevents.Event) { e.DataContentType = `text/plain; charset="utf-8"; format=flowed` }), ""},
		{"media type with bad parameter", with(func(e *cloudevents.Event) { e.DataContentType = `text/plain; charset` }),
			`cloudevents: attribute "datacontenttype": invalid media type "text/plain; charset": parameter at byte 19 is not name=value; use a media type such as "application/json" or "text/plain; charset=utf-8"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.e.Validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.want != "" && (err == nil || err.Error() != tt.want):
				t.Fatalf("error\n got: %v\nwant: %s", err, tt.want)
			}
		})
	}
}
