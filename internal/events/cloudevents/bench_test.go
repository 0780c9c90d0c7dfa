package cloudevents_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
)

// body is a request body that can be rewound without allocating.
type body struct{ bytes.Reader }

func (*body) Close() error { return nil }

func benchRead(b *testing.B, r *http.Request, payload []byte, perRequest int) {
	b.Helper()
	rd := &body{}
	r.Body = rd
	r.ContentLength = int64(len(payload))
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		rd.Reset(payload)
		events, _, err := cloudevents.ReadRequest(r, 0)
		if err != nil || len(events) != perRequest {
			b.Fatal(err, len(events))
		}
	}
	b.ReportMetric(float64(b.N*perRequest)/b.Elapsed().Seconds(), "events/s")
}

// smallEvent is a typical small event: a trace context extension and a
// small JSON payload, ~300 bytes.
func smallEvent(i int) string {
	return fmt.Sprintf(`{"specversion":"1.0","id":"9f1c1e4a-%08d","source":"/shop/checkout","type":"com.example.order.created","subject":"eu/%d","time":"2026-11-23T12:00:00.123Z","datacontenttype":"application/json","traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","data":{"order":%d,"total":42.5,"items":["a","b"]}}`, i, i, i)
}

func BenchmarkReadBatched(b *testing.B) {
	events := make([]string, 100)
	for i := range events {
		events[i] = smallEvent(i)
	}
	payload := []byte("[" + strings.Join(events, ",") + "]")
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	r.Header.Set("Content-Type", cloudevents.MediaTypeBatch)
	benchRead(b, r, payload, 100)
}

func BenchmarkReadStructured(b *testing.B) {
	payload := []byte(smallEvent(1))
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	r.Header.Set("Content-Type", cloudevents.MediaTypeStructured)
	benchRead(b, r, payload, 1)
}

func BenchmarkReadBinary(b *testing.B) {
	payload := []byte(`{"order":1,"total":42.5,"items":["a","b"]}`)
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	for k, v := range map[string]string{
		"Content-Type": "application/json", "ce-specversion": "1.0", "ce-id": "9f1c1e4a-00000001",
		"ce-source": "/shop/checkout", "ce-type": "com.example.order.created", "ce-subject": "eu/1",
		"ce-time": "2026-11-23T12:00:00.123Z", "ce-traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	} {
		r.Header.Set(k, v)
	}
	benchRead(b, r, payload, 1)
}

func benchEvent() cloudevents.Event {
	return cloudevents.Event{
		SpecVersion: "1.0", ID: "9f1c1e4a-00000001", Source: "/shop/checkout", Type: "com.example.order.created",
		Subject: "eu/1", Time: time.Date(2026, 11, 23, 12, 0, 0, 123e6, time.UTC), DataContentType: "application/json",
		Extensions: map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		Data:       []byte(`{"order":1,"total":42.5,"items":["a","b"]}`),
	}
}

func BenchmarkAppendJSON(b *testing.B) {
	e := benchEvent()
	buf := make([]byte, 0, 1024)
	b.ReportAllocs()
	for b.Loop() {
		buf = e.AppendJSON(buf[:0])
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkWriteRequest(b *testing.B) {
	e := benchEvent()
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	b.ReportAllocs()
	for b.Loop() {
		if err := cloudevents.WriteRequest(r, &e); err != nil {
			b.Fatal(err)
		}
	}
}
