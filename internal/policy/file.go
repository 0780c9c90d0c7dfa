package policy

import (
	"errors"
	"fmt"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Rule is one operator rule as written in the policy file.
type Rule struct {
	// Name identifies the rule in refusals and the audit log: letters,
	// digits, '-', '_' and '.', unique in the file.
	Name string `json:"name"`
	// Expression is a CEL expression over the deploy (see Input) that is
	// true when the deploy is allowed.
	Expression string `json:"expression"`
	// Message tells the deployer what the rule wants and how to comply.
	Message string `json:"message"`
}

// Quotas are what one tenant may hold or do. A zero field means no limit.
type Quotas struct {
	// Apps caps the tenant's apps.
	Apps int64 `json:"apps,omitempty"`
	// Functions caps the functions (and workflows) of the tenant's apps'
	// active revisions, all apps together.
	Functions int64 `json:"functions,omitempty"`
	// KVBytes caps the bytes the tenant's key-value buckets hold, as the
	// store counts them: every kept revision of every key (history),
	// with its key and headers. Deleting keys frees it.
	KVBytes int64 `json:"kv_bytes,omitempty"`
	// RequestsPerSecond caps the HTTP invocations of the tenant's
	// functions (gateway routes and the API's invoke, sync or async), with
	// bursts of up to one second's worth.
	RequestsPerSecond float64 `json:"requests_per_second,omitempty"`
}

// unlimited marks, in a tenant's entry, a quota lifted for that tenant.
const unlimited = -1

// merge returns q with the fields t sets replacing q's (an "unlimited"
// in t lifts the limit).
func (q Quotas) merge(t Quotas) Quotas {
	pick := func(base, over int64) int64 {
		switch over {
		case 0:
			return base
		case unlimited:
			return 0
		}
		return over
	}
	q.Apps, q.Functions, q.KVBytes = pick(q.Apps, t.Apps), pick(q.Functions, t.Functions), pick(q.KVBytes, t.KVBytes)
	switch t.RequestsPerSecond {
	case 0:
	case unlimited:
		q.RequestsPerSecond = 0
	default:
		q.RequestsPerSecond = t.RequestsPerSecond
	}
	return q
}

// FileError is a problem of the policy file, at a position of it.
type FileError struct {
	File      string
	Line, Col int // 1-based; 0 when unknown
	// Rule is the rule it is about, if any.
	Rule string
	Msg  string
}

func (e *FileError) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", e.Line, e.Col)
	}
	b.WriteString(": ")
	if e.Rule != "" {
		fmt.Fprintf(&b, "rule %q: ", e.Rule)
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Load reads and compiles the policy file at path (YAML, or JSON, which
// YAML reads too). Every problem is a *FileError naming the file, line
// and column (and the rule).
func Load(path string) (*Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("policy file: %w", err)
	}
	return Parse(path, data)
}

// Parse compiles the policy file data, named file in errors. The file is
// either a list of rules, or a mapping with "rules" (that list) and
// "quotas":
//
//	rules:
//	  - name: memory-cap
//	    expression: functions.all(f, f.memory <= quantity("256Mi"))
//	    message: a function may have at most 256MiB of memory
//	quotas:
//	  default: {apps: 10, functions: 50, kv_bytes: 64MiB, requests_per_second: 100}
//	  tenants:
//	    acme: {apps: 100, requests_per_second: unlimited}
func Parse(file string, data []byte) (*Policy, error) {
	p := &Policy{file: file, tenants: map[string]Quotas{}}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, &FileError{File: file, Msg: "not YAML or JSON: " + err.Error()}
	}
	if len(doc.Content) == 0 {
		return p, nil // an empty file: no rules, no quotas
	}
	root := doc.Content[0]
	ferr := func(n *yaml.Node, rule, format string, args ...any) error {
		return &FileError{File: file, Line: n.Line, Col: n.Column, Rule: rule, Msg: fmt.Sprintf(format, args...)}
	}
	var rules *yaml.Node
	switch root.Kind {
	case yaml.SequenceNode:
		rules = root
	case yaml.MappingNode:
		for i := 0; i < len(root.Content); i += 2 {
			k, v := root.Content[i], root.Content[i+1]
			switch k.Value {
			case "rules":
				if v.Kind != yaml.SequenceNode {
					return nil, ferr(v, "", "rules must be a list of {name, expression, message}")
				}
				rules = v
			case "quotas":
				if err := p.parseQuotas(file, v); err != nil {
					return nil, err
				}
			default:
				return nil, ferr(k, "", "unknown key %q: a policy file has rules and quotas", k.Value)
			}
		}
	default:
		return nil, ferr(root, "", "a policy file is a list of rules, or a mapping with rules and quotas")
	}
	if rules == nil {
		return p, nil
	}
	env, err := newEnv()
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, n := range rules.Content {
		if n.Kind != yaml.MappingNode {
			return nil, ferr(n, "", "a rule is a mapping with name, expression and message")
		}
		var r Rule
		var exprNode *yaml.Node
		for i := 0; i < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if v.Kind != yaml.ScalarNode {
				return nil, ferr(v, r.Name, "%s must be a string", k.Value)
			}
			switch k.Value {
			case "name":
				r.Name = v.Value
			case "expression":
				r.Expression, exprNode = v.Value, v
			case "message":
				r.Message = v.Value
			default:
				return nil, ferr(k, r.Name, "unknown key %q: a rule has name, expression and message", k.Value)
			}
		}
		switch {
		case r.Name == "":
			return nil, ferr(n, "", "a rule needs a name")
		case !ruleName.MatchString(r.Name):
			return nil, ferr(n, r.Name, "a rule's name uses letters, digits, '-', '_' and '.' (at most 64)")
		case seen[r.Name]:
			return nil, ferr(n, r.Name, "a second rule has this name: names must be unique")
		case strings.TrimSpace(r.Expression) == "":
			return nil, ferr(n, r.Name, "the rule needs an expression (CEL, true when a deploy is allowed)")
		case strings.TrimSpace(r.Message) == "":
			return nil, ferr(n, r.Name, "the rule needs a message: it is what a refused deployer reads")
		}
		seen[r.Name] = true
		c, err := compile(env, r)
		if err != nil {
			var ce *compileError
			if errors.As(err, &ce) {
				line, col := exprPosition(exprNode, ce.line, ce.col)
				return nil, &FileError{File: file, Line: line, Col: col, Rule: r.Name, Msg: ce.msg}
			}
			return nil, ferr(exprNode, r.Name, "%v", err)
		}
		p.rules = append(p.rules, c)
	}
	return p, nil
}

