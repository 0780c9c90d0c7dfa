package model

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func baseFunction() Function {
	return Function{
		Name: "api", Runtime: "wasm", Module: strings.Repeat("ab", 32), MemoryBytes: 128 << 20,
		TimeoutMS: 30000, Concurrency: 1, MaxInstances: 16, MaxRequestBytes: 6 << 20, MaxResponseBytes: 6 << 20,
		Env: map[string]string{"A": "b"}, Capabilities: []string{"log"}, Routes: []Route{{Method: "GET", Path: "/x"}},
	}
}

// TestIDsStableWithoutTriggers pins the ids of a function without triggers
// or flow, computed before those fields existed: adding them must not give
// every deployed app a new revision.
func TestIDsStableWithoutTriggers(t *testing.T) {
	rev, err := Plan("shop", []Function{baseFunction()})
	if err != nil {
		t.Fatal(err)
	}
	if want := "8c16faf143b65f8e573e24c562a442abb3b041fcc9329f465c13c93c2b149605"; rev.ID != want {
		t.Errorf("revision id = %s, want %s (unchanged since before triggers)", rev.ID, want)
	}
	if want := "0654d1811392cccf364c15aedac1693e8aafcf9633450d796274cb3024b1d82c"; rev.Functions[0].Revision != want {
		t.Errorf("function revision = %s, want %s", rev.Functions[0].Revision, want)
	}
}

// TestTriggersAndFlowAreContentAddressed checks every change to a trigger or
// to flow control makes a new function revision and a new revision id.
func TestTriggersAndFlowAreContentAddressed(t *testing.T) {
	topic := Trigger{Name: "topic-orders", Kind: TriggerTopic, Topic: "orders", MaxAttempts: 5,
		BackoffMS: 1000, MaxBackoffMS: 300000, DeadLetter: DeadLetterTopic}
	cron := Trigger{Name: "cron", Kind: TriggerCron, Cron: "*/5 * * * *", Timezone: "UTC",
		CatchUpMS: CatchUpNoLimit, MaxAttempts: 5, BackoffMS: 1000, MaxBackoffMS: 300000, DeadLetter: DeadLetterTopic}
	withTriggers := func(ts ...Trigger) Function { f := baseFunction(); f.Triggers = ts; return f }
	withFlow := func(fl Flow) Function { f := baseFunction(); f.Flow = &fl; return f }
	mod := func(tr Trigger, change func(*Trigger)) Trigger { change(&tr); return tr }

	cases := map[string]Function{
		"none":          baseFunction(),
		"topic":         withTriggers(topic),
		"topic+cron":    withTriggers(topic, cron),
		"filter":        withTriggers(mod(topic, func(t *Trigger) { t.Filter = &EventFilter{Type: "order.created"} })),
		"attempts":      withTriggers(mod(topic, func(t *Trigger) { t.MaxAttempts = 6 })),
		"ordering":      withTriggers(mod(topic, func(t *Trigger) { t.OrderingKey = "event.subject" })),
		"dead-letter":   withTriggers(mod(topic, func(t *Trigger) { t.DeadLetter = "failed" })),
		"name":          withTriggers(mod(topic, func(t *Trigger) { t.Name = "orders" })),
		"cron":          withTriggers(cron),
		"cron-tz":       withTriggers(mod(cron, func(t *Trigger) { t.Timezone = "Europe/Paris" })),
		"cron-catch-up": withTriggers(mod(cron, func(t *Trigger) { t.CatchUpMS = 0 })),
		"flow":          withFlow(Flow{Priority: DefaultPriority}),
		"flow-priority": withFlow(Flow{Priority: 9}),
		"flow-rate":     withFlow(Flow{Priority: 5, Rate: &Rate{Limit: 10, PeriodMS: 1000}}),
		"flow-key":      withFlow(Flow{Priority: 5, Key: "event.subject", KeyConcurrency: 1}),
		"flow-debounce": withFlow(Flow{Priority: 5, DebounceMS: 2000}),
		"flow-max-conc": withFlow(Flow{Priority: 5, MaxConcurrency: 10}),
	}
	ids, fnRevs := map[string]string{}, map[string]string{}
	for name, f := range cases {
		rev, err := Plan("shop", []Function{f})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if other, dup := ids[rev.ID]; dup {
			t.Errorf("%s and %s have the same revision id", name, other)
		}
		if other, dup := fnRevs[rev.Functions[0].Revision]; dup {
			t.Errorf("%s and %s have the same function revision", name, other)
		}
		ids[rev.ID], fnRevs[rev.Functions[0].Revision] = name, name
		if !reflect.DeepEqual(rev.Functions[0].Triggers, f.Triggers) || !reflect.DeepEqual(rev.Functions[0].Flow, f.Flow) {
			t.Errorf("%s: Plan changed triggers or flow", name)
		}
	}
}

