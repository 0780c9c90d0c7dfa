package wasm

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/sys"

	"github.com/nimbus-dev/nimbus/internal/capability"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime"
)

// module is one compiled function revision.
type module struct {
	rt       *Runtime
	app      string
	function string
	code     *code // shared with the functions loaded from the same artifact
	closed   atomic.Bool
	contract runtime.Contract
	// initialize is set for reactors exporting _initialize.
	initialize bool
	// reuse is set for SDK guests exporting wire.ExportReuse.
	reuse bool
	// snapOK is set when instances can start from a snapshot (snapshottable);
	// snapGlobals are the module's exported mutable globals, and snap the
	// snapshot, taken by the first instance.
	snapOK      bool
	snapGlobals []string
	// An eviction of the code drops it (Runtime.idleLocked).
	snap   atomic.Pointer[snapshot]
	limits runtime.Limits
	grants capability.Grants
	env    []envVar
	// base is moduleConfig's result, built once: each With* call copies
	// the config, which was a visible share of a minimal cold start.
	baseOnce sync.Once
	base     wazero.ModuleConfig
}

var _ runtime.Module = (*module)(nil)

func (m *module) Contract() runtime.Contract { return m.contract }

func (m *module) Reusable() bool { return m.contract == runtime.ContractSDK }

// MaxConcurrency implements runtime.Module: a wasm instance is
// single-threaded, so it serves one request at a time.
func (m *module) MaxConcurrency() int { return 1 }

func (m *module) Close(ctx context.Context) error {
	if m.closed.Swap(true) {
		return nil
	}
	if s := m.snap.Swap(nil); s != nil {
		s.memory.close()
	}
	return m.rt.release(ctx, m.code, m)
}

// NewInstance implements runtime.Module. For the SDK contract it
// instantiates the reactor and runs _initialize (the cold start). A WAGI
// instance is a handle only: CGI passes the request in the environment and
// stdin, which are fixed at instantiation, so Handle instantiates the command
// for each request.
//
// Each instance keeps the module's compiled code from eviction until it is
// closed; an instance of a module whose code was evicted reloads it first
// (code.go).
func (m *module) NewInstance(ctx context.Context) (runtime.Instance, error) {
	if m.closed.Load() {
		return nil, fmt.Errorf("new instance of %s/%s: %w", m.app, m.function, errCodeReleased)
	}
	res, err := m.rt.use(ctx, m.code, m.rt.fetcher(m.code))
	if err != nil {
		return nil, fmt.Errorf("new instance of %s/%s: %w", m.app, m.function, err)
	}
	if m.contract == runtime.ContractWAGI {
		return &wagiInstance{m: m, res: res}, nil
	}
	i, err := m.newSDKInstance(ctx, res)
	if err != nil {
		m.rt.unuse(ctx, m.code)
		return nil, err
	}
	return i, nil
}

// moduleConfig is what every instance gets: real clocks and randomness (the
// wazero defaults are deterministic fakes), the function name as argv[0]
// and the spec's environment.
func (m *module) moduleConfig() wazero.ModuleConfig {
	m.baseOnce.Do(func() { m.base = m.buildModuleConfig() })
	return m.base
}

func (m *module) buildModuleConfig() wazero.ModuleConfig {
	cfg := wazero.NewModuleConfig().
		WithName(""). // anonymous: many instances of one module coexist
		WithArgs(m.function).
		WithSysWalltime().
		WithSysNanotime().
		WithSysNanosleep().
		WithRandSource(rand.Reader).
		WithStartFunctions()
	for _, e := range m.env {
		cfg = cfg.WithEnv(e.k, e.v)
	}
	return cfg
}

// withCall returns ctx carrying what host functions need to know about the
// guest call made with it.
func (m *module) withCall(ctx context.Context, invocation, traceParent string, sink runtime.LogSink) context.Context {
	return capability.WithCaller(ctx, &capability.Caller{App: m.app, Function: m.function, InvocationID: invocation, TraceParent: traceParent, Grants: m.grants, Sink: sink})
}

// instantiate runs wazero's InstantiateModule with a memory capped at the
// function's limit. A panic from wazero (an allocator refusing a module's
// initial memory) becomes an error.
func (m *module) instantiate(ctx context.Context, cm wazero.CompiledModule, alloc *cappedAllocator, cfg wazero.ModuleConfig) (mod api.Module, err error) {
	defer func() {
		if p := recover(); p != nil {
			mod, err = nil, fmt.Errorf("instantiate: %v", p)
		}
	}()
	defer func() {
		if mod == nil {
			alloc.release() // wazero frees only the memory of a module it closes
		}
	}()
	return m.rt.rt.InstantiateModule(experimental.WithMemoryAllocator(ctx, alloc), cm, cfg)
}

// failure turns an error from a guest call into the error Handle returns.
// parent is the caller's context (before the function's timeout was added).
func (m *module) failure(parent context.Context, err error, alloc *cappedAllocator, stderr *lineWriter) error {
	if alloc.refused.Load() {
		return &runtime.LimitError{Err: runtime.ErrMemoryLimit, Limit: model.FormatBytes(m.limits.MemoryBytes)}
	}
	var exit *sys.ExitError
	if errors.As(err, &exit) {
		switch exit.ExitCode() {
		case sys.ExitCodeDeadlineExceeded, sys.ExitCodeContextCanceled:
			if perr := callDone(parent); perr != nil {
				return fmt.Errorf("%s/%s: %w", m.app, m.function, perr)
			}
			return &runtime.LimitError{Err: runtime.ErrTimeout, Limit: m.limits.Timeout.String()}
		}
		return guestFailed(fmt.Sprintf("exited with code %d", exit.ExitCode()), stderr.reason(), err)
	}
	if perr := callDone(parent); perr != nil {
		return fmt.Errorf("%s/%s: %w", m.app, m.function, perr)
	}
	return guestFailed(firstLine(err.Error()), stderr.reason(), err)
}

// guestError is ErrGuestFailed with the guest's reason.
type guestError struct {
	reason string
	cause  error
}

func (e *guestError) Error() string { return runtime.ErrGuestFailed.Error() + ": " + e.reason }
func (e *guestError) Unwrap() []error {
	if e.cause == nil {
		return []error{runtime.ErrGuestFailed}
	}
	return []error{runtime.ErrGuestFailed, e.cause}
}

func guestFailed(what, stderr string, cause error) error {
	if stderr != "" && !strings.Contains(what, stderr) {
		what += ": " + stderr
	}
	return &guestError{reason: what, cause: cause}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func (m *module) responseTooLarge() error {
	return &runtime.LimitError{Err: runtime.ErrResponseTooLarge, Limit: model.FormatBytes(uint64(m.limits.MaxResponseBytes))}
}