var ruleName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// exprPosition is where, in the file, the expression's line and column
// (1-based line, 0-based column, as CEL counts) are: exact for an
// expression written plain on one line, else the expression's start.
func exprPosition(n *yaml.Node, line, col int) (int, int) {
	if n.Style == 0 && !strings.Contains(n.Value, "\n") && line == 1 && col >= 0 {
		return n.Line, n.Column + col
	}
	return n.Line, n.Column
}

func (p *Policy) parseQuotas(file string, n *yaml.Node) error {
	ferr := func(n *yaml.Node, format string, args ...any) error {
		return &FileError{File: file, Line: n.Line, Col: n.Column, Msg: fmt.Sprintf(format, args...)}
	}
	if n.Kind != yaml.MappingNode {
		return ferr(n, "quotas must be a mapping with default and tenants")
	}
	for i := 0; i < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch k.Value {
		case "default":
			q, err := parseQuota(file, v, false)
			if err != nil {
				return err
			}
			p.quotas = q
		case "tenants":
			if v.Kind != yaml.MappingNode {
				return ferr(v, "quotas.tenants maps a tenant's name to its quotas")
			}
			for j := 0; j < len(v.Content); j += 2 {
				name := v.Content[j]
				if !ruleName.MatchString(name.Value) {
					return ferr(name, "%q is not a tenant name", name.Value)
				}
				q, err := parseQuota(file, v.Content[j+1], true)
				if err != nil {
					return err
				}
				p.tenants[name.Value] = q
			}
		default:
			return ferr(k, "unknown key %q under quotas: use default and tenants", k.Value)
		}
	}
	return nil
}

