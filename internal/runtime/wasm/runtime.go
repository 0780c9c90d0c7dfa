package wasm

import (
	"bytes"
	"container/list"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"

	"github.com/nimbus-dev/nimbus/internal/capability"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/runtime/wasm/hostfn"
	"github.com/nimbus-dev/nimbus/internal/runtime/wasm/wasmrw"
	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

const (
	pageSize = 64 << 10
	// maxMemoryBytes is all a wasm32 memory can address.
	maxMemoryBytes = 1 << 32
	wasiModule     = wasi_snapshot_preview1.ModuleName
)

// The interruption check Load instruments every module with (package
// wasmrw): a fuel counter decremented at each loop header and function
// entry calls interruptModule.interruptName when it reaches zero.
const (
	interruptModule = "nimbus_runtime"
	interruptName   = "interrupt_check"
	// fuelPerCheck is how many loop iterations and function entries run
	// between two checks of the deadline. A Go guest runs 10,000 of them in
	// tens of microseconds, so a check costs it a fraction of a percent, and
	// a deadline, the Go scheduler and the garbage collector wait at most
	// that long for a spinning guest.
	fuelPerCheck = 10_000
	// mergeDataGap is the largest run of zeros that merging data segments
	// fills in: Go's linker starts a segment at every 8 zero bytes.
	mergeDataGap = 4096
)

// rewriteOptions is what Load does to every module before compiling it.
var rewriteOptions = wasmrw.Options{
	Interrupt:     &wasmrw.Interrupt{Module: interruptModule, Name: interruptName, Fuel: fuelPerCheck},
	MergeDataGap:  mergeDataGap,
	ExportGlobals: snapshotGlobals,
}

// callDone is ctx.Err(), or context.DeadlineExceeded as soon as ctx's
// deadline has passed even if its timer has not fired yet: on a busy node
// the timer goroutine can run milliseconds late, and a spinning guest would
// run on until it does.
func callDone(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return context.DeadlineExceeded
	}
	return nil
}

// loadOptions is rewriteOptions plus moving the data segments out into
// an image (wasmrw.Options.DataImage), which only this package's
// allocator knows to lay into memory.
var loadOptions = func() wasmrw.Options {
	o := rewriteOptions
	o.DataImage = true
	return o
}()

// Rewrite returns wasm as Load compiles it, except that it keeps its data
// segments: instrumented with the interruption check (imported as
// nimbus_runtime.interrupt_check, () -> (i32), returning the fuel until the
// next check), with its data segments merged and its mutable globals
// exported (snapshotGlobals). Benchmarks use it to run the same code on
// plain wazero.
func Rewrite(wasm []byte) ([]byte, error) {
	out, _, err := wasmrw.Rewrite(wasm, rewriteOptions)
	return out, err
}

// interruptCheck is the host side of the fuel check: it stops the guest
// when the call's context is done (deadline, caller gone, node stopping),
// as proc_exit does, and otherwise refills the fuel. Being an exit to Go, it
// is also where a spinning guest's goroutine can be preempted.
func interruptCheck(ctx context.Context, mod api.Module, stack []uint64) {
	if err := callDone(ctx); err != nil {
		code := sys.ExitCodeContextCanceled
		if errors.Is(err, context.DeadlineExceeded) {
			code = sys.ExitCodeDeadlineExceeded
		}
		_ = mod.CloseWithExitCode(ctx, code)
		panic(sys.NewExitError(code))
	}
	stack[0] = fuelPerCheck
}

// Config configures a Runtime. The zero value is usable.
type Config struct {
	// CacheDir holds compiled code across process restarts. Optional:
	// default "" keeps compiled code in memory only.
	CacheDir string
	// Logger receives runtime diagnostics. Optional: default discards.
	Logger *slog.Logger
	// HostFunctions are the host functions guests may import. Optional:
	// default hostfn.NewDefaultRegistry over
	// capability.New(capability.Config{Logger: Logger}).
	HostFunctions *hostfn.Registry
	// Artifacts gives back the artifact of a function whose compiled code
	// was evicted (code.go), at its next instance. Optional: default nil
	// keeps the compiled code of every loaded module for as long as it is
	// loaded.
	Artifacts ArtifactSource
	// IdleModules is how many artifacts no instance uses stay compiled
	// (the most recently used); the code of the others is released and
	// reloaded at their next instance. Only with Artifacts. Optional:
	// default 1024.
	IdleModules int
	// IdleModuleBytes bounds the total size of the artifacts counted in
	// IdleModules (the most recently used one stays whatever its size).
	// Optional: default 64 MiB (about ten Go guests of 6 MB, which take
	// about 30 MiB of memory each once compiled and run: ~300 MiB).
	IdleModuleBytes int64
}

