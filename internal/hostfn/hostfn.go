package hostfn

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// ModuleName is the import module every host function lives in.
const ModuleName = wire.HostModule

// Status codes a host function returns to the guest as its first result.
const (
	CodeOK          = wire.CodeOK
	CodeDenied      = wire.CodeDenied
	CodeBadArgument = wire.CodeBadArgument
	CodeTooLarge    = wire.CodeTooLarge
	CodeUnavailable = wire.CodeUnavailable
	CodeInternal    = wire.CodeInternal
)

// Capability names known to this build.
const (
	// CapLog grants nimbus.log.
	CapLog = "log"
	// CapKV is scoped to a bucket: "kv:NAME" grants read and write on
	// bucket NAME, "kv:NAME:read" grants read only.
	CapKV = "kv"
	// CapPublish is scoped to a topic: "publish:NAME" grants publishing
	// to topic NAME of the function's app.
	CapPublish = "publish"
)

// ReadOnlySuffix ends a scoped grant that allows only reads ("kv:NAME:read").
const ReadOnlySuffix = ":read"

// Capabilities returns the capability names this build knows, sorted, for
// documentation and manifest validation. Scoped capabilities (kv,
// publish) are granted per resource: see CheckGrant.
func Capabilities() []string {
	return []string{CapKV, CapLog, CapPublish}
}

// isScoped reports whether capability c is granted per resource.
func isScoped(c string) bool { return c == CapKV || c == CapPublish }

// CheckGrant reports whether s is a valid entry of a function's
// capabilities list: "log", "kv:NAME", "kv:NAME:read" or "publish:NAME"
// where NAME is a bucket or topic name (a DNS label). The error says what
// is wrong.
func CheckGrant(s string) error {
	c, rest, hasScope := strings.Cut(s, ":")
	switch {
	case !slices.Contains(Capabilities(), c):
		return fmt.Errorf("unknown capability %q (known: log, kv:BUCKET, kv:BUCKET:read, publish:TOPIC)", s)
	case !isScoped(c) && hasScope:
		return fmt.Errorf("capability %q takes no scope: write %q", s, c)
	case c == CapPublish && !hasScope:
		return fmt.Errorf("capability %q needs a topic: publish:TOPIC", s)
	case isScoped(c) && !hasScope:
		return fmt.Errorf("capability %q needs a bucket: %s:BUCKET (read-write) or %s:BUCKET:read", s, c, c)
	}
	if !isScoped(c) {
		return nil
	}
	if c == CapPublish {
		if !validName(rest) {
			return fmt.Errorf("capability %q: %q is not a topic name (lowercase letters, digits and '-', starting with a letter)", s, rest)
		}
		return nil
	}
	name := strings.TrimSuffix(rest, ReadOnlySuffix)
	if !validName(name) {
		return fmt.Errorf("capability %q: %q is not a bucket name (lowercase letters, digits and '-', starting with a letter)", s, name)
	}
	return nil
}

func validName(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] < 'a' || s[0] > 'z' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// Grant returns the grant string that allows capability on resource, for
// writing when write is set: "kv:counts" or "kv:counts:read".
func Grant(capability, resource string, write bool) string {
	if write {
		return capability + ":" + resource
	}
	return capability + ":" + resource + ReadOnlySuffix
}

// Function is one host function.
type Function struct {
	// Name is the import name in the "nimbus" module.
	Name   string
	Params []api.ValueType
	// Results must start with an i32: the status code (CodeOK, ...).
	Results []api.ValueType
	// Fn runs an allowed call: the Registry has already checked the
	// capability. Arguments are in stack[:len(Params)], results go to
	// stack[:len(Results)] (wazero's stack-based calling convention).
	Fn func(ctx context.Context, call *Call, mod api.Module, stack []uint64)
	// Scope, set for the functions of a scoped capability, returns the
	// resource the call names (a bucket) and whether it writes; the call is
	// allowed when Grants.Allows(capability, resource, write). A code other
	// than CodeOK (an argument out of range) is returned to the guest
	// without checking grants or calling Fn. Scope must not keep references
	// into guest memory.
	Scope func(mod api.Module, stack []uint64) (resource string, write bool, code int32)
}