// parseQuota reads {apps, functions, kv_bytes, requests_per_second};
// "unlimited" is allowed in a tenant's entry (it lifts the default).
func parseQuota(file string, n *yaml.Node, tenant bool) (Quotas, error) {
	var q Quotas
	ferr := func(n *yaml.Node, format string, args ...any) error {
		return &FileError{File: file, Line: n.Line, Col: n.Column, Msg: fmt.Sprintf(format, args...)}
	}
	if n.Kind != yaml.MappingNode {
		return q, ferr(n, "quotas are a mapping of apps, functions, kv_bytes and requests_per_second")
	}
	for i := 0; i < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if v.Kind != yaml.ScalarNode {
			return q, ferr(v, "%s must be a number", k.Value)
		}
		if v.Value == "unlimited" {
			if !tenant {
				return q, ferr(v, "%s: leave a default out rather than write unlimited (\"unlimited\" lifts a default for one tenant)", k.Value)
			}
			switch k.Value {
			case "apps":
				q.Apps = unlimited
			case "functions":
				q.Functions = unlimited
			case "kv_bytes":
				q.KVBytes = unlimited
			case "requests_per_second":
				q.RequestsPerSecond = unlimited
			default:
				return q, ferr(k, "unknown quota %q: use apps, functions, kv_bytes or requests_per_second", k.Value)
			}
			continue
		}
		switch k.Value {
		case "apps", "functions":
			c, err := strconv.ParseInt(v.Value, 10, 64)
			if err != nil || c < 1 {
				return q, ferr(v, "%s %q: write a whole number of at least 1", k.Value, v.Value)
			}
			if k.Value == "apps" {
				q.Apps = c
			} else {
				q.Functions = c
			}
		case "kv_bytes":
			b, err := ParseBytes(v.Value)
			if err != nil || b < 1 {
				return q, ferr(v, "kv_bytes %q: write a size such as 64MiB, 512KiB or 1GiB", v.Value)
			}
			q.KVBytes = b
		case "requests_per_second":
			r, err := strconv.ParseFloat(v.Value, 64)
			if err != nil || r <= 0 || math.IsInf(r, 0) || math.IsNaN(r) {
				return q, ferr(v, "requests_per_second %q: write a number above 0, such as 100 or 0.5", v.Value)
			}
			q.RequestsPerSecond = r
		default:
			return q, ferr(k, "unknown quota %q: use apps, functions, kv_bytes or requests_per_second", k.Value)
		}
	}
	return q, nil
}

// ParseBytes reads a size: a number of bytes, or a number with a binary
// unit, written as the manifest does (KiB, MiB, GiB) or as Kubernetes
// does (Ki, Mi, Gi): "256Mi" and "256MiB" are both 268435456.
func ParseBytes(s string) (int64, error) {
	num := strings.TrimRight(s, "KMGTiBb")
	unit := s[len(num):]
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("size %q: write bytes, or a number with KiB, MiB or GiB (Ki, Mi, Gi)", s)
	}
	shift := map[string]uint{"": 0, "B": 0, "Ki": 10, "KiB": 10, "Mi": 20, "MiB": 20, "Gi": 30, "GiB": 30, "Ti": 40, "TiB": 40}
	sh, ok := shift[unit]
	if !ok {
		return 0, fmt.Errorf("size %q: unknown unit %q: use KiB, MiB or GiB (Ki, Mi, Gi)", s, unit)
	}
	if n > math.MaxInt64>>sh {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return n << sh, nil
}
