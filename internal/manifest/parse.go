package manifest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/nimbus-dev/nimbus/internal/model"
)

// The fields each level of the manifest accepts, in documentation order. The
// schema test checks docs/manifest.schema.json lists exactly these.
var (
	topFields      = []string{"app", "topics", "buckets", "functions"}
	functionFields = []string{"runtime", "module", "command", "contract", "readiness", "isolation", "build", "memory", "timeout", "concurrency",
		"max_instances", "max_request_body", "max_response_body", "env", "capabilities", "routes",
		"triggers", "flow", "async", "kind"}
	buildFields = []string{"command", "dir"}
	routeFields = []string{"method", "path", "auth"}
)

var (
	yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)
	// starValue finds "key: *..." where the value is not an alias name.
	starValue = regexp.MustCompile(`([A-Za-z_]+):\s+(\*[^A-Za-z0-9_\s,}][^,}\n]*|\*\s[^,}\n]*)`)
)

// parser collects the errors of one manifest.
type parser struct {
	file string // display name for positions
	dir  string // absolute directory of the manifest
	errs []*FieldError
	// routeNodes is every syntactically valid route of the app, in file
	// order, for conflict checking once all functions are read.
	routeNodes []route
	// topicNames and bucketNames are the names the manifest declares, read
	// before the functions that refer to them.
	topicNames, bucketNames []string
}

func (p *parser) pos(n *yaml.Node) Position {
	return Position{File: p.file, Line: n.Line, Col: n.Column}
}

func (p *parser) errorf(n *yaml.Node, field, format string, args ...any) {
	p.errs = append(p.errs, &FieldError{Pos: p.pos(n), Field: field, Msg: fmt.Sprintf(format, args...)})
}

func parse(display, abs string, data []byte) (*Manifest, error) {
	p := &parser{file: display, dir: filepath.Dir(abs)}
	m := &Manifest{File: abs, Dir: p.dir}

	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil && !errors.Is(err, io.EOF) {
		p.syntaxError(data, err)
		return nil, finish(p.errs)
	}
	if doc.Kind == 0 || len(doc.Content) == 0 || isNull(doc.Content[0]) {
		p.errs = append(p.errs, &FieldError{Pos: Position{File: display, Line: 1, Col: 1},
			Msg: "the manifest is empty: it needs app and functions (see docs/manifest.md)"})
		return nil, finish(p.errs)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		p.errs = append(p.errs, &FieldError{Pos: Position{File: display, Line: extra.Line, Col: extra.Column},
			Msg: "a manifest is one YAML document: remove the '---' and what follows, or move it to its own app"})
	} else if !errors.Is(err, io.EOF) {
		p.syntaxError(data, err)
	}

	root := deref(doc.Content[0])
	if root.Kind != yaml.MappingNode {
		p.errorf(root, "", "the manifest must be a map with the fields app and functions, not %s", describe(root))
		return nil, finish(p.errs)
	}
	fields := p.mapping(root, "", topFields)
	if n, ok := fields.get("app"); ok {
		m.App = p.name(n.value, "app", "app name")
	} else {
		p.missing(fields, root, "", "app", "required field is missing: name the app, such as app: hello")
	}
	if n, ok := fields.get("topics"); ok {
		m.Topics = p.topics(n.key, n.value)
	}
	if n, ok := fields.get("buckets"); ok {
		m.Buckets = p.buckets(n.key, n.value)
	}
	if n, ok := fields.get("functions"); ok {
		m.Functions = p.functions(n.key, n.value)
	} else {
		p.missing(fields, root, "", "functions", "required field is missing: declare at least one function")
	}
	p.checkRoutes()
	m.addDeadLetter()
	if err := finish(p.errs); err != nil {
		return nil, err
	}
	return m, nil
}