// Provider contributes the functions of one capability.
type Provider interface {
	// Capability is the name granted in nimbus.yaml (capabilities: [name]).
	Capability() string
	// Functions lists the provider's host functions.
	Functions() []Function
}

// Registry is a fixed set of providers. It is immutable and safe for
// concurrent use.
type Registry struct {
	logger    *slog.Logger
	providers []Provider
}

// NewRegistry checks the providers (unique capability and function names,
// well-formed signatures) and returns a registry of them. A nil logger
// discards.
func NewRegistry(logger *slog.Logger, providers ...Provider) (*Registry, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	caps := map[string]bool{}
	names := map[string]bool{}
	for _, p := range providers {
		c := p.Capability()
		if c == "" || caps[c] {
			return nil, fmt.Errorf("hostfn: capability %q is empty or registered twice", c)
		}
		caps[c] = true
		for _, f := range p.Functions() {
			if f.Name == "" || names[f.Name] {
				return nil, fmt.Errorf("hostfn: function %q of %q is empty or registered twice", f.Name, c)
			}
			names[f.Name] = true
			if len(f.Results) == 0 || f.Results[0] != api.ValueTypeI32 || f.Fn == nil {
				return nil, fmt.Errorf("hostfn: function %q of %q must return an i32 status code first", f.Name, c)
			}
		}
	}
	return &Registry{logger: logger, providers: slices.Clone(providers)}, nil
}

// Option configures NewDefaultRegistry.
type Option func(*defaults)

type defaults struct {
	kv  KVStore
	pub Publisher
}

// WithKV gives the kv functions their store (in the server, a
// *state.Buckets). Without it, or with a nil store, every kv call returns
// CodeUnavailable once its arguments are checked.
func WithKV(store KVStore) Option {
	return func(d *defaults) { d.kv = store }
}

// WithPublisher gives the publish function its publisher (in the server,
// the *server.Server). Without it, or with a nil publisher, every publish
// returns CodeUnavailable once its arguments are checked.
func WithPublisher(p Publisher) Option {
	return func(d *defaults) { d.pub = p }
}

// NewDefaultRegistry returns the registry of every provider of this build.
func NewDefaultRegistry(logger *slog.Logger, opts ...Option) *Registry {
	var d defaults
	for _, o := range opts {
		o(&d)
	}
	r, err := NewRegistry(logger, LogProvider{}, KVProvider{Store: d.kv, Logger: logger},
		PublishProvider{Publisher: d.pub, Logger: logger})
	if err != nil {
		panic(err) // the built-in providers are static; this is a programming error
	}
	return r
}

// Capabilities returns the capabilities of the registry's providers.
func (r *Registry) Capabilities() []string {
	out := make([]string, 0, len(r.providers))
	for _, p := range r.providers {
		out = append(out, p.Capability())
	}
	slices.Sort(out)
	return out
}

// Instantiate defines the "nimbus" host module with every function of every
// provider in rt. Call it once per wazero runtime, before instantiating
// guests.
func (r *Registry) Instantiate(ctx context.Context, rt wazero.Runtime) (api.Module, error) {
	b := rt.NewHostModuleBuilder(ModuleName)
	for _, p := range r.providers {
		capability := p.Capability()
		for _, f := range p.Functions() {
			b.NewFunctionBuilder().
				WithGoModuleFunction(r.guard(capability, f), f.Params, f.Results).
				WithName(f.Name).
				Export(f.Name)
		}
	}
	m, err := b.Instantiate(ctx)
	if err != nil {
		return nil, fmt.Errorf("hostfn: instantiate %s module: %w", ModuleName, err)
	}
	return m, nil
}

