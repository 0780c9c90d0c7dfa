package policy_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/policy"
)

// The three rules docs/security.md shows.
const examples = `
- name: routes-need-auth
  expression: functions.all(f, f.routes.all(r, r.auth != "none"))
  message: every route must require auth (a key or a JWT)
- name: memory-cap
  expression: functions.all(f, f.memory <= quantity("256Mi"))
  message: a function may have at most 256MiB of memory
- name: no-egress-to-any-host
  expression: functions.all(f, f.egress.all(e, e.host != "*"))
  message: name the hosts a function calls; http:* is not allowed
`

func rev(fns ...model.Function) *model.Revision {
	return &model.Revision{App: "shop", Functions: fns}
}

func fn(name string, mem uint64, caps []string, routes ...string) model.Function {
	f := model.Function{Name: name, Runtime: "wasm", MemoryBytes: mem, TimeoutMS: 30000, Concurrency: 1, MaxInstances: 4, Capabilities: caps}
	for _, r := range routes {
		f.Routes = append(f.Routes, model.Route{Path: r})
	}
	return f
}

func TestExampleRules(t *testing.T) {
	p, err := policy.Parse("policy.yaml", []byte(examples))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(p.Rules()); got != 3 {
		t.Fatalf("%d rules", got)
	}
	cases := []struct {
		name string
		rev  *model.Revision
		want []string // rules broken
	}{
		{"compliant", rev(fn("worker", 128<<20, []string{"http:api.stripe.com", "log"})), nil},
		{"at the cap", rev(fn("worker", 256<<20, nil)), nil},
		{"memory over", rev(fn("worker", 512<<20, nil)), []string{"memory-cap"}},
		{"egress to any host", rev(fn("worker", 64<<20, []string{"http:GET *"})), []string{"no-egress-to-any-host"}},
		{"public route", rev(fn("web", 64<<20, nil, "/hello")), []string{"routes-need-auth"}},
		{"all three", rev(fn("a", 64<<20, nil, "/x"), fn("b", 1<<30, []string{"http:*"})), []string{"routes-need-auth", "memory-cap", "no-egress-to-any-host"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := p.Check(c.rev, "acme")
			var de *policy.DeniedError
			if c.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.As(err, &de) || !errors.Is(err, policy.ErrDenied) {
				t.Fatalf("got %v, want a DeniedError", err)
			}
			if de.Rules() != strings.Join(c.want, ",") {
				t.Fatalf("broke %s, want %s", de.Rules(), strings.Join(c.want, ","))
			}
			for _, v := range de.Violations {
				if !strings.Contains(err.Error(), v.Message) || !strings.Contains(err.Error(), `rule "`+v.Rule+`"`) {
					t.Fatalf("message %q lacks rule %s and its message", err, v.Rule)
				}
			}
		})
	}
}