// TestRevisionJSON checks the new records survive a JSON round trip (how
// the registry stores them and the API sends them) and that an app without
// events encodes as before.
func TestRevisionJSON(t *testing.T) {
	f := baseFunction()
	f.Triggers = []Trigger{{Name: "bucket-counts", Kind: TriggerBucket, Bucket: "counts", KeyPrefix: "orders.",
		OrderingKey: "event.subject", MaxAttempts: 3, BackoffMS: 10, MaxBackoffMS: 20, DeadLetter: DeadLetterTopic}}
	f.Flow = &Flow{MaxConcurrency: 4, Key: "header.X-Tenant", KeyConcurrency: 1, Rate: &Rate{Limit: 100, PeriodMS: 1000}, DebounceMS: 5, Priority: 2}
	rev := Revision{ID: "x", App: "shop", Functions: []Function{f},
		Topics:  []Topic{{Name: "dead-letter", MaxEventBytes: 1 << 20, RetentionMS: 1}, {Name: "orders", MaxEventBytes: 1024, RetentionMS: 2}},
		Buckets: []Bucket{{Name: "counts", TTLMS: 1000, MaxValueBytes: 1 << 20, History: 1}}}
	b, err := json.Marshal(rev)
	if err != nil {
		t.Fatal(err)
	}
	var back Revision
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, rev) {
		t.Errorf("round trip:\n got %+v\nwant %+v", back, rev)
	}

	plain, err := json.Marshal(Revision{ID: "x", App: "a", Functions: []Function{baseFunction()}})
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{"triggers", "flow", "topics", "buckets"} {
		if strings.Contains(string(plain), `"`+field+`"`) {
			t.Errorf("a revision without events encodes %q: %s", field, plain)
		}
	}
}

// TestOneNameRule: the API, the manifest and storage share model.ValidName,
// so what one refuses the others do too (the registry once accepted upper
// case, '_' and a leading digit that the manifest refused).
func TestOneNameRule(t *testing.T) {
	for name, ok := range map[string]bool{
		"a": true, "shop": true, "my-app": true, "a1": true, strings.Repeat("a", MaxNameLen): true,
		"": false, "Shop": false, "my_app": false, "1app": false, "app-": false, "-app": false,
		"a.b": false, "a*": false, "a b": false, strings.Repeat("a", MaxNameLen+1): false,
	} {
		if got := ValidName(name); got != ok {
			t.Errorf("ValidName(%q) = %v, want %v", name, got, ok)
		}
		err := CheckName("app", name)
		if (err == nil) != ok || err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("CheckName(%q) = %v", name, err)
		}
		_, err = Plan(name, []Function{baseFunction()})
		if (err == nil) != ok {
			t.Errorf("Plan(%q): %v, want ok=%v", name, err, ok)
		}
	}
}

func TestRuntimeNamesAreOneList(t *testing.T) {
	for _, name := range Runtimes() {
		if err := CheckRuntime(name); err != nil {
			t.Errorf("CheckRuntime(%q) = %v", name, err)
		}
	}
	// A process function needs a command; its other settings get defaults.
	fn := baseFunction()
	fn.Runtime = RuntimeProcess
	if _, err := Plan("app", []Function{fn}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "needs a command") {
		t.Fatalf("Plan with runtime process and no command: %v", err)
	}
	fn.Process = &Process{Command: []string{"python3", "app.py"}}
	rev, err := Plan("app", []Function{fn})
	if err != nil {
		t.Fatalf("Plan with runtime process: %v", err)
	}
	if p := rev.Functions[0].Process; p.Contract != ContractHTTP || p.Isolation != IsolationSandbox {
		t.Fatalf("process defaults = %+v, want contract http, isolation sandbox", p)
	}
	for _, tc := range []struct {
		mutate func(*Function)
		want   string
	}{
		{func(f *Function) { f.Runtime = RuntimeWasm }, "only for runtime"},
		{func(f *Function) { f.Process.Contract = ContractLambda; f.Process.ReadinessPath = "/healthz" }, "a Lambda runtime is ready when"},
		{func(f *Function) { f.Process.Contract = "grpc" }, "unknown contract"},
		{func(f *Function) { f.Process.Isolation = "off" }, "unknown isolation"},
		{func(f *Function) { f.Process.ReadinessPath = "healthz" }, "must start with '/'"},
		{func(f *Function) { f.Process.Command = []string{""} }, "command[0] is empty"},
	} {
		f := baseFunction()
		f.Runtime = RuntimeProcess
		f.Process = &Process{Command: []string{"python3", "app.py"}}
		tc.mutate(&f)
		if _, err := Plan("app", []Function{f}); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Plan(%+v) = %v, want %q", f.Process, err, tc.want)
		}
	}
	if err := CheckRuntime("bogus"); err == nil || !strings.Contains(err.Error(), `"wasm"`) {
		t.Fatalf("CheckRuntime(bogus) = %v, want a message naming wasm", err)
	}
}
