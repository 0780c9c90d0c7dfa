package manifest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/model"
	"gopkg.in/yaml.v3"

	"github.com/nimbus-dev/nimbus/internal/capability"
)

const (
	schemaPath = "../../docs/manifest.schema.json"
	docPath    = "../../docs/manifest.md"
)

func loadSchema(t *testing.T) map[string]any {
	t.Helper()
	data, err := os.ReadFile(schemaPath)
	if err != nil {
		t.Fatal(err)
	}
	var s map[string]any
	if err := json.Unmarshal(data, &s); err != nil {
		t.Fatalf("schema is not JSON: %v", err)
	}
	if s["$schema"] != "https://json-schema.org/draft/2020-12/schema" {
		t.Errorf("$schema = %v, want draft 2020-12", s["$schema"])
	}
	return s
}

// TestSchemaFields walks the schema and checks each level lists exactly the
// fields the parser accepts, and the same enums.
func TestSchemaFields(t *testing.T) {
	s := loadSchema(t)
	v := &validator{root: s}
	obj := func(path ...string) map[string]any {
		var cur any = s
		for _, p := range path {
			m, ok := cur.(map[string]any)
			if !ok {
				t.Fatalf("schema: %s is not an object", strings.Join(path, "/"))
			}
			cur = m[p]
		}
		m, _ := cur.(map[string]any)
		return v.resolve(m)
	}
	props := func(m map[string]any) []string {
		var out []string
		for k := range m["properties"].(map[string]any) {
			out = append(out, k)
		}
		sort.Strings(out)
		return out
	}
	sorted := func(in []string) []string { out := slices.Clone(in); sort.Strings(out); return out }

	function := obj("properties", "functions", "additionalProperties")
	var routeObj map[string]any
	for _, alt := range obj("$defs", "route")["oneOf"].([]any) {
		if a := alt.(map[string]any); a["type"] == "object" {
			routeObj = a
		}
	}
	for _, c := range []struct {
		level  string
		schema map[string]any
		parser []string
	}{
		{"top", s, topFields},
		{"function", function, functionFields},
		{"build", v.resolve(function["properties"].(map[string]any)["build"].(map[string]any)), buildFields},
		{"route", routeObj, routeFields},
		{"route auth", obj("$defs", "routeAuth"), authFields},
		{"topic", obj("$defs", "topic"), topicFields},
		{"bucket", obj("$defs", "bucket"), bucketFields},
		{"topic trigger", v.resolve(triggerAlt(t, obj("$defs", "trigger"), "topic")), topicTriggerFields},
		{"cron trigger", v.resolve(triggerAlt(t, obj("$defs", "trigger"), "cron")), cronTriggerFields},
		{"bucket trigger", v.resolve(triggerAlt(t, obj("$defs", "trigger"), "bucket")), bucketTriggerFields},
		{"filter", obj("$defs", "filter"), filterFields},
		{"flow", obj("$defs", "flow"), flowFields},
		{"async", obj("$defs", "async"), asyncFields},
	} {
		if got, want := props(c.schema), sorted(c.parser); !reflect.DeepEqual(got, want) {
			t.Errorf("%s fields: schema has %v, parser accepts %v", c.level, got, want)
		}
		if c.schema["additionalProperties"] != false {
			t.Errorf("%s: schema must set additionalProperties: false, as the parser rejects unknown fields", c.level)
		}
	}
	fp := function["properties"].(map[string]any)
	enum := func(m map[string]any) []string {
		var out []string
		for _, e := range m["enum"].([]any) {
			out = append(out, e.(string))
		}
		return sorted(out)
	}
	capPattern := obj("$defs", "capability")["pattern"].(string)
	for _, kind := range capability.Kinds() {
		if !strings.Contains(capPattern, kind) {
			t.Errorf("schema capability pattern %s does not mention kind %s", capPattern, kind)
		}
	}
	if got := enum(fp["runtime"].(map[string]any)); !reflect.DeepEqual(got, sorted(model.Runtimes())) {
		t.Errorf("schema runtimes %v, model %v", got, model.Runtimes())
	}
	if got := enum(routeObj["properties"].(map[string]any)["method"].(map[string]any)); !reflect.DeepEqual(got, sorted(HTTPMethods)) {
		t.Errorf("schema methods %v, parser %v", got, HTTPMethods)
	}
	namePattern := regexp.MustCompile(obj("$defs", "name")["pattern"].(string))
	for _, name := range []string{"a", "ab", "a-b", "a1", "abc-", "-abc", "1abc", "Abc", "a_b", "a.b", "a b", "",
		strings.Repeat("a", model.MaxNameLen), strings.Repeat("a", model.MaxNameLen+1)} {
		if schema, parser := namePattern.MatchString(name), model.ValidName(name); schema != parser {
			t.Errorf("name %q: schema pattern says %v, model.ValidName says %v", name, schema, parser)
		}
	}
}