// TestVariables: every documented variable and field is there, with its
// type.
func TestVariables(t *testing.T) {
	src := `
- name: shape
  expression: >-
    app == "shop" && tenant == "acme" && size(functions) == 2 &&
    functions[0].name == "w" && functions[0].kind == "function" && functions[0].runtime == "wasm" &&
    functions[0].isolation == "" && functions[0].memory == 128 * 1024 * 1024 &&
    functions[0].timeout == duration("30s") && functions[0].concurrency == 1 && functions[0].max_instances == 4 &&
    functions[0].routes[0].method == "POST" && functions[0].routes[0].path == "/pay" && functions[0].routes[0].auth == "none" &&
    functions[0].capabilities == ["http:POST https://api.stripe.com:8443", "secret:STRIPE_KEY", "kv:cart"] &&
    functions[0].egress[0].host == "api.stripe.com" && functions[0].egress[0].scheme == "https" &&
    functions[0].egress[0].port == 8443 && functions[0].egress[0].methods == ["POST"] &&
    functions[0].secrets == ["STRIPE_KEY"] && functions[0].env == ["MODE"] &&
    functions[0].triggers[0].kind == "cron" && functions[0].triggers[0].cron == "0 * * * *" &&
    functions[1].kind == "workflow" && functions[1].runtime == "process" && functions[1].isolation == "none" &&
    topics[0].name == "orders" && topics[0].max_event_bytes == 1024 && topics[0].retention == duration("1h") &&
    buckets[0].name == "cart" && buckets[0].ttl == duration("10s") && buckets[0].max_value_bytes == 2048 && buckets[0].history == 1
  message: the shape is as documented
`
	p, err := policy.Parse("shape.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	w := fn("w", 128<<20, []string{"http:POST https://api.stripe.com:8443", "secret:STRIPE_KEY", "kv:cart"})
	w.Routes = []model.Route{{Method: "POST", Path: "/pay"}}
	w.Env = map[string]string{"MODE": "live"}
	w.Triggers = []model.Trigger{{Name: "hourly", Kind: model.TriggerCron, Cron: "0 * * * *"}}
	wf := fn("flow", 64<<20, nil)
	wf.Kind, wf.Runtime, wf.Process = model.KindWorkflow, "process", &model.Process{Isolation: "none"}
	r := rev(w, wf)
	r.Topics = []model.Topic{{Name: "orders", MaxEventBytes: 1024, RetentionMS: time.Hour.Milliseconds()}}
	r.Buckets = []model.Bucket{{Name: "cart", TTLMS: 10000, MaxValueBytes: 2048, History: 1}}
	if err := p.Check(r, "acme"); err != nil {
		t.Fatal(err)
	}
	r.App = "other"
	if err := p.Check(r, "acme"); err == nil {
		t.Fatal("a rule that is false allowed the deploy")
	}
}

// TestFileErrors: a file that does not load names the file, line, column
// and rule.
func TestFileErrors(t *testing.T) {
	cases := []struct{ name, src, want string }{
		{"undeclared variable", "- name: mem\n  expression: fns.all(f, f.memory < 1)\n  message: m\n", `p.yaml:2:15: rule "mem": expression does not compile: undeclared reference to 'fns'`},
		{"unknown field", "- name: mem\n  expression: functions.all(f, f.memroy < 1)\n  message: m\n", `p.yaml:2:33: rule "mem": expression does not compile: undefined field 'memroy'`},
		{"syntax", "- name: s\n  expression: functions.all(f, f.memory <)\n  message: m\n", `p.yaml:2:`},
		{"not bool", "- name: n\n  expression: size(functions)\n  message: m\n", `p.yaml:2:15: rule "n": the expression is a int, not a bool`},
		{"bad quantity", "- name: q\n  expression: functions.all(f, f.memory <= quantity(\"256Mb\"))\n  message: m\n", `p.yaml:2:53: rule "q": size "256Mb": unknown unit "Mb"`},
		{"no message", "- name: n\n  expression: \"true\"\n", `p.yaml:1:3: rule "n": the rule needs a message`},
		{"duplicate", "- {name: a, expression: \"true\", message: m}\n- {name: a, expression: \"true\", message: m}\n", `p.yaml:2:3: rule "a": a second rule has this name`},
		{"unknown key", "- {name: a, expr: \"true\", message: m}\n", `p.yaml:1:13: rule "a": unknown key "expr"`},
		{"bad quota", "quotas:\n  default: {apps: zero}\n", `p.yaml:2:19: apps "zero": write a whole number of at least 1`},
		{"unknown quota", "quotas:\n  default: {cpus: 1}\n", `p.yaml:2:13: unknown quota "cpus"`},
		{"json", `[{"name": "j", "expression": "functions.size() > ", "message": "m"}]`, `p.yaml:1:30: rule "j": expression does not compile: Syntax error`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := policy.Parse("p.yaml", []byte(c.src))
			var fe *policy.FileError
			if !errors.As(err, &fe) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v\nwant it to contain %q", err, c.want)
			}
		})
	}
}