// guard wraps f with the capability check every call goes through.
func (r *Registry) guard(capability string, f Function) api.GoModuleFunc {
	fail := func(stack []uint64, code int32) {
		clear(stack[:len(f.Results)])
		stack[0] = api.EncodeI32(code)
	}
	if f.Scope != nil {
		return func(ctx context.Context, mod api.Module, stack []uint64) {
			call := CallFrom(ctx)
			resource, write, code := f.Scope(mod, stack)
			if code != CodeOK {
				fail(stack, code)
				return
			}
			if call == nil || !call.Grants.Allows(capability, resource, write) {
				note := ""
				if call != nil && write && call.Grants.Has(Grant(capability, resource, false)) {
					note = fmt.Sprintf(" (it has %q, which is read-only)", Grant(capability, resource, false))
				}
				r.deny(call, Grant(capability, resource, write), f.Name, note)
				fail(stack, CodeDenied)
				return
			}
			f.Fn(ctx, call, mod, stack)
		}
	}
	return func(ctx context.Context, mod api.Module, stack []uint64) {
		call := CallFrom(ctx)
		if call == nil || !call.Grants.Has(capability) {
			r.deny(call, capability, f.Name, "")
			fail(stack, CodeDenied)
			return
		}
		f.Fn(ctx, call, mod, stack)
	}
}

// deny logs a denied call; grant is what the function must be granted.
func (r *Registry) deny(call *Call, grant, name, note string) {
	if call == nil {
		r.logger.Warn("host function called outside an invocation", "host_function", name, "capability", grant)
		return
	}
	if !call.firstDenial(grant) {
		return // one line per grant and invocation: a guest in a loop must not flood the log
	}
	call.log("log", "warn", fmt.Sprintf("nimbus.%s denied: capability %q is not granted to function %q%s; add `capabilities: [%s]` to the function in nimbus.yaml",
		name, grant, call.Function, note, grant))
	r.logger.Warn("host function denied", "app", call.App, "function", call.Function, "capability", grant,
		"host_function", name, "invocation", call.InvocationID)
}

// Grants is the set of capabilities granted to a function.
type Grants map[string]struct{}

// NewGrants returns the set of the given capability names.
func NewGrants(capabilities []string) Grants {
	g := make(Grants, len(capabilities))
	for _, c := range capabilities {
		g[c] = struct{}{}
	}
	return g
}

// Has reports whether capability is granted.
func (g Grants) Has(capability string) bool {
	_, ok := g[capability]
	return ok
}

// Allows reports whether the scoped capability is granted on resource:
// "<capability>:<resource>" allows reads and writes,
// "<capability>:<resource>:read" reads only.
func (g Grants) Allows(capability, resource string, write bool) bool {
	if g.Has(Grant(capability, resource, true)) {
		return true
	}
	return !write && g.Has(Grant(capability, resource, false))
}

// Call is what host functions know about the invocation calling them. The
// runtime creates one per guest call (a request, or an instance's
// initialization) and puts it in the context with WithCall.
type Call struct {
	App          string
	Function     string
	InvocationID string
	// TraceParent is the invocation's W3C traceparent ("" when none):
	// events the guest publishes without one carry a child of it.
	TraceParent string
	Grants      Grants
	// Sink receives log lines; nil discards.
	Sink runtime.LogSink

	mu     sync.Mutex
	denied map[string]bool
}

func (c *Call) log(stream, level, line string) {
	if c.Sink != nil {
		c.Sink.Log(stream, level, []byte(line))
	}
}

func (c *Call) firstDenial(capability string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.denied[capability] {
		return false
	}
	if c.denied == nil {
		c.denied = map[string]bool{}
	}
	c.denied[capability] = true
	return true
}

type callKey struct{}

// WithCall returns ctx carrying c; pass it to the guest call so host
// functions see it.
func WithCall(ctx context.Context, c *Call) context.Context {
	return context.WithValue(ctx, callKey{}, c)
}

// CallFrom returns the Call in ctx, or nil.
func CallFrom(ctx context.Context) *Call {
	c, _ := ctx.Value(callKey{}).(*Call)
	return c
}
