package workflow

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestTopicFilterMatch(t *testing.T) {
	t.Parallel()
	ev := []byte(`{"specversion":"1.0","id":"e1","source":"/bank","type":"paid","tenant":"acme","data":{"order":"o-1","total":42,"ok":true}}`)
	var attrs map[string]json.RawMessage
	if err := json.Unmarshal(ev, &attrs); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		filter string
		want   bool
	}{
		{`{}`, true},
		{`{"type":"paid"}`, true},
		{`{"type":"refunded"}`, false},
		{`{"type":"paid","data.order":"o-1"}`, true},
		{`{"data.order":"o-2"}`, false},
		{`{"data.total":42}`, true},
		{`{"data.total":42.0}`, true},
		{`{"data.total":"42"}`, false},
		{`{"data.ok":true}`, true},
		{`{"data.missing":null}`, false},
		{`{"tenant":"acme","source":"/bank"}`, true},
		{`{"subject":"x"}`, false},
	} {
		tw, err := parseTopicWait([]byte(`{"topic":"payments","filter":` + c.filter + `}`))
		if err != nil {
			t.Fatalf("%s: %v", c.filter, err)
		}
		if got := (&eventView{attrs: attrs}).match(tw.Filter); got != c.want {
			t.Errorf("filter %s: match %v, want %v", c.filter, got, c.want)
		}
	}
}

func TestTopicWaitSpecErrors(t *testing.T) {
	t.Parallel()
	for _, spec := range []string{
		`not json`,
		`{"topic":"Bad Topic"}`,
		`{"topic":""}`,
		`{"topic":"payments","filter":{"data.":"x"}}`,
		`{"topic":"payments","filter":{"data":"x"}}`,
		`{"topic":"payments","filter":{"Type":"x"}}`,
	} {
		if _, err := ParseTopicWait([]byte(spec)); !errors.Is(err, ErrInvalid) {
			t.Errorf("spec %s: %v, want ErrInvalid", spec, err)
		}
	}
	if topic, err := ParseTopicWait([]byte(`{"topic":"payments","filter":{"type":"paid","after":7}}`)); err != nil || topic != "payments" {
		t.Errorf("a good spec: %q, %v", topic, err)
	}
}

// BenchmarkTopicMatch is the follower's cost per event and waiter: a
// filter of a type and a data field against a small event (with its
// data's decode, which the first waiter that looks at data pays), beside
// the baseline of decoding the event, which the follower does once per
// event.
func BenchmarkTopicMatch(b *testing.B) {
	ev := []byte(`{"specversion":"1.0","id":"e1","source":"/bank","type":"paid","data":{"order":"o-1","total":42}}`)
	tw, err := parseTopicWait([]byte(`{"topic":"payments","filter":{"type":"paid","data.order":"o-1"}}`))
	if err != nil {
		b.Fatal(err)
	}
	var attrs map[string]json.RawMessage
	b.Run("baseline-decode", func(b *testing.B) {
		for b.Loop() {
			attrs = nil
			json.Unmarshal(ev, &attrs)
		}
	})
	b.Run("match", func(b *testing.B) {
		for b.Loop() {
			if !(&eventView{attrs: attrs}).match(tw.Filter) {
				b.Fatal("no match")
			}
		}
	})
}