func TestQuotas(t *testing.T) {
	src := `
rules: []
quotas:
  default: {apps: 2, functions: 5, kv_bytes: 64KiB, requests_per_second: 10}
  tenants:
    big: {apps: 100, requests_per_second: unlimited}
`
	p, err := policy.Parse("q.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if q := p.QuotasOf("small"); q != (policy.Quotas{Apps: 2, Functions: 5, KVBytes: 64 << 10, RequestsPerSecond: 10}) {
		t.Fatalf("small: %+v", q)
	}
	if q := p.QuotasOf("big"); q != (policy.Quotas{Apps: 100, Functions: 5, KVBytes: 64 << 10}) {
		t.Fatalf("big: %+v", q)
	}
	if q := p.QuotasOf(""); q.Apps != 2 {
		t.Fatalf("default tenant: %+v", q)
	}
	var none *policy.Policy
	if none.QuotasOf("x") != (policy.Quotas{}) || none.Check(rev(fn("a", 1<<30, nil)), "") != nil {
		t.Fatal("a nil policy limits something")
	}
}

// TestRates: a tenant gets its rate in bursts of one second's worth, then
// a QuotaError whose RetryAfter is when a token is back; other tenants
// are not affected.
func TestRates(t *testing.T) {
	now := time.Unix(1000, 0)
	r := policy.NewRates(func() time.Time { return now })
	for i := range 5 {
		if err := r.Allow("a", 5); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	err := r.Allow("a", 5)
	var qe *policy.QuotaError
	if !errors.As(err, &qe) || qe.Quota != policy.QuotaRequestsPerSecond || qe.RetryAfter != 200*time.Millisecond {
		t.Fatalf("sixth request: %v (%+v)", err, qe)
	}
	if err := r.Allow("b", 5); err != nil {
		t.Fatalf("another tenant: %v", err)
	}
	now = now.Add(200 * time.Millisecond)
	if err := r.Allow("a", 5); err != nil {
		t.Fatalf("after RetryAfter: %v", err)
	}
	if err := r.Allow("a", 0); err != nil {
		t.Fatalf("no quota: %v", err)
	}
}

func TestParseBytes(t *testing.T) {
	for s, want := range map[string]int64{"256Mi": 256 << 20, "256MiB": 256 << 20, "1Gi": 1 << 30, "512KiB": 512 << 10, "1000": 1000, "10B": 10} {
		if got, err := policy.ParseBytes(s); err != nil || got != want {
			t.Errorf("%s: %d %v, want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "Mi", "1MB", "-1Ki", "1.5Gi"} {
		if _, err := policy.ParseBytes(s); err == nil {
			t.Errorf("%q parsed", s)
		}
	}
}

// docBlocks returns the ```yaml blocks of docs/security.md's sections on
// policies and quotas.
func docBlocks(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	start, end := strings.Index(doc, "## Policy on deploy"), strings.Index(doc, "## Audit log")
	if start < 0 || end < start {
		t.Fatal("docs/security.md has no Policy on deploy section before Audit log")
	}
	var blocks []string
	for rest := doc[start:end]; ; {
		i := strings.Index(rest, "```yaml\n")
		if i < 0 {
			break
		}
		rest = rest[i+len("```yaml\n"):]
		j := strings.Index(rest, "```")
		blocks = append(blocks, rest[:j])
		rest = rest[j+3:]
	}
	return blocks
}

// TestDocExamples: every policy file docs/security.md shows loads, and
// each of its "more examples" allows and refuses what its message says.
func TestDocExamples(t *testing.T) {
	blocks := docBlocks(t)
	if len(blocks) != 3 {
		t.Fatalf("%d yaml blocks in the policy sections, want 3", len(blocks))
	}
	var ps []*policy.Policy
	for i, b := range blocks {
		p, err := policy.Parse(fmt.Sprintf("block %d", i), []byte(b))
		if err != nil {
			t.Fatalf("docs/security.md block %d: %v\n%s", i, err, b)
		}
		ps = append(ps, p)
	}
	if q := ps[2].QuotasOf("team-a"); q != (policy.Quotas{Apps: 100, Functions: 20, KVBytes: 64 << 20}) {
		t.Fatalf("the quotas example gives team-a %+v", q)
	}
	more := ps[1]
	if len(more.Rules()) != 4 {
		t.Fatalf("more examples: %d rules", len(more.Rules()))
	}
	ok := fn("w", 64<<20, []string{"http:https://api.stripe.com"})
	for _, c := range []struct {
		tenant string
		change func(*model.Function)
		want   string
	}{
		{"team-b", func(*model.Function) {}, ""},
		{"team-b", func(f *model.Function) { f.Capabilities = []string{"http:api.stripe.com"} }, "https-only-egress"},
		{"team-b", func(f *model.Function) { f.TimeoutMS = 60000 }, "short-timeouts"},
		{"team-b", func(f *model.Function) { f.TimeoutMS, f.Kind = 60000, model.KindWorkflow }, ""},
		{"team-b", func(f *model.Function) { f.Runtime, f.Process = "process", &model.Process{Isolation: "none"} }, "sandboxed-processes"},
		{"team-b", func(f *model.Function) { f.Runtime, f.Process = "process", &model.Process{Isolation: "sandbox"} }, ""},
		{"team-b", func(f *model.Function) { f.Capabilities = append(f.Capabilities, "secret:K") }, ""},
		{"team-a", func(f *model.Function) { f.Capabilities = append(f.Capabilities, "secret:K") }, "team-a-no-secrets"},
	} {
		f := ok
		c.change(&f)
		err := more.Check(rev(f), c.tenant)
		var de *policy.DeniedError
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%+v refused: %v", f, err)
		case c.want != "" && (!errors.As(err, &de) || de.Rules() != c.want):
			t.Errorf("%+v: %v, want only %s broken", f, err, c.want)
		}
	}
}

// BenchmarkRatesAllow is the per-request cost of the requests/s quota.
func BenchmarkRatesAllow(b *testing.B) {
	r := policy.NewRates(nil)
	for b.Loop() {
		r.Allow("acme", 1e12)
	}
}

// BenchmarkCheck is the cost of the documented rules on a deploy of
// eight functions ("rules"), beside encoding the same revision as JSON
// ("baseline-json"), which every deploy does to store it: compare the
// two as a ratio.
func BenchmarkCheck(b *testing.B) {
	p, err := policy.Parse("policy.yaml", []byte(examples))
	if err != nil {
		b.Fatal(err)
	}
	var fns []model.Function
	for i := range 8 {
		fns = append(fns, fn(fmt.Sprint("f", i), 64<<20, []string{"http:api.stripe.com", "log"}))
	}
	r := rev(fns...)
	b.Run("rules", func(b *testing.B) {
		for b.Loop() {
			if err := p.Check(r, "acme"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("baseline-json", func(b *testing.B) {
		for b.Loop() {
			if _, err := json.Marshal(r); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestFailsClosed: a rule that cannot be evaluated (an index out of
// range, a cost over CostLimit) refuses the deploy, saying why.
func TestFailsClosed(t *testing.T) {
	p, err := policy.Parse("p.yaml", []byte(`
- name: second-function
  expression: functions[1].name != ""
  message: m1
- name: expensive
  expression: functions.all(f, functions.all(g, functions.all(h, f.name + g.name + h.name != "")))
  message: m2
`))
	if err != nil {
		t.Fatal(err)
	}
	var de *policy.DeniedError
	if err := p.Check(rev(fn("a", 1<<20, nil)), ""); !errors.As(err, &de) || de.Rules() != "second-function" ||
		!strings.Contains(err.Error(), "could not be evaluated") {
		t.Fatalf("one function: %v", err)
	}
	// Long names make each concatenation cost more, so the limit is met
	// after a few thousand of them.
	var fns []model.Function
	for i := range 30 {
		fns = append(fns, fn(fmt.Sprint(i, strings.Repeat("f", 4096)), 1<<20, nil))
	}
	if err := p.Check(rev(fns...), ""); !errors.As(err, &de) || de.Rules() != "expensive" ||
		!strings.Contains(de.Violations[0].Error, "cost") {
		t.Fatalf("30 functions: %v", err)
	}
}