// syntaxError reports a YAML syntax error. Tabs in indentation are the most
// common cause and yaml.v3's message for them is cryptic, so they get their
// own.
func (p *parser) syntaxError(data []byte, err error) {
	for i, line := range bytes.Split(data, []byte("\n")) {
		indent := line[:len(line)-len(bytes.TrimLeft(line, " \t"))]
		if col := bytes.IndexByte(indent, '\t'); col >= 0 {
			p.errs = append(p.errs, &FieldError{Pos: Position{File: p.file, Line: i + 1, Col: col + 1},
				Msg: "YAML does not allow tabs for indentation: indent with spaces"})
			return
		}
	}
	// An unquoted cron schedule ("cron: */5 * * * *") is the likeliest
	// YAML error of a manifest with triggers: '*' starts an alias.
	for i, line := range bytes.Split(data, []byte("\n")) {
		if loc := starValue.FindSubmatchIndex(line); loc != nil {
			key, value := string(line[loc[2]:loc[3]]), strings.TrimSpace(string(line[loc[4]:loc[5]]))
			p.errs = append(p.errs, &FieldError{Pos: Position{File: p.file, Line: i + 1, Col: loc[4] + 1},
				Msg: fmt.Sprintf("invalid YAML: a value starting with '*' must be quoted, because YAML reads *name as an alias: write %s: %q", key, value)})
			return
		}
	}
	msg := err.Error()
	pos := Position{File: p.file}
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		pos.Line, _ = strconv.Atoi(m[1])
		msg = m[2]
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	p.errs = append(p.errs, &FieldError{Pos: pos, Msg: "invalid YAML: " + msg})
}

// pair is one key and value of a YAML map.
type pair struct{ key, value *yaml.Node }

// fieldSet is the known fields of a map, by name.
type fieldSet struct {
	fields map[string]pair
	// suggested holds the fields that an unknown key was reported as a
	// likely typo of; a missing required field among them is not reported
	// again.
	suggested map[string]bool
}

func (f fieldSet) get(name string) (pair, bool) { p, ok := f.fields[name]; return p, ok }

// missing reports a required field that is absent, unless a typo of it was
// already reported.
func (p *parser) missing(f fieldSet, n *yaml.Node, field, name, format string, args ...any) {
	if !f.suggested[name] {
		p.errorf(n, join(field, name), format, args...)
	}
}

// pairs returns the entries of a map node in order, reporting duplicate keys
// and keys that are not plain scalars.
func (p *parser) pairs(n *yaml.Node, path string) []pair {
	var out []pair
	seen := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			p.errorf(k, path, "a key must be a plain name, not %s", describe(k))
			continue
		}
		if k.Tag == "!!merge" {
			p.errorf(k, join(path, k.Value), "YAML merge keys (<<) are not supported: write the fields out")
			continue
		}
		if first, dup := seen[k.Value]; dup {
			p.errorf(k, join(path, k.Value), "duplicate key: %q is already set at line %d", k.Value, first.Line)
			continue
		}
		seen[k.Value] = k
		out = append(out, pair{k, deref(v)})
	}
	return out
}

// mapping returns the fields of map node n, reporting unknown ones.
func (p *parser) mapping(n *yaml.Node, path string, allowed []string) fieldSet {
	out := fieldSet{fields: map[string]pair{}, suggested: map[string]bool{}}
	for _, kv := range p.pairs(n, path) {
		if !slices.Contains(allowed, kv.key.Value) {
			if s := p.unknownField(kv.key, path, allowed); s != "" {
				out.suggested[s] = true
			}
			continue
		}
		out.fields[kv.key.Value] = kv
	}
	return out
}

// unknownField reports an unknown key and returns the field it is likely a
// typo of, or "".
func (p *parser) unknownField(k *yaml.Node, path string, allowed []string) string {
	hint := ""
	s := suggest(k.Value, allowed)
	if s != "" {
		hint = fmt.Sprintf(": did you mean %q?", s)
	}
	p.errorf(k, join(path, k.Value), "unknown field%s (allowed: %s)", hint, strings.Join(allowed, ", "))
	return s
}

func (p *parser) name(n *yaml.Node, field, what string) string {
	s, ok := p.str(n, field)
	if !ok {
		return ""
	}
	if !model.ValidName(s) {
		p.errorf(n, field, "%q is not a valid %s: use %s", s, what, model.NameRule)
		return ""
	}
	return s
}

// str returns the string value of a scalar node, reporting anything else.
func (p *parser) str(n *yaml.Node, field string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		p.errorf(n, field, "must be a string, not %s", describe(n))
		return "", false
	}
	return n.Value, true
}