// triggerAlt returns the alternative of the trigger schema's oneOf that
// requires field.
func triggerAlt(t *testing.T, trigger map[string]any, field string) map[string]any {
	t.Helper()
	for _, alt := range trigger["oneOf"].([]any) {
		a := alt.(map[string]any)
		if req, _ := a["required"].([]any); len(req) == 1 && req[0] == field {
			return a
		}
	}
	t.Fatalf("schema: no trigger alternative requires %s", field)
	return nil
}

// TestSchemaValueSyntax checks the schema's patterns for capabilities,
// keys, rates and durations accept exactly what the parser's own functions
// accept, on a table of good and bad values.
func TestSchemaValueSyntax(t *testing.T) {
	s := loadSchema(t)
	v := &validator{root: s}
	def := func(name string) map[string]any { return s["$defs"].(map[string]any)[name].(map[string]any) }
	flowProps := def("flow")["properties"].(map[string]any)
	for _, c := range []struct {
		what   string
		schema map[string]any
		parse  func(string) error
		values []string
	}{
		{"capability", def("capability"), func(x string) error {
			c, err := capability.Parse(x)
			if err == nil && c.Kind == capability.KindPublish && c.Resource == "dead-letter" {
				return fmt.Errorf("refused by the parser")
			}
			return err
		}, []string{"log", "kv:counts", "kv:counts:read", "publish:orders", "publish:dead-letter", "kv:dead-letter:read", "subscribe:orders",
			"", "lgo", "kv", "kv:", "kv:Counts", "kv:counts:write", "kv:counts:read:x", "log:x", "publish", "publish:a:read", "subscribe", "subscribe:a:b",
			"kv:a-", "kv:-a", "kv:" + strings.Repeat("a", 64), "fetch", "kv:a b"}},
		{"event key", def("eventKey"), func(x string) error { _, err := EventKey(x); return err },
			[]string{"event.subject", "event.source", "event.type", "event.tenantid", "event.id", "event.time", "event.data",
				"event.", "event.Tenant", "subject", "event.a.b", "header.X", "event.a-b", "event." + strings.Repeat("a", 65)}},
		{"flow key", flowProps["key"].(map[string]any), func(x string) error { _, err := FlowKey(x); return err },
			[]string{"event.subject", "event.tenantid", "header.X-Tenant", "header.x-tenant", "query.tenant", "query.Tenant_ID",
				"event.id", "header.", "header.X Tenant", "header.X:Y", "query.", "query.a&b", "query.a=b", "tenant", "headers.X", "event.Type"}},
		{"rate", flowProps["rate"].(map[string]any), func(x string) error { _, err := ParseRate(x); return err },
			[]string{"100/1s", "10/1m", "1/h", "100/s", "5/500ms", "1000000/24h", "2/1m30s",
				"0/1s", "100", "100/", "/1s", "100/1y", "100/1d", "1/5ms", "10/25h", "1000001/1s", "-1/1s", "1.5/1s"}},
	} {
		for _, x := range c.values {
			schemaOK := len(v.validate(c.schema, x, c.what)) == 0
			parseErr := c.parse(x)
			if schemaOK != (parseErr == nil) {
				// The schema cannot express numeric ranges inside strings;
				// those are the parser's alone.
				if c.what == "rate" && schemaOK && parseErr != nil && strings.Contains(parseErr.Error(), "out of range") {
					continue
				}
				t.Errorf("%s %q: schema accepts: %v, parser error: %v", c.what, x, schemaOK, parseErr)
			}
		}
	}
	long := def("longDuration")
	for _, x := range []string{"1s", "90s", "1h30m", "7d", "1d12h", "0.5s", "10ms", "", "7", "d", "1w", "7 d", "1d1d", "-1s"} {
		_, err := ParseDuration(x)
		if ok := len(v.validate(long, x, "duration")) == 0; ok != (err == nil) {
			t.Errorf("duration %q: schema accepts: %v, ParseDuration error: %v", x, ok, err)
		}
	}
}

