package hostfn

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/nimbus-dev/nimbus/internal/capability"
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

// Capabilities returns the capability kinds this build's host functions
// serve, sorted: the grantable kinds and the workflow calls. A
// subscribe grant has no provider of its own: the workflow calls serve
// it (wf_wait_topic).
func Capabilities() []string {
	kinds := slices.DeleteFunc(capability.Kinds(), func(k string) bool { return k == capability.KindSubscribe })
	return slices.Sorted(slices.Values(append(kinds, CapabilityWorkflow)))
}

// Function is one host function.
type Function struct {
	// Name is the import name in the "nimbus" module.
	Name   string
	Params []api.ValueType
	// Results must start with an i32: the status code (CodeOK, ...).
	Results []api.ValueType
	// Fn decodes the arguments in stack[:len(Params)], calls its
	// capability service on behalf of call (nil outside an invocation: the
	// service denies it) and writes its results to stack[:len(Results)]
	// (wazero's stack-based calling convention). It checks no grant: the
	// service does.
	Fn func(ctx context.Context, call *capability.Caller, mod api.Module, stack []uint64)
}

// Provider contributes the host functions of one capability kind.
type Provider interface {
	// Capability is the kind granted in nimbus.yaml (capability.KindLog...).
	Capability() string
	// Functions lists the provider's host functions.
	Functions() []Function
}

// Registry is a fixed set of providers. It is immutable and safe for
// concurrent use.
type Registry struct {
	providers []Provider
}

// NewRegistry checks the providers (unique capability and function names,
// well-formed signatures) and returns a registry of them.
func NewRegistry(providers ...Provider) (*Registry, error) {
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
	return &Registry{providers: slices.Clone(providers)}, nil
}

// NewDefaultRegistry returns the registry of every provider of this build,
// over svc (in the server, the node's services). A nil svc is
// capability.New(capability.Config{}): log works, kv and publish return
// CodeUnavailable once the call is checked.
func NewDefaultRegistry(svc *capability.Services) *Registry {
	if svc == nil {
		svc = capability.New(capability.Config{})
	}
	r, err := NewRegistry(LogProvider{Service: svc.Log}, KVProvider{Service: svc.KV}, PublishProvider{Service: svc.Publish},
		WorkflowProvider{Service: svc.Workflow}, FetchProvider{Service: svc.Fetch}, SecretProvider{Service: svc.Secret})
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
		for _, f := range p.Functions() {
			fn := f.Fn
			b.NewFunctionBuilder().
				WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
					fn(ctx, capability.CallerFrom(ctx), mod, stack)
				}), f.Params, f.Results).
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

// status maps a service's error to the guest's status code, by type. The
// services classify every error they return; CodeInternal is for one they
// did not, which is a bug.
func status(err error) int32 {
	switch {
	case err == nil:
		return CodeOK
	case errors.Is(err, capability.ErrDenied):
		return CodeDenied
	case errors.Is(err, capability.ErrBadArgument):
		return CodeBadArgument
	case errors.Is(err, capability.ErrTooLarge):
		return CodeTooLarge
	case errors.Is(err, capability.ErrUnavailable):
		return CodeUnavailable
	case errors.Is(err, capability.ErrNotFound):
		return wire.CodeNotFound
	case errors.Is(err, capability.ErrRevisionMismatch):
		return wire.CodeRevisionMismatch
	case errors.Is(err, capability.ErrNoBucket):
		return wire.CodeNoBucket
	case errors.Is(err, capability.ErrNoTopic):
		return wire.CodeNoTopic
	case errors.Is(err, capability.ErrBlocked):
		return wire.CodeBlocked
	case errors.Is(err, capability.ErrTimeout):
		return wire.CodeTimeout
	}
	return CodeInternal
}