func (p *parser) functions(key, n *yaml.Node) []*Function {
	if isNull(n) {
		p.errorf(valueOrKey(n, key), "functions", "declare at least one function")
		return nil
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(valueOrKey(n, key), "functions", "must be a map of function name to function, not %s", describe(n))
		return nil
	}
	kvs := p.pairs(n, "functions")
	if len(kvs) == 0 && len(n.Content) == 0 {
		p.errorf(valueOrKey(n, key), "functions", "declare at least one function")
		return nil
	}
	var out []*Function
	for _, kv := range kvs {
		if f := p.function(kv.key, kv.value); f != nil {
			out = append(out, f)
		}
	}
	return out
}

func (p *parser) function(key, n *yaml.Node) *Function {
	path := "functions." + key.Value
	f := &Function{
		Name:             key.Value,
		Runtime:          RuntimeWasm,
		MemoryBytes:      DefaultMemoryBytes,
		Timeout:          DefaultTimeout,
		Concurrency:      DefaultConcurrency,
		MaxInstances:     DefaultMaxInstances,
		MaxRequestBytes:  DefaultMaxBodyBytes,
		MaxResponseBytes: DefaultMaxBodyBytes,
		Env:              map[string]string{},
		Pos:              p.pos(key),
	}
	if !model.ValidName(key.Value) {
		p.errorf(key, path, "%q is not a valid function name: use %s", key.Value, model.NameRule)
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(valueOrKey(n, key), path, "a function must be a map with at least module, not %s", describe(n))
		return nil
	}
	fields := p.mapping(n, path, functionFields)

	if kv, ok := fields.get("runtime"); ok {
		if s, ok := p.str(kv.value, path+".runtime"); ok {
			if err := model.CheckRuntime(s); err != nil {
				p.errorf(kv.value, path+".runtime", "%v", err)
			}
			f.Runtime = s
		}
	}
	if kv, ok := fields.get("module"); ok {
		if s, ok := p.str(kv.value, path+".module"); ok {
			if f.Runtime == RuntimeProcess && s == "." {
				f.Module = p.dir
			} else {
				f.Module = p.localPath(kv.value, path+".module", s, "module", "hello/hello.wasm")
			}
		}
	} else if f.Runtime == RuntimeProcess {
		f.Module = p.dir // a process function ships the manifest's directory
	} else {
		p.missing(fields, key, path, "module", "required field is missing: set it to the path of the function's .wasm file, relative to the manifest")
	}
	p.process(fields, key, path, f)
	if kv, ok := fields.get("build"); ok {
		f.Build = p.build(kv.key, kv.value, path+".build")
	}
	if kv, ok := fields.get("memory"); ok {
		if v, ok := p.size(kv.value, path+".memory", MinMemoryBytes, MaxMemoryBytes, "64MiB"); ok {
			// Wasm memory grows in 64KiB pages; round up rather than make
			// users do the arithmetic for 1000-based units.
			f.MemoryBytes = v
			if f.Runtime == RuntimeWasm {
				f.MemoryBytes = (v + WasmPageBytes - 1) / WasmPageBytes * WasmPageBytes
			}
		}
	}
	if kv, ok := fields.get("timeout"); ok {
		f.Timeout = p.duration(kv.value, path+".timeout", f.Timeout)
	}
	if kv, ok := fields.get("concurrency"); ok {
		if v, ok := p.integer(kv.value, path+".concurrency", 1, defaultMaxConcurrency); ok {
			f.Concurrency = v
			if v != 1 && f.Runtime == RuntimeWasm {
				p.errorf(kv.value, path+".concurrency", "must be 1 for runtime wasm: a wasm instance is single-threaded and serves one request at a time; to serve more at once, raise max_instances")
			}
		}
	}
	if kv, ok := fields.get("max_instances"); ok {
		if v, ok := p.integer(kv.value, path+".max_instances", 1, MaxMaxInstances); ok {
			f.MaxInstances = v
		}
	}
	if kv, ok := fields.get("max_request_body"); ok {
		if v, ok := p.size(kv.value, path+".max_request_body", 1, uint64(MaxBodyBytes), "1MiB"); ok {
			f.MaxRequestBytes = int64(v)
		}
	}
	if kv, ok := fields.get("max_response_body"); ok {
		if v, ok := p.size(kv.value, path+".max_response_body", 1, uint64(MaxBodyBytes), "6MiB"); ok {
			f.MaxResponseBytes = int64(v)
		}
	}
	if kv, ok := fields.get("env"); ok {
		p.env(kv.key, kv.value, path+".env", f.Env)
	}
	if kv, ok := fields.get("capabilities"); ok {
		f.Capabilities = p.capabilities(kv.key, kv.value, path+".capabilities")
	}
	if kv, ok := fields.get("routes"); ok {
		f.Routes = p.routes(kv.key, kv.value, path+".routes", f)
	}
	if kv, ok := fields.get("triggers"); ok {
		f.Triggers = p.triggers(kv.key, kv.value, path+".triggers")
	}
	if kv, ok := fields.get("flow"); ok {
		f.Flow = p.flow(kv.key, kv.value, path+".flow")
	}
	if kv, ok := fields.get("async"); ok {
		f.Async = p.async(kv.key, kv.value, path+".async")
	}
	if kv, ok := fields.get("kind"); ok {
		p.kind(kv.value, path, f, fields)
	}
	if kv, ok := fields.get("flow"); ok && f.Flow != nil {
		p.flowForKind(kv.value, path+".flow", f)
	}
	return f
}

