package policy

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/ext"

	"github.com/nimbus-dev/nimbus/internal/capability"
	"github.com/nimbus-dev/nimbus/internal/model"
)

// Policy is a compiled policy file: rules and quotas. The zero value (and
// nil) allows everything. Safe for concurrent use.
type Policy struct {
	file    string
	rules   []compiled
	quotas  Quotas            // every tenant's, unless overridden
	tenants map[string]Quotas // per tenant, merged over quotas
}

type compiled struct {
	Rule
	prg cel.Program
}

// File is the path the policy was loaded from.
func (p *Policy) File() string {
	if p == nil {
		return ""
	}
	return p.file
}

// Rules lists the rules, in file order.
func (p *Policy) Rules() []Rule {
	if p == nil {
		return nil
	}
	out := make([]Rule, len(p.rules))
	for i, r := range p.rules {
		out[i] = r.Rule
	}
	return out
}

// QuotasOf returns tenant's quotas: the default's, with the tenant's own
// entry over them.
func (p *Policy) QuotasOf(tenant string) Quotas {
	if p == nil {
		return Quotas{}
	}
	q := p.quotas
	if t, ok := p.tenants[model.TenantOr(tenant)]; ok {
		q = q.merge(t)
	}
	return q
}

// HasQuotas reports whether any tenant has a quota.
func (p *Policy) HasQuotas() bool {
	return p != nil && (p.quotas != Quotas{} || len(p.tenants) > 0)
}

// The variables a rule sees (docs/security.md lists them with examples).
// Sizes are int bytes, times are durations; names are as in the
// manifest.

// Function is one function of the deploy, as a rule sees it.
type Function struct {
	Name string `cel:"name"`
	// Kind is "function" or "workflow".
	Kind    string `cel:"kind"`
	Runtime string `cel:"runtime"`
	// Isolation is a process function's ("sandbox" or "none"), "" for wasm.
	Isolation    string        `cel:"isolation"`
	Memory       int64         `cel:"memory"`
	Timeout      time.Duration `cel:"timeout"`
	Concurrency  int64         `cel:"concurrency"`
	MaxInstances int64         `cel:"max_instances"`
	Routes       []Route       `cel:"routes"`
	// Capabilities are the grants as written ("kv:cart", "http:*").
	Capabilities []string `cel:"capabilities"`
	// Egress are the http grants, parsed.
	Egress []Egress `cel:"egress"`
	// Secrets are the names of the secret grants.
	Secrets  []string  `cel:"secrets"`
	Triggers []Trigger `cel:"triggers"`
	// Env are the names of the environment variables (not their values).
	Env []string `cel:"env"`
}

// Route is one HTTP route of a function.
type Route struct {
	// Method is the HTTP method, "" for any.
	Method string `cel:"method"`
	Path   string `cel:"path"`
	// Auth is what the route requires of a request: "none" (public),
	// "key" (an API key of the app's tenant) or "jwt".
	Auth string `cel:"auth"`
}

// Egress is one http grant of a function.
type Egress struct {
	// Host is the host pattern: "api.stripe.com", "*.example.com", "*",
	// or an IP address.
	Host string `cel:"host"`
	// Scheme is "http", "https" or "" (both).
	Scheme string `cel:"scheme"`
	// Port is 0 for the scheme's default.
	Port int64 `cel:"port"`
	// Methods are the methods allowed; empty allows every one.
	Methods []string `cel:"methods"`
	// Grant is the grant as written.
	Grant string `cel:"grant"`
}

// Trigger is one event source of a function.
type Trigger struct {
	Name string `cel:"name"`
	// Kind is "topic", "cron" or "bucket".
	Kind   string `cel:"kind"`
	Topic  string `cel:"topic"`
	Cron   string `cel:"cron"`
	Bucket string `cel:"bucket"`
}

// Topic is one event topic of the app.
type Topic struct {
	Name          string        `cel:"name"`
	MaxEventBytes int64         `cel:"max_event_bytes"`
	Retention     time.Duration `cel:"retention"`
}

// Bucket is one key-value bucket of the app.
type Bucket struct {
	Name          string        `cel:"name"`
	TTL           time.Duration `cel:"ttl"`
	MaxValueBytes int64         `cel:"max_value_bytes"`
	History       int64         `cel:"history"`
}

// Input is what the rules of one deploy see: the variables app, tenant,
// functions, topics and buckets.
type Input struct {
	App       string
	Tenant    string
	Functions []Function
	Topics    []Topic
	Buckets   []Bucket
}

