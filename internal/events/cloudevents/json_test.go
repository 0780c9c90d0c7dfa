package cloudevents_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
)

func TestMarshalJSON(t *testing.T) {
	tests := []struct {
		name string
		e    cloudevents.Event
		want string
	}{
		{"minimal", base(), `{"specversion":"1.0","id":"1","source":"/orders","type":"order.created"}`},
		{"all attributes, JSON data", cloudevents.Event{
			SpecVersion: "1.0", ID: "1", Source: "/o", Type: "t", Subject: "s\"<é", DataContentType: "application/json",
			DataSchema: "https://e.com/s", Time: time.Date(2026, 11, 23, 12, 0, 0, 500, time.FixedZone("", -5*3600)),
			Extensions: map[string]string{"b": "2", "a": "1"}, Data: []byte(" {\"x\": [1, 2]}\n"),
		}, `{"specversion":"1.0","id":"1","source":"/o","type":"t","subject":"s\"<é","datacontenttype":"application/json","dataschema":"https://e.com/s","time":"2026-11-23T12:00:00.0000005-05:00","a":"1","b":"2","data":{"x": [1, 2]}}`},
		{"implied application/json", with(func(e *cloudevents.Event) { e.Data = []byte(`"hi"`) }),
			`{"specversion":"1.0","id":"1","source":"/orders","type":"order.created","datacontenttype":"application/json","data":"hi"}`},
		{"invalid JSON under a JSON type goes base64", with(func(e *cloudevents.Event) {
			e.DataContentType = "application/json"
			e.Data = []byte(`{`)
		}), `{"specversion":"1.0","id":"1","source":"/orders","type":"order.created","datacontenttype":"application/json","data_base64":"ew=="}`},
		{"text", with(func(e *cloudevents.Event) { e.DataContentType = "text/csv"; e.Data = []byte("a,b\n1,2\n") }),
			`{"specversion":"1.0","id":"1","source":"/orders","type":"order.created","datacontenttype":"text/csv","data":"a,b\n1,2\n"}`},
		{"binary", with(func(e *cloudevents.Event) { e.DataContentType = "image/png"; e.Data = []byte{0x89, 'P'} }),
			`{"specversion":"1.0","id":"1","source":"/orders","type":"order.created","datacontenttype":"image/png","data_base64":"iVA="}`},
		{"text that is not UTF-8 goes base64", with(func(e *cloudevents.Event) { e.DataContentType = "text/plain"; e.Data = []byte{0xff} }),
			`{"specversion":"1.0","id":"1","source":"/orders","type":"order.created","datacontenttype":"text/plain","data_base64":"/w=="}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.e.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tt.want {
				t.Fatalf("\n got %s\nwant %s", b, tt.want)
			}
			if !json.Valid(b) {
				t.Fatal("not valid JSON")
			}
			// encoding/json uses the methods too.
			var back cloudevents.Event
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			b2, err := json.Marshal(&back)
			if err != nil {
				t.Fatal(err)
			}
			var again cloudevents.Event
			if err := json.Unmarshal(b2, &again); err != nil {
				t.Fatal(err)
			}
			// json.Marshal compacts what MarshalJSON returns, so JSON data
			// keeps its value but not its white space.
			sameEvent(t, again, back)
		})
	}
}

func TestUnmarshalJSONCopiesInput(t *testing.T) {
	in := []byte(`{"specversion":"1.0","id":"1","source":"/","type":"t","data":{"a":1}}`)
	var e cloudevents.Event
	if err := e.UnmarshalJSON(in); err != nil {
		t.Fatal(err)
	}
	for i := range in {
		in[i] = 'x'
	}
	if e.ID != "1" || string(e.Data) != `{"a":1}` {
		t.Fatalf("event changed with its input: %s", show(e))
	}
}

// TestDataJSONAgreesWithEncodingJSON checks the package's JSON scanner
// against encoding/json on the data member: both accept or both refuse.
func TestDataJSONAgreesWithEncodingJSON(t *testing.T) {
	values := []string{
		`0`, `-0`, `-`, `01`, `1.`, `1.5`, `.5`, `1e5`, `1E+5`, `1e`, `1e-`, `-1.5e-10`, `2.5e3`,
		`true`, `tru`, `false`, `null`, `nul`, `"a"`, `"\u00e9"`, `"\u00g9"`, `"\x"`, `"a\"b"`, `"\/"`,
		`[]`, `[1,]`, `[,1]`, `[1 2]`, `[[]]`, `[[],[]]`, `[[],1]`, `[{},{"a":[]}]`, `[{}`, `[`, `]`,
		`{}`, `{"a":1}`, `{"a":1,}`, `{"a"}`, `{"a":}`, `{1:2}`, `{"a":{"b":{"c":[1,{"d":null}]}}}`,
		`{"a":[],"b":{}}`, `{"a":[]"b":1}`, `{"a":1}}`, `[1]]`, "\"\t\"", `[1,[2,[3,[4]]],5]`,
		`{"":""}`, `[[[[[[]]]]]]`, `[[[[[[]]]]]`, `{"a":[{}],"b":[[]],"c":"x"}`,
	}
	for _, v := range values {
		body := `{"specversion":"1.0","id":"1","source":"/","type":"t","data":` + v + `}`
		events, _, err := cloudevents.ReadRequest(request(cloudevents.MediaTypeStructured, nil, body), 0)
		if got, want := err == nil, json.Valid([]byte(body)); got != want {
			t.Errorf("data %s: accepted=%v, encoding/json valid=%v (err %v)", v, got, want, err)
			continue
		}
		if err == nil && string(events[0].Data) != v {
			t.Errorf("data %s: got %s", v, events[0].Data)
		}
	}
}