// flowForKind checks what of a flow block depends on the function's kind:
// a workflow's runs are keyed on their input (input.<field>, or
// event.<attribute> of the event a trigger started them with), and a
// function's invocations on their request or event; a workflow's starts
// are durable runs, so debounce (which drops all but the last) does not
// apply.
func (p *parser) flowForKind(n *yaml.Node, path string, f *Function) {
	child := func(name string) *yaml.Node {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == name {
				return n.Content[i+1]
			}
		}
		return n
	}
	key := f.Flow.Key
	if f.Kind != model.KindWorkflow {
		if strings.HasPrefix(key, "input.") {
			p.errorf(child("key"), path+".key", "%q keys a workflow's runs on their input; a function's invocations are keyed by what they carry: use %s", key, functionKeyForms)
		}
		return
	}
	if strings.HasPrefix(key, "header.") || strings.HasPrefix(key, "query.") {
		p.errorf(child("key"), path+".key", "%q: a workflow's runs are keyed on their input, which has no headers or query: use input.<field> (a field of the run's JSON input, such as input.customer) or event.<attribute> (for runs its triggers start)", key)
	}
	if f.Flow.Debounce > 0 {
		p.errorf(child("debounce"), path+".debounce", "does not apply to a workflow: every start is a durable run, none is dropped; remove it (key_concurrency: 1 runs one run of a key at a time)")
	}
}

// kind reads a function's kind and checks what a workflow may not have
// (the rules are model.Function's; here they point at the line).
func (p *parser) kind(n *yaml.Node, path string, f *Function, fields fieldSet) {
	s, ok := p.str(n, path+".kind")
	if !ok {
		return
	}
	switch s {
	case model.KindFunction:
		return
	case model.KindWorkflow:
		f.Kind = s
	default:
		p.errorf(n, path+".kind", "%q is not a kind: use %s (the default) or %s", s, model.KindFunction, model.KindWorkflow)
		return
	}
	if f.Runtime != RuntimeWasm {
		p.errorf(n, path+".kind", "a workflow must have runtime %s: runtime %s cannot run workflows yet", RuntimeWasm, f.Runtime)
	}
	if kv, ok := fields.get("async"); ok {
		p.errorf(kv.key, path+".async", "a workflow has no async policy: its runs are durable already; give its steps a retry policy (nimbus.Retry) instead")
	}
}

// localPath checks that rel is a relative path that stays inside the
// manifest's directory and returns its absolute form.
func (p *parser) localPath(n *yaml.Node, field, rel, what, example string) string {
	switch {
	case rel == "":
		p.errorf(n, field, "must not be empty: set it to a path relative to the manifest, such as %s", example)
		return ""
	case filepath.IsAbs(rel) || strings.HasPrefix(rel, "/"):
		p.errorf(n, field, "%q is an absolute path: the %s must be relative to the manifest's directory, such as %s", rel, what, example)
		return ""
	case !filepath.IsLocal(filepath.FromSlash(rel)):
		p.errorf(n, field, "%q is outside the manifest's directory: the %s must be inside it (no ..)", rel, what)
		return ""
	}
	return filepath.Join(p.dir, filepath.FromSlash(rel))
}