// ArtifactSource gives an artifact's bytes by its SHA-256 (lowercase hex).
type ArtifactSource interface {
	GetArtifact(ctx context.Context, sha string) ([]byte, error)
}

// Defaults of Config.IdleModules and Config.IdleModuleBytes.
const (
	defaultIdleModules     = 1024
	defaultIdleModuleBytes = 64 << 20
)

// Runtime runs WebAssembly functions on one wazero runtime (compiler
// backend) shared by every module it loads.
type Runtime struct {
	logger *slog.Logger
	cache  wazero.CompilationCache
	rt     wazero.Runtime
	// provided lists, per allowed import module, the functions it exports.
	provided map[string]map[string]api.FunctionDefinition
	// ctx is cancelled by Close, which then waits for reloads.
	ctx     context.Context
	cancel  context.CancelFunc
	reloads sync.WaitGroup
	// The eviction of idle codes (code.go): src is nil when there is none.
	src          ArtifactSource
	idleMax      int
	idleMaxBytes int64
	// evicted and reloaded count evictions and reloads of compiled code.
	evicted, reloaded atomic.Int64

	mu sync.Mutex
	// codes are the loaded artifacts' code by the SHA-256 of the artifact.
	codes map[[sha256.Size]byte]*code
	// idle lists the resident codes no instance uses, most recently used
	// first, and idleBytes sums their artifacts' sizes.
	idle      list.List
	idleBytes int64
}

var _ runtime.Runtime = (*Runtime)(nil)

// New returns a Runtime with WASI preview 1 and the host functions
// instantiated. Close it to release compiled code.
func New(ctx context.Context, cfg Config) (*Runtime, error) {
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	reg := cfg.HostFunctions
	if reg == nil {
		reg = hostfn.NewDefaultRegistry(capability.New(capability.Config{Logger: logger}))
	}
	cache := wazero.NewCompilationCache()
	if cfg.CacheDir != "" {
		var err error
		if cache, err = wazero.NewCompilationCacheWithDir(cfg.CacheDir); err != nil {
			return nil, fmt.Errorf("wasm: compilation cache %s: %w", cfg.CacheDir, err)
		}
	}
	// Deadlines are enforced by the instrumentation (interruptCheck), not
	// by CloseOnContextDone, whose exit to Go at every loop header costs a
	// Go guest a large factor (RATIONALE.md).
	rcfg := wazero.NewRuntimeConfigCompiler().
		WithCompilationCache(cache).
		WithCloseOnContextDone(false)
	rt := wazero.NewRuntimeWithConfig(ctx, rcfg)
	r := &Runtime{logger: logger, cache: cache, rt: rt, provided: map[string]map[string]api.FunctionDefinition{}, codes: map[[sha256.Size]byte]*code{},
		src: cfg.Artifacts, idleMax: cfg.IdleModules, idleMaxBytes: cfg.IdleModuleBytes}
	if r.idleMax <= 0 {
		r.idleMax = defaultIdleModules
	}
	if r.idleMaxBytes <= 0 {
		r.idleMaxBytes = defaultIdleModuleBytes
	}
	r.ctx, r.cancel = context.WithCancel(context.WithoutCancel(ctx))
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
		r.Close(ctx)
		return nil, fmt.Errorf("wasm: instantiate WASI: %w", err)
	}
	if _, err := reg.Instantiate(ctx, rt); err != nil {
		r.Close(ctx)
		return nil, fmt.Errorf("wasm: %w", err)
	}
	if _, err := rt.NewHostModuleBuilder(interruptModule).NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(interruptCheck), nil, []api.ValueType{api.ValueTypeI32}).
		Export(interruptName).Instantiate(ctx); err != nil {
		r.Close(ctx)
		return nil, fmt.Errorf("wasm: instantiate %s: %w", interruptModule, err)
	}
	for _, name := range []string{wasiModule, hostfn.ModuleName, interruptModule} {
		r.provided[name] = rt.Module(name).ExportedFunctionDefinitions()
	}
	return r, nil
}