// InputOf is the rules' view of rev deployed by tenant.
func InputOf(rev *model.Revision, tenant string) Input {
	in := Input{App: rev.App, Tenant: model.TenantOr(tenant), Functions: []Function{}, Topics: []Topic{}, Buckets: []Bucket{}}
	for _, f := range rev.Functions {
		fn := Function{Name: f.Name, Kind: model.KindFunction, Runtime: f.Runtime, Memory: int64(f.MemoryBytes),
			Timeout: f.Timeout(), Concurrency: int64(f.Concurrency), MaxInstances: int64(f.MaxInstances),
			Routes: []Route{}, Capabilities: append([]string{}, f.Capabilities...), Egress: []Egress{}, Secrets: []string{},
			Triggers: []Trigger{}, Env: []string{}}
		if f.Kind != "" {
			fn.Kind = f.Kind
		}
		if f.Process != nil {
			fn.Isolation = f.Process.Isolation
		}
		for _, rt := range f.Routes {
			fn.Routes = append(fn.Routes, Route{Method: rt.Method, Path: rt.Path, Auth: routeAuth(rt)})
		}
		for _, c := range f.Capabilities {
			g, err := capability.Parse(c)
			if err != nil {
				continue // the model refused it before a rule runs
			}
			switch g.Kind {
			case capability.KindHTTP:
				e := Egress{Host: g.Resource, Scheme: g.Scheme, Port: int64(g.Port), Methods: []string{}, Grant: c}
				if g.Methods != "" {
					e.Methods = strings.Split(g.Methods, ",")
				}
				fn.Egress = append(fn.Egress, e)
			case capability.KindSecret:
				fn.Secrets = append(fn.Secrets, g.Resource)
			}
		}
		for _, t := range f.Triggers {
			fn.Triggers = append(fn.Triggers, Trigger{Name: t.Name, Kind: t.Kind, Topic: t.Topic, Cron: t.Cron, Bucket: t.Bucket})
		}
		for k := range f.Env {
			fn.Env = append(fn.Env, k)
		}
		in.Functions = append(in.Functions, fn)
	}
	for _, t := range rev.Topics {
		in.Topics = append(in.Topics, Topic{Name: t.Name, MaxEventBytes: t.MaxEventBytes, Retention: time.Duration(t.RetentionMS) * time.Millisecond})
	}
	for _, b := range rev.Buckets {
		in.Buckets = append(in.Buckets, Bucket{Name: b.Name, TTL: time.Duration(b.TTLMS) * time.Millisecond, MaxValueBytes: b.MaxValueBytes, History: int64(b.History)})
	}
	return in
}

// routeAuth is what rt requires of a request, as rules see it: "none"
// for a public route, else the auth's type ("key", "jwt").
func routeAuth(rt model.Route) string {
	if rt.Auth == nil || rt.Auth.Type == "" {
		return AuthNone
	}
	return rt.Auth.Type
}

// Route auth values (Route.Auth).
const (
	AuthNone = "none"
	AuthKey  = model.AuthKey
	AuthJWT  = model.AuthJWT
)

func (in Input) vars() map[string]any {
	return map[string]any{"app": in.App, "tenant": in.Tenant, "functions": in.Functions, "topics": in.Topics, "buckets": in.Buckets}
}

// CostLimit bounds the work of one rule on one deploy (CEL's cost units:
// about one per field read or comparison); a rule over it refuses the
// deploy. A manifest's size limits keep real rules far below it.
const CostLimit = 1_000_000

// newEnv is the CEL environment rules compile in.
func newEnv() (*cel.Env, error) {
	obj := func(t any) *cel.Type { return cel.ObjectType("policy." + reflect.TypeOf(t).Name()) }
	return cel.NewEnv(
		ext.NativeTypes(ext.ParseStructTags(true), reflect.TypeFor[Function](), reflect.TypeFor[Route](),
			reflect.TypeFor[Egress](), reflect.TypeFor[Trigger](), reflect.TypeFor[Topic](), reflect.TypeFor[Bucket]()),
		ext.Strings(),
		cel.Variable("app", cel.StringType),
		cel.Variable("tenant", cel.StringType),
		cel.Variable("functions", cel.ListType(obj(Function{}))),
		cel.Variable("topics", cel.ListType(obj(Topic{}))),
		cel.Variable("buckets", cel.ListType(obj(Bucket{}))),
		cel.Function("quantity", cel.Overload("quantity_string", []*cel.Type{cel.StringType}, cel.IntType,
			cel.UnaryBinding(func(v ref.Val) ref.Val {
				s, ok := v.(types.String)
				if !ok {
					return types.NewErr("quantity takes a string")
				}
				n, err := ParseBytes(string(s))
				if err != nil {
					return types.NewErr("%s", err.Error())
				}
				return types.Int(n)
			}))),
	)
}

