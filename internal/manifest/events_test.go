package manifest

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/events/cron"
	"github.com/nimbus-dev/nimbus/internal/model"
)

func TestParseRate(t *testing.T) {
	for in, want := range map[string]Rate{
		"100/1s": {100, time.Second}, "10/1m": {10, time.Minute}, "100/s": {100, time.Second},
		"1/h": {1, time.Hour}, "5/500ms": {5, 500 * time.Millisecond}, "3 / 2m": {3, 2 * time.Minute},
	} {
		got, err := ParseRate(in)
		if err != nil || got != want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v", in, got, err, want)
		}
		if back, err := ParseRate(got.String()); err != nil || back != got {
			t.Errorf("ParseRate(%q.String() = %q) = %v, %v", in, got.String(), back, err)
		}
	}
	for _, in := range []string{"", "100", "0/1s", "100/1y", "1/5ms", "1/25h", "x/1s", "1000001/1s"} {
		if _, err := ParseRate(in); err == nil {
			t.Errorf("ParseRate(%q) succeeded", in)
		}
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"1s": time.Second, "7d": 7 * 24 * time.Hour, "1d12h": 36 * time.Hour, "90m": 90 * time.Minute, "0": 0,
	} {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "d", "7", "1w", "-1s", "99999999999d", "106751d24h"} {
		if _, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) succeeded", in)
		}
	}
	for d, want := range map[time.Duration]string{
		time.Hour: "1h", 5 * time.Minute: "5m", 90 * time.Second: "1m30s", 10 * time.Millisecond: "10ms",
		48 * time.Hour: "2d", 25 * time.Hour: "25h", time.Hour + time.Second: "1h0m1s",
	} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}

const eventsManifest = `app: shop
topics:
  orders: {}
buckets:
  counts: {}
functions:
  count:
    module: count.wasm
    capabilities: [kv:counts]
    triggers:
      - topic: orders
        filter: {type: order.created}
      - cron: "TZ=Europe/Paris 30 2 * * *"
        catch_up: 2h
    flow: {key: event.subject, key_concurrency: 1}
`

// TestEventsRegistry checks triggers and flow reach the registry record,
// that model.Plan accepts it, and that a trigger change is a new revision.
func TestEventsRegistry(t *testing.T) {
	plan := func(src string) *model.Revision {
		t.Helper()
		m, err := Parse("nimbus.yaml", []byte(src))
		if err != nil {
			t.Fatal(err)
		}
		rev, err := model.Plan(m.App, []model.Function{m.Functions[0].Registry(strings.Repeat("ab", 32))})
		if err != nil {
			t.Fatal(err)
		}
		return rev
	}
	rev := plan(eventsManifest)
	f := rev.Functions[0]
	want := []model.Trigger{
		{Name: "topic-orders", Kind: "topic", Topic: "orders", Filter: &model.EventFilter{Type: "order.created"},
			MaxAttempts: 5, BackoffMS: 1000, MaxBackoffMS: 300000, DeadLetter: "dead-letter"},
		{Name: "cron", Kind: "cron", Cron: "30 2 * * *", Timezone: "Europe/Paris", CatchUpMS: 7200000,
			MaxAttempts: 5, BackoffMS: 1000, MaxBackoffMS: 300000, DeadLetter: "dead-letter"},
	}
	if !reflect.DeepEqual(f.Triggers, want) {
		t.Errorf("triggers:\n got %+v\nwant %+v", f.Triggers, want)
	}
	if want := (&model.Flow{Key: "event.subject", KeyConcurrency: 1, Priority: 5}); !reflect.DeepEqual(f.Flow, want) {
		t.Errorf("flow = %+v, want %+v", f.Flow, want)
	}
	// The cron schedule in the record parses back to the same schedule.
	s, err := cron.Parse(f.Triggers[1].Cron, f.Triggers[1].Timezone)
	if err != nil || s.String() != "CRON_TZ=Europe/Paris 30 2 * * *" {
		t.Errorf("cron.Parse(record) = %v, %v", s, err)
	}
	for _, change := range []string{
		strings.Replace(eventsManifest, "order.created", "order.paid", 1),
		strings.Replace(eventsManifest, "catch_up: 2h", "catch_up: 3h", 1),
		strings.Replace(eventsManifest, "key_concurrency: 1", "key_concurrency: 2", 1),
		strings.Replace(eventsManifest, "    flow: {key: event.subject, key_concurrency: 1}\n", "", 1),
	} {
		if other := plan(change); other.ID == rev.ID || other.Functions[0].Revision == f.Revision {
			t.Errorf("a trigger or flow change kept revision %s:\n%s", rev.ID, change)
		}
	}

	// The record is a copy.
	m, _ := Parse("nimbus.yaml", []byte(eventsManifest))
	r := m.Functions[0].Registry("x")
	r.Triggers[0].Filter.Type = "changed"
	if m.Functions[0].Triggers[0].Filter.Type != "order.created" {
		t.Error("Registry shares the filter with the manifest")
	}
	// An app with events has the implicit dead-letter topic.
	if got := m.RegistryTopics(); len(got) != 2 || got[0].Name != "dead-letter" || got[1].Name != "orders" {
		t.Errorf("topics = %+v", got)
	}
}

// TestNoEventsUnchanged checks a manifest without events resolves as
// before: no topics (not even dead-letter), no triggers, no flow.
func TestNoEventsUnchanged(t *testing.T) {
	m, err := Parse("nimbus.yaml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	r := m.Functions[0].Registry("x")
	if m.Topics != nil || m.Buckets != nil || r.Triggers != nil || r.Flow != nil {
		t.Errorf("events in a manifest without them: %+v %+v %+v %+v", m.Topics, m.Buckets, r.Triggers, r.Flow)
	}
}