// Close implements runtime.Runtime.
func (r *Runtime) Close(ctx context.Context) error {
	r.mu.Lock() // use starts no reload after this (it checks r.ctx under r.mu)
	r.cancel()
	r.mu.Unlock()
	r.reloads.Wait()
	return errors.Join(r.rt.Close(ctx), r.cache.Close(ctx))
}

// Load implements runtime.Runtime: it rewrites the module (the interruption
// check, merged data segments: rewriteOptions), compiles the result (or
// loads it from the compilation cache, keyed by the rewritten bytes),
// checks its imports and detects its contract.
func (r *Runtime) Load(ctx context.Context, spec runtime.Spec) (runtime.Module, error) {
	invalid := func(format string, args ...any) error {
		return fmt.Errorf("load %s/%s: %w: %s", spec.App, spec.Function, runtime.ErrInvalidModule, fmt.Sprintf(format, args...))
	}
	if !spec.Limits.Complete() {
		// A caller's bug, not the module's: model.Plan fills every limit.
		return nil, fmt.Errorf("load %s/%s: incomplete limits %+v: every limit must be set (model.Plan fills them)", spec.App, spec.Function, spec.Limits)
	}
	lim := pageLimits(spec.Limits)
	if lim.MemoryBytes > maxMemoryBytes {
		return nil, invalid("memory limit %s is above the 4GiB a wasm32 module can address", model.FormatBytes(lim.MemoryBytes))
	}
	for k, v := range spec.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.Contains(v, "\x00") {
			return nil, invalid("environment variable %q: names must be non-empty without '=' or NUL, values without NUL", k)
		}
	}
	b := spec.Artifact
	if len(b) < 8 || !bytes.Equal(b[:4], []byte("\x00asm")) {
		return nil, invalid("not a WebAssembly module (bad magic)")
	}
	if !bytes.Equal(b[4:8], []byte{1, 0, 0, 0}) {
		return nil, invalid("unsupported WebAssembly binary version %x (want 1)", b[4:8])
	}
	start := time.Now()
	m := &module{
		rt:       r,
		app:      spec.App,
		function: spec.Function,
		limits:   lim,
		grants:   capability.NewGrants(spec.Capabilities),
		env:      sortedEnv(spec.Env),
	}
	c, res, err := r.acquire(ctx, m, b)
	var rwErr *rewriteError
	switch {
	case errors.Is(err, wasmrw.ErrReserved):
		return nil, invalid("%v: %q belongs to Nimbus", err, interruptModule)
	case errors.As(err, &rwErr):
		return nil, invalid("does not compile: %v", err)
	case err != nil && ctx.Err() != nil:
		return nil, fmt.Errorf("load %s/%s: %w", spec.App, spec.Function, ctx.Err())
	case err != nil:
		return nil, fmt.Errorf("load %s/%s: %w: does not compile: %w", spec.App, spec.Function, runtime.ErrInvalidModule, err)
	}
	m.code = c
	why := r.check(res.module, lim, m)
	dataInModule := res.image == nil && c.stats.DataEnd != 0
	imageBytes := res.image.len()
	if why != "" {
		// Released before the use ends, so that a module refused here
		// never joins the idle list (where it could evict another).
		r.release(ctx, c, m)
		r.unuse(ctx, c)
		return nil, invalid("%s", why)
	}
	r.unuse(ctx, c)
	stats := c.stats
	// A snapshot restores memory by mapping it, so the module must not
	// write data segments over it at instantiation.
	m.snapOK = m.contract == runtime.ContractSDK && snapshottable(stats, m.initialize) && !dataInModule
	m.snapGlobals = stats.Globals
	r.mu.Lock()
	shared := c.refs - 1 // refs is guarded by r.mu: loads and releases of the same code race
	r.mu.Unlock()
	r.logger.Debug("module loaded", "app", spec.App, "function", spec.Function, "revision", spec.Revision,
		"contract", string(m.contract), "bytes", len(spec.Artifact), "rewrite_seconds", c.rewrite.Seconds(),
		"checks", stats.Checks, "data_segments", stats.DataSegments, "merged_data_segments", stats.MergedSegments, "data_image_bytes", imageBytes, "snapshot", m.snapOK,
		"shared_with", shared, "load_seconds", time.Since(start).Seconds())
	return m, nil
}