// compileError is a rule that does not compile, at a position of its
// expression (CEL's: 1-based line, 0-based column).
type compileError struct {
	line, col int
	msg       string
}

func (e *compileError) Error() string { return e.msg }

func compile(env *cel.Env, r Rule) (compiled, error) {
	checked, iss := env.Compile(r.Expression)
	if iss != nil && iss.Err() != nil {
		first := iss.Errors()[0]
		line, col := first.Location.Line(), first.Location.Column()
		msg := fmt.Sprintf("expression does not compile: %s (at line %d, column %d of the expression; the variables are app, tenant, functions, topics and buckets: see docs/security.md)",
			first.Message, line, col+1)
		return compiled{}, &compileError{line: line, col: col, msg: msg}
	}
	if !checked.OutputType().IsExactType(cel.BoolType) {
		return compiled{}, &compileError{line: 1, col: 0, msg: fmt.Sprintf("the expression is a %s, not a bool: a rule is true when a deploy is allowed", checked.OutputType())}
	}
	// A quantity written in the rule is read now, not at every deploy.
	for _, call := range ast.MatchDescendants(ast.NavigateAST(checked.NativeRep()), ast.FunctionMatcher("quantity")) {
		args := call.AsCall().Args()
		if len(args) == 1 && args[0].Kind() == ast.LiteralKind {
			if s, ok := args[0].AsLiteral().(types.String); ok {
				if _, err := ParseBytes(string(s)); err != nil {
					loc := checked.NativeRep().SourceInfo().GetStartLocation(args[0].ID())
					return compiled{}, &compileError{line: loc.Line(), col: loc.Column(), msg: err.Error()}
				}
			}
		}
	}
	prg, err := env.Program(checked, cel.CostLimit(CostLimit))
	if err != nil {
		return compiled{}, fmt.Errorf("expression: %w", err)
	}
	return compiled{Rule: r, prg: prg}, nil
}

// Violation is one rule a deploy broke.
type Violation struct {
	Rule    string `json:"rule"`
	Message string `json:"message"`
	// Error is set when the rule could not be evaluated (which refuses
	// the deploy as well).
	Error string `json:"error,omitempty"`
}

// DeniedError is a deploy (or rollback) the policy refused: every rule it
// broke, in file order.
type DeniedError struct {
	App        string
	Violations []Violation
}

// ErrDenied is matched (errors.Is) by every *DeniedError.
var ErrDenied = errors.New("refused by the operator's policy")

func (e *DeniedError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "deploy of %s refused by the operator's policy: ", e.App)
	for i, v := range e.Violations {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "rule %q: %s", v.Rule, v.Message)
		if v.Error != "" {
			fmt.Fprintf(&b, " (the rule could not be evaluated: %s)", v.Error)
		}
	}
	return b.String()
}

// Is matches ErrDenied.
func (e *DeniedError) Is(target error) bool { return target == ErrDenied }

// Rules names the rules broken, comma-separated (for the audit log).
func (e *DeniedError) Rules() string {
	names := make([]string, len(e.Violations))
	for i, v := range e.Violations {
		names[i] = v.Rule
	}
	return strings.Join(names, ",")
}

// Check evaluates every rule on rev deployed by tenant and returns a
// *DeniedError naming each rule that is false or could not be evaluated;
// nil when all hold (or p is nil).
func (p *Policy) Check(rev *model.Revision, tenant string) error {
	if p == nil || len(p.rules) == 0 {
		return nil
	}
	vars := InputOf(rev, tenant).vars()
	var denied []Violation
	for _, r := range p.rules {
		out, _, err := r.prg.Eval(vars)
		if err != nil {
			denied = append(denied, Violation{Rule: r.Name, Message: r.Message, Error: err.Error()})
			continue
		}
		if ok, isBool := out.Value().(bool); !isBool || !ok {
			denied = append(denied, Violation{Rule: r.Name, Message: r.Message})
		}
	}
	if len(denied) > 0 {
		return &DeniedError{App: rev.App, Violations: denied}
	}
	return nil
}