// exampleManifests returns every yaml block of docs/manifest.md, every
// examples/*/nimbus.yaml and every valid golden file, by a name for errors.
func exampleManifests(t *testing.T) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	doc, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?ms)^```yaml\n(.*?)^```").FindAllSubmatch(doc, -1)
	if len(blocks) < 2 {
		t.Fatalf("docs/manifest.md has %d yaml blocks; want the complete example and more", len(blocks))
	}
	for i, b := range blocks {
		out[fmt.Sprintf("docs/manifest.md block %d", i+1)] = b[1]
	}
	paths, _ := filepath.Glob("../../examples/*/nimbus.yaml")
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out[p] = data
	}
	for p, c := range goldenFiles(t, "valid") {
		out[p] = []byte(c[0])
	}
	return out
}

// TestExamplesValidate checks every example manifest passes both the parser
// and the JSON Schema.
func TestExamplesValidate(t *testing.T) {
	v := &validator{root: loadSchema(t)}
	for name, data := range exampleManifests(t) {
		if _, err := Parse("nimbus.yaml", data); err != nil {
			t.Errorf("%s: parser rejects it:\n%v", name, err)
		}
		var doc any
		if err := yaml.Unmarshal(data, &doc); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if errs := v.validate(v.root, doc, ""); len(errs) > 0 {
			t.Errorf("%s: schema rejects it:\n%s", name, strings.Join(errs, "\n"))
		}
	}
}

// TestSchemaRejectsBadGolden checks the schema also rejects bad manifests
// whose problem a schema can express (the rest need the parser: ranges,
// conflicts, path escapes, YAML syntax).
func TestSchemaRejectsBadGolden(t *testing.T) {
	v := &validator{root: loadSchema(t)}
	for _, name := range []string{
		"missing-app", "bad-app-name", "app-trailing-dash", "app-not-string", "unknown-top-field",
		"unknown-function-field", "bad-memory-unit", "memory-not-size", "memory-no-unit",
		"bad-timeout", "concurrency-wasm", "runtime-process", "runtime-bogus", "module-missing",
		"env-not-string", "env-bad-key", "capability-unknown", "capability-duplicate",
		"route-bad-method", "route-no-slash", "route-malformed", "functions-empty",
		"functions-null", "functions-list", "function-bad-name", "function-not-map", "build-bad",
		"max-instances",
		"trigger-unknown-kind", "trigger-kind-typo", "trigger-two-kinds", "cron-catch-up",
		"trigger-field-of-other-kind", "rate-bad", "key-concurrency-without-key", "priority-out-of-range",
		"ordering-key-bad", "flow-key-bad", "capability-bad-access", "capability-forms", "capability-publish-dead-letter",
		"topics-list", "topic-bad-options", "bucket-bad-options", "retry-bad", "bucket-trigger-bad", "filter-bad",
		"triggers-not-list", "trigger-not-map", "flow-bad", "trigger-name-duplicate", "route-auth-bad",
	} {
		data, err := os.ReadFile(filepath.Join("testdata", "errors", name+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		in, _, _ := strings.Cut(string(data), separator)
		var doc any
		if err := yaml.Unmarshal([]byte(in), &doc); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if errs := v.validate(v.root, doc, ""); len(errs) == 0 {
			t.Errorf("%s: schema accepts a manifest the parser rejects", name)
		}
	}
}

// validator is a JSON Schema validator for the keywords
// docs/manifest.schema.json uses. It fails on any other keyword, so the
// schema cannot grow a rule this test silently ignores.
type validator struct{ root map[string]any }

func (v *validator) resolve(s map[string]any) map[string]any {
	for i := 0; i < 8; i++ {
		ref, ok := s["$ref"].(string)
		if !ok {
			return s
		}
		var cur any = v.root
		for _, p := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			cur = cur.(map[string]any)[p]
		}
		merged := map[string]any{}
		for k, x := range cur.(map[string]any) {
			merged[k] = x
		}
		for k, x := range s {
			if k != "$ref" {
				merged[k] = x
			}
		}
		s = merged
	}
	return s
}

func typeOf(x any) string {
	switch x := x.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	case string:
		return "string"
	case bool:
		return "boolean"
	case int, int64, uint64:
		return "integer"
	case float64:
		if x == float64(int64(x)) {
			return "integer"
		}
		return "number"
	}
	return fmt.Sprintf("%T", x)
}