// check validates imports, memory and exports, fills m.contract, and
// returns why the module is unusable, or "".
func (r *Runtime) check(c wazero.CompiledModule, lim runtime.Limits, m *module) string {
	for _, def := range c.ImportedFunctions() {
		mod, name, _ := def.Import()
		provided, ok := r.provided[mod]
		if !ok {
			return fmt.Sprintf("module imports %q from %q, which Nimbus does not provide (guests may import only %s and %s)", name, mod, wasiModule, hostfn.ModuleName)
		}
		want, ok := provided[name]
		if !ok {
			return fmt.Sprintf("module imports %q from %q, which Nimbus does not provide", name, mod)
		}
		if !slices.Equal(def.ParamTypes(), want.ParamTypes()) || !slices.Equal(def.ResultTypes(), want.ResultTypes()) {
			return fmt.Sprintf("module imports %s.%s as %s, but Nimbus provides %s", mod, name, signature(def), signature(want))
		}
	}
	for _, def := range c.ImportedMemories() {
		mod, name, _ := def.Import()
		return fmt.Sprintf("module imports memory %s.%s; a guest must define its own memory", mod, name)
	}
	mems := c.ExportedMemories()
	for name, def := range mems {
		if uint64(def.Min())*pageSize > lim.MemoryBytes {
			return fmt.Sprintf("memory %q needs %s at start, above the function's memory limit of %s", name, model.FormatBytes(uint64(def.Min())*pageSize), model.FormatBytes(lim.MemoryBytes))
		}
	}
	exports := c.ExportedFunctions()
	start, hasStart := exports["_start"]
	handle, hasHandle := exports[wire.ExportHandle]
	switch {
	case hasHandle && hasStart:
		return "module exports both _start and " + wire.ExportHandle + ": an SDK guest must be a reactor (for Go, build with -buildmode=c-shared)"
	case hasHandle:
		if _, ok := exports[wire.ExportMarker]; !ok {
			return "module exports " + wire.ExportHandle + " but not the ABI marker " + wire.ExportMarker + " (it speaks another ABI version)"
		}
		alloc, ok := exports[wire.ExportAlloc]
		if !ok {
			return "module exports " + wire.ExportHandle + " but not " + wire.ExportAlloc
		}
		if sig := signature(alloc); sig != "(i32) -> (i32)" {
			return fmt.Sprintf("%s has signature %s, want (i32) -> (i32)", wire.ExportAlloc, sig)
		}
		if sig := signature(handle); sig != "(i32, i32) -> (i64)" {
			return fmt.Sprintf("%s has signature %s, want (i32, i32) -> (i64)", wire.ExportHandle, sig)
		}
		if _, ok := mems["memory"]; !ok {
			return "module does not export its memory as \"memory\""
		}
		if init, ok := exports["_initialize"]; ok {
			if sig := signature(init); sig != "() -> ()" {
				return fmt.Sprintf("_initialize has signature %s, want () -> ()", sig)
			}
			m.initialize = true
		}
		_, m.reuse = exports[wire.ExportReuse]
		m.contract = runtime.ContractSDK
	case hasStart:
		if sig := signature(start); sig != "() -> ()" {
			return fmt.Sprintf("_start has signature %s, want () -> ()", sig)
		}
		m.contract = runtime.ContractWAGI
	default:
		return "module exports neither _start (WAGI command) nor " + wire.ExportHandle + " (Nimbus SDK reactor)"
	}
	return ""
}

func signature(def api.FunctionDefinition) string {
	names := func(ts []api.ValueType) string {
		s := make([]string, len(ts))
		for i, t := range ts {
			s[i] = api.ValueTypeName(t)
		}
		return strings.Join(s, ", ")
	}
	return "(" + names(def.ParamTypes()) + ") -> (" + names(def.ResultTypes()) + ")"
}

// pageLimits rounds the memory cap up to whole pages: memory grows in
// pages.
func pageLimits(l runtime.Limits) runtime.Limits {
	l.MemoryBytes = (l.MemoryBytes + pageSize - 1) / pageSize * pageSize
	return l
}

type envVar struct{ k, v string }

func sortedEnv(env map[string]string) []envVar {
	out := make([]envVar, 0, len(env))
	for k, v := range env {
		out = append(out, envVar{k, v})
	}
	slices.SortFunc(out, func(a, b envVar) int { return strings.Compare(a.k, b.k) })
	return out
}

// imageFits reports whether a data image of n bytes fits the initial size
// of module b's exported memory.
func imageFits(b []byte, n int64) bool {
	min, ok := wasmrw.InitialMemory(b)
	return ok && n <= int64(min)*pageSize
}