func (p *parser) build(key, n *yaml.Node, path string) *Build {
	if n.Kind != yaml.MappingNode {
		p.errorf(valueOrKey(n, key), path, "must be a map with command (and optionally dir), not %s", describe(n))
		return nil
	}
	b := &Build{Dir: p.dir}
	fields := p.mapping(n, path, buildFields)
	if kv, ok := fields.get("command"); ok {
		if s, ok := p.str(kv.value, path+".command"); ok {
			if strings.TrimSpace(s) == "" {
				p.errorf(kv.value, path+".command", "must not be empty: give the shell command that builds the module")
			}
			b.Command = s
			b.Pos = p.pos(kv.value)
		}
	} else {
		p.missing(fields, key, path, "command", "required field is missing: give the shell command that builds the module, such as go build -o hello.wasm .")
	}
	if kv, ok := fields.get("dir"); ok {
		if s, ok := p.str(kv.value, path+".dir"); ok {
			if s == "." {
				b.Dir = p.dir
			} else {
				b.Dir = p.localPath(kv.value, path+".dir", s, "build directory", "hello")
			}
		}
	}
	return b
}

func (p *parser) env(key, n *yaml.Node, path string, env map[string]string) {
	if n.Kind != yaml.MappingNode {
		if isNull(n) {
			return
		}
		p.errorf(valueOrKey(n, key), path, "must be a map of variable name to string value, not %s", describe(n))
		return
	}
	for _, kv := range p.pairs(n, path) {
		k, v, field := kv.key.Value, kv.value, path+"."+kv.key.Value
		if err := model.CheckEnvName(k); err != nil {
			p.errorf(kv.key, field, "%v", err)
			continue
		}
		if v.Kind == yaml.ScalarNode {
			switch v.Tag {
			case "!!str":
				env[k] = v.Value
				continue
			case "!!int", "!!float":
				p.errorf(v, field, "%s is a number: environment values are strings, so quote it: %q", v.Value, v.Value)
				continue
			case "!!bool":
				p.errorf(v, field, "%s is a boolean: environment values are strings, so quote it: %q", v.Value, v.Value)
				continue
			case "!!null":
				p.errorf(valueOrKey(v, kv.key), field, `has no value: write "" for an empty string`)
				continue
			}
		}
		p.errorf(valueOrKey(v, kv.key), field, "must be a string, not %s", describe(v))
	}
}

func (p *parser) integer(n *yaml.Node, field string, lo, hi int) (int, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!int" {
		p.errorf(n, field, "must be a whole number, not %s", describe(n))
		return 0, false
	}
	v, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 0, 64)
	if err != nil || v < int64(lo) || v > int64(hi) {
		p.errorf(n, field, "%s is out of range: use %d to %d", n.Value, lo, hi)
		return 0, false
	}
	return int(v), true
}

// isNull reports whether n is an explicit or implicit YAML null ("key:" with
// nothing after it).
func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

// deref resolves an alias (*name) to the node it names.
func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 16; i++ {
		n = n.Alias
	}
	return n
}

// valueOrKey returns the node to blame for a bad value: the value, unless it
// is an implicit null (nothing written), which has no useful position.
func valueOrKey(v, k *yaml.Node) *yaml.Node {
	if isNull(v) && v.Value == "" {
		return k
	}
	return v
}

// describe names what a node holds, for "must be X, not Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a map"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!str":
			return fmt.Sprintf("the string %q", n.Value)
		case "!!int", "!!float":
			return "the number " + n.Value
		case "!!bool":
			return "the boolean " + n.Value
		case "!!null":
			return "nothing (null)"
		default:
			return fmt.Sprintf("a %s value", strings.TrimPrefix(n.Tag, "!!"))
		}
	case yaml.AliasNode:
		return "an alias"
	}
	return "an unknown kind of value"
}

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}