func (v *validator) validate(s map[string]any, x any, path string) []string {
	s = v.resolve(s)
	var errs []string
	fail := func(format string, args ...any) { errs = append(errs, path+": "+fmt.Sprintf(format, args...)) }
	for k, rule := range s {
		switch k {
		case "$schema", "$id", "$defs", "title", "description", "default":
		case "type":
			types := []any{rule}
			if l, ok := rule.([]any); ok {
				types = l
			}
			if !slices.ContainsFunc(types, func(t any) bool { return t == typeOf(x) }) {
				fail("type %s, want %v", typeOf(x), rule)
			}
		case "enum":
			y := x
			if i, ok := x.(int); ok {
				y = float64(i) // JSON numbers are float64, YAML integers int
			}
			if !slices.ContainsFunc(rule.([]any), func(e any) bool { return e == y }) {
				fail("%v not in %v", x, rule)
			}
		case "pattern":
			if str, ok := x.(string); ok && !regexp.MustCompile(rule.(string)).MatchString(str) {
				fail("%q does not match %s", str, rule)
			}
		case "minLength":
			if str, ok := x.(string); ok && len([]rune(str)) < int(rule.(float64)) {
				fail("shorter than %v", rule)
			}
		case "minimum", "maximum":
			var n float64
			switch x := x.(type) {
			case int:
				n = float64(x)
			case float64:
				n = x
			default:
				continue
			}
			if (k == "minimum" && n < rule.(float64)) || (k == "maximum" && n > rule.(float64)) {
				fail("%v violates %s %v", x, k, rule)
			}
		case "required":
			if m, ok := x.(map[string]any); ok {
				for _, r := range rule.([]any) {
					if _, ok := m[r.(string)]; !ok {
						fail("missing %s", r)
					}
				}
			}
		case "minItems":
			if l, ok := x.([]any); ok && len(l) < int(rule.(float64)) {
				fail("fewer than %v items", rule)
			}
		case "minProperties":
			if m, ok := x.(map[string]any); ok && len(m) < int(rule.(float64)) {
				fail("fewer than %v properties", rule)
			}
		case "properties", "additionalProperties", "propertyNames":
			m, ok := x.(map[string]any)
			if !ok {
				continue
			}
			props, _ := s["properties"].(map[string]any)
			for name, val := range m {
				switch k {
				case "properties":
					if ps, ok := props[name]; ok {
						errs = append(errs, v.validate(ps.(map[string]any), val, path+"."+name)...)
					}
				case "additionalProperties":
					if _, ok := props[name]; ok {
						continue
					}
					if rule == false {
						fail("unknown property %s", name)
					} else if rs, ok := rule.(map[string]any); ok {
						errs = append(errs, v.validate(rs, val, path+"."+name)...)
					}
				case "propertyNames":
					errs = append(errs, v.validate(rule.(map[string]any), name, path+".("+name+")")...)
				}
			}
		case "items":
			if l, ok := x.([]any); ok {
				for i, item := range l {
					errs = append(errs, v.validate(rule.(map[string]any), item, fmt.Sprintf("%s[%d]", path, i))...)
				}
			}
		case "uniqueItems":
			if l, ok := x.([]any); ok && rule == true {
				for i := range l {
					for j := i + 1; j < len(l); j++ {
						if reflect.DeepEqual(l[i], l[j]) {
							fail("items %d and %d are equal", i, j)
						}
					}
				}
			}
		case "oneOf":
			matched := 0
			for _, alt := range rule.([]any) {
				if len(v.validate(alt.(map[string]any), x, path)) == 0 {
					matched++
				}
			}
			if matched != 1 {
				fail("matches %d of oneOf, want 1", matched)
			}
		case "dependentRequired":
			if m, ok := x.(map[string]any); ok {
				for field, needs := range rule.(map[string]any) {
					if _, ok := m[field]; !ok {
						continue
					}
					for _, n := range needs.([]any) {
						if _, ok := m[n.(string)]; !ok {
							fail("%s requires %s", field, n)
						}
					}
				}
			}
		case "if":
			branch := "else"
			if len(v.validate(rule.(map[string]any), x, path)) == 0 {
				branch = "then"
			}
			if b, ok := s[branch].(map[string]any); ok {
				errs = append(errs, v.validate(b, x, path)...)
			}
		case "then", "else": // applied by "if"
		case "const":
			if x != rule {
				fail("%v is not %v", x, rule)
			}
		case "not":
			if len(v.validate(rule.(map[string]any), x, path)) == 0 {
				fail("matches a forbidden schema")
			}
		default:
			panic("schema keyword not supported by the test validator: " + k)
		}
	}
	return errs
}
