package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// rawWazero is the baseline of the runtime scenarios: plain wazero, with
// no Nimbus code on the measured path. It uses the compiler backend and the
// same module configuration as the Nimbus runtime (clocks, randomness,
// argv, environment, start functions) but none of its per-call machinery
// (capped memory allocator, deadlines, host-call context, log capture).
type rawWazero struct {
	rt       wazero.Runtime
	compiled wazero.CompiledModule
	cfg      wazero.ModuleConfig
}

// newRawWazero compiles wasm and satisfies its non-WASI imports with stubs
// that return zeros (the examples import Nimbus's log host function; a
// zero result means success).
//
// closeOnDone turns on wazero's WithCloseOnContextDone, as the Nimbus
// runtime does (the -baseline-termination flag), to show what those
// termination checks cost on their own.
func newRawWazero(ctx context.Context, closeOnDone bool, wasm []byte, function string, env map[string]string, start string) (*rawWazero, error) {
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigCompiler().WithCloseOnContextDone(closeOnDone))
	r := &rawWazero{rt: rt}
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
		r.close(ctx)
		return nil, err
	}
	compiled, err := rt.CompileModule(ctx, wasm)
	if err != nil {
		r.close(ctx)
		return nil, fmt.Errorf("raw wazero compile: %w", err)
	}
	r.compiled = compiled
	hosts := map[string]wazero.HostModuleBuilder{}
	for _, def := range compiled.ImportedFunctions() {
		mod, name, _ := def.Import()
		if mod == wasi_snapshot_preview1.ModuleName {
			continue
		}
		if hosts[mod] == nil {
			hosts[mod] = rt.NewHostModuleBuilder(mod)
		}
		results := len(def.ResultTypes())
		fn := api.GoModuleFunc(func(_ context.Context, _ api.Module, stack []uint64) {
			for i := range results {
				stack[i] = 0
			}
		})
		if mod == "nimbus_runtime" {
			// The interruption check of a module rewritten by wasm.Rewrite:
			// what Nimbus's does, refilling the fuel.
			fn = func(ctx context.Context, m api.Module, stack []uint64) {
				if ctx.Err() != nil {
					panic(ctx.Err())
				}
				stack[0] = 10_000
			}
		}
		hosts[mod].NewFunctionBuilder().
			WithGoModuleFunction(fn, def.ParamTypes(), def.ResultTypes()).
			Export(name)
	}
	for mod, hb := range hosts {
		if _, err := hb.Instantiate(ctx); err != nil {
			r.close(ctx)
			return nil, fmt.Errorf("raw wazero host module %s: %w", mod, err)
		}
	}
	r.cfg = wazero.NewModuleConfig().
		WithName("").
		WithArgs(function).
		WithSysWalltime().
		WithSysNanotime().
		WithSysNanosleep().
		WithRandSource(rand.Reader).
		WithStdout(io.Discard).
		WithStderr(io.Discard).
		WithStartFunctions()
	if start != "" {
		r.cfg = r.cfg.WithStartFunctions(start)
	}
	for k, v := range env {
		r.cfg = r.cfg.WithEnv(k, v)
	}
	return r, nil
}

func (r *rawWazero) close(ctx context.Context) { r.rt.Close(ctx) }

// sdkCall is one request on an SDK reactor instance, through the ABI:
// nimbus_alloc, write the encoded request, nimbus_handle, copy the
// response out. It returns the response bytes.
func sdkCall(ctx context.Context, mod api.Module, req []byte) ([]byte, error) {
	res, err := mod.ExportedFunction("nimbus_alloc").Call(ctx, uint64(len(req)))
	if err != nil {
		return nil, err
	}
	ptr := api.DecodeU32(res[0])
	if !mod.Memory().Write(ptr, req) {
		return nil, fmt.Errorf("request does not fit at %d", ptr)
	}
	res, err = mod.ExportedFunction("nimbus_handle").Call(ctx, uint64(ptr), uint64(len(req)))
	if err != nil {
		return nil, err
	}
	b, ok := mod.Memory().Read(uint32(res[0]>>32), uint32(res[0]))
	if !ok || len(b) == 0 {
		return nil, fmt.Errorf("bad response at %#x", res[0])
	}
	return append([]byte(nil), b...), nil
}
