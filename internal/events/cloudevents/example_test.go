package cloudevents_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
)

// An ingress handler reads the events of a request in any content mode and
// maps the package's typed errors to HTTP statuses.
func Example() {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		events, mode, err := cloudevents.ReadRequest(r, 64<<10)
		var tooLarge *cloudevents.TooLargeError
		switch {
		case errors.As(err, &tooLarge):
			http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
			return
		case errors.Is(err, cloudevents.ErrUnsupportedFormat):
			http.Error(w, err.Error(), http.StatusUnsupportedMediaType)
			return
		case err != nil:
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for _, e := range events {
			fmt.Printf("%s event %s from %s: %s %s\n", mode, e.ID, e.Source, e.Type, e.Data)
		}
		w.WriteHeader(http.StatusAccepted)
	})

	post := func(ct string, headers map[string]string, body string) {
		r := httptest.NewRequest(http.MethodPost, "/shop/orders", strings.NewReader(body))
		r.Header.Set("Content-Type", ct)
		for k, v := range headers {
			r.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		handler.ServeHTTP(w, r)
		if w.Code != http.StatusAccepted {
			fmt.Print(w.Code, " ", w.Body.String())
		}
	}

	post("application/json", map[string]string{
		"ce-specversion": "1.0", "ce-id": "1", "ce-source": "/checkout", "ce-type": "order.created",
	}, `{"order":1}`)
	post("application/cloudevents+json", nil,
		`{"specversion":"1.0","id":"2","source":"/checkout","type":"order.created","data":{"order":2}}`)
	post("application/cloudevents-batch+json", nil, `[
		{"specversion":"1.0","id":"3","source":"/checkout","type":"order.created","data":{"order":3}},
		{"specversion":"1.0","id":"4","source":"/checkout","data":{"order":4}}
	]`)
	// Output:
	// binary event 1 from /checkout: order.created {"order":1}
	// structured event 2 from /checkout: order.created {"order":2}
	// 400 cloudevents: event 1: attribute "type": missing: every event needs a type, such as "com.example.order.created"
}

// WriteRequest delivers an event to a function in binary mode.
func ExampleWriteRequest() {
	e := cloudevents.Event{
		SpecVersion: "1.0", ID: "42", Source: "/checkout", Type: "order.created",
		Subject: "eu/café", DataContentType: "application/json", Data: []byte(`{"order":42}`),
		Extensions: map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
	}
	req := httptest.NewRequest(http.MethodPost, "/", nil)
	if err := cloudevents.WriteRequest(req, &e); err != nil {
		fmt.Println(err)
		return
	}
	for _, k := range []string{"Ce-Id", "Ce-Subject", "Ce-Traceparent", "Content-Type"} {
		fmt.Printf("%s: %s\n", k, req.Header.Get(k))
	}
	// Output:
	// Ce-Id: 42
	// Ce-Subject: eu/caf%C3%A9
	// Ce-Traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
	// Content-Type: application/json
}

func ExampleEvent_Validate() {
	e := cloudevents.Event{SpecVersion: "1.0", ID: "1", Source: "/checkout"}
	fmt.Println(e.Validate())
	// Output:
	// cloudevents: attribute "type": missing: every event needs a type, such as "com.example.order.created"
}
