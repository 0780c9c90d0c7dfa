package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/tetratelabs/wazero/api"

	"github.com/nimbus-dev/nimbus/internal/guesttest"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/runtime/wasm"
	"github.com/nimbus-dev/nimbus/internal/runtime/wasm/wasmbin"
	"github.com/nimbus-dev/nimbus/internal/scheduler"
	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// runInterrupt isolates what the load-time rewrite (wasm.Rewrite) costs and
// gains, on plain wazero with no Nimbus code on the measured path:
//
//   - a warm call of the Go SDK hello guest, instrumented with the fuel
//     check, and the original with wazero's WithCloseOnContextDone (what
//     Nimbus did before), each against the original module with no
//     interruption at all;
//   - instantiation of the same guest, rewritten (data segments merged)
//     against the original, without and with _initialize.
//
// Then, through the Nimbus runtime, interruption latency: how long after
// its deadline a spinning guest's call returns.
func runInterrupt(ctx context.Context, b *bench) ([]row, error) {
	ex, err := b.loadExample("hello", "hello", guesttest.Reactor)
	if err != nil {
		return nil, err
	}
	rewritten, err := wasm.Rewrite(ex.wasm)
	if err != nil {
		return nil, err
	}
	rawReq := wire.EncodeRequest(nil, &wire.Request{
		Method: http.MethodGet, Path: "/hello/bench", Host: "127.0.0.1", RemoteAddr: "127.0.0.1:40000",
		Route: "GET /hello/{name}", Params: map[string]string{"name": "bench"}, InvocationID: "bench",
		Header: http.Header{"User-Agent": {"bench"}},
	})
	type variant struct {
		wasm        []byte
		closeOnDone bool
	}
	variants := map[string]variant{
		"none":         {ex.wasm, false},
		"instrumented": {rewritten, false},
		"closeOnDone":  {ex.wasm, true},
	}
	raws := map[string]*rawWazero{}
	warm := map[string]api.Module{}
	for name, v := range variants {
		raw, err := newRawWazero(ctx, v.closeOnDone, v.wasm, ex.fn.Name, ex.fn.Env, "_initialize")
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		defer raw.close(context.Background())
		m, err := raw.rt.InstantiateModule(ctx, raw.compiled, raw.cfg)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		raws[name], warm[name] = raw, m
	}
	callOps := map[string]func(context.Context) (time.Duration, error){}
	for name, m := range warm {
		callOps[name] = func(ctx context.Context) (time.Duration, error) {
			// A deadline, as every Nimbus call has: CloseOnContextDone
			// watches it.
			cctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			_, err := sdkCall(cctx, m, rawReq)
			return 0, err
		}
	}
	calls, err := alternate(ctx, b, "warm call", []string{"none", "instrumented", "closeOnDone"}, callOps, coldLimit*5)
	if err != nil {
		return nil, err
	}

	// Instantiation: the rewritten module (merged segments) and the
	// original, on one runtime each, both without interruption.
	instOps := map[string]func(context.Context) (time.Duration, error){}
	for _, name := range []string{"none", "instrumented"} {
		raw := raws[name]
		for _, start := range []string{"", "_initialize"} {
			cfg := raw.cfg.WithStartFunctions()
			key := name + " instantiate"
			if start != "" {
				cfg, key = raw.cfg.WithStartFunctions(start), name+" instantiate+init"
			}
			instOps[key] = func(ctx context.Context) (time.Duration, error) {
				t0 := time.Now()
				m, err := raw.rt.InstantiateModule(ctx, raw.compiled, cfg)
				took := time.Since(t0)
				if err != nil {
					return 0, err
				}
				return took, m.Close(ctx)
			}
		}
	}
	insts, err := alternate(ctx, b, "instantiate", []string{"none instantiate", "instrumented instantiate", "none instantiate+init", "instrumented instantiate+init"}, instOps, coldLimit)
	if err != nil {
		return nil, err
	}

	lat, err := interruptLatency(ctx, b)
	if err != nil {
		return nil, err
	}
	gw, err := interruptGateway(ctx, b)
	if err != nil {
		return nil, err
	}
	lat = append(lat, gw...)
	call := newRow("interrupt", "Go SDK warm call p50, fuel check (Nimbus)", "µs", calls["instrumented"], "no interruption", calls["none"])
	call = call.goal("<= 1.3x", call.Ratio <= 1.3)
	return append([]row{
		call,
		newRow("interrupt", "Go SDK warm call p50, CloseOnContextDone (before)", "µs", calls["closeOnDone"], "no interruption", calls["none"]),
		newRow("interrupt", "Go SDK instantiate only p50, merged data segments", "µs", insts["instrumented instantiate"], "original module", insts["none instantiate"]),
		newRow("interrupt", "Go SDK instantiate + _initialize p50, rewritten", "µs", insts["instrumented instantiate+init"], "original module", insts["none instantiate+init"]),
	}, lat...), nil
}

// alternate measures each op b.opts.runs times on one thread, taking turns,
// and returns the p50s in µs by name.
func alternate(ctx context.Context, b *bench, what string, names []string, ops map[string]func(context.Context) (time.Duration, error), limit int64) (map[string][]float64, error) {
	for _, name := range names {
		if _, err := measure(ctx, 1, min(b.opts.duration/4, 300*time.Millisecond), limit, ops[name]); err != nil {
			return nil, fmt.Errorf("%s %s: %w", what, name, err)
		}
	}
	out := map[string][]float64{}
	for i := range b.opts.runs {
		for j := range names {
			name := names[(i+j)%len(names)]
			res, err := measure(ctx, 1, b.opts.duration/2, limit, ops[name])
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", what, name, err)
			}
			out[name] = append(out[name], us(res.P50))
			if b.opts.verbose {
				progress("   run %d %s %-28s p50 %.1fµs p99 %.1fµs (%d)", i+1, what, name, us(res.P50), us(res.P99), res.Requests)
			}
		}
	}
	return out, nil
}

// interruptLatency runs hand-written guests that never return (a loop; a
// loop of calls) with a 20 ms timeout through the Nimbus runtime and
// reports how long after the deadline Handle returns ErrTimeout.
func interruptLatency(ctx context.Context, b *bench) ([]row, error) {
	rt, err := wasm.New(ctx, wasm.Config{Logger: b.logger})
	if err != nil {
		return nil, err
	}
	defer rt.Close(context.Background())
	const timeout = 20 * time.Millisecond
	loop := wasmbin.Concat(wasmbin.LoopForever(), wasmbin.I64Const(0))
	calling := wasmbin.Concat([]byte{0x03, 0x40}, wasmbin.Call(0), []byte{0x0c, 0x00, 0x0b}, wasmbin.I64Const(0))
	var rows []row
	for _, g := range []struct{ name, body string }{{"loop", string(loop)}, {"loop of calls", string(calling)}} {
		artifact := spinningSDK([]byte(g.body))
		fn := benchFunction(artifact)
		fn.TimeoutMS = int64(timeout / time.Millisecond)
		mod, err := rt.Load(ctx, scheduler.SpecOf("bench", fn, artifact))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", g.name, err)
		}
		defer mod.Close(context.Background())
		res, err := measure(ctx, 1, b.opts.duration, 100, func(ctx context.Context) (time.Duration, error) {
			inst, err := mod.NewInstance(ctx)
			if err != nil {
				return 0, err
			}
			defer inst.Close(ctx)
			t0 := time.Now()
			_, err = inst.Handle(ctx, &runtime.Request{Method: "GET", Path: "/", Header: http.Header{}})
			took := time.Since(t0) - timeout
			if !errors.Is(err, runtime.ErrTimeout) {
				return 0, fmt.Errorf("err = %v, want ErrTimeout", err)
			}
			return max(took, 1), nil
		})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", g.name, err)
		}
		rows = append(rows,
			newRow("interrupt", "timeout to error, "+g.name+": p50 past the deadline", "µs", []float64{us(res.P50)}, "", nil),
			newRow("interrupt", "timeout to error, "+g.name+": p99 past the deadline", "µs", []float64{us(res.P99)}, "", nil))
	}
	return rows, nil
}

// interruptGateway deploys the looping guest with a 20 ms timeout on an
// in-process node and reports, for requests through its gateway, how long
// after the timeout the caller receives its 504: the interruption check,
// the runtime's error path, the scheduler and the gateway together.
func interruptGateway(ctx context.Context, b *bench) ([]row, error) {
	const timeout = 20 * time.Millisecond
	artifact := spinningSDK(wasmbin.Concat(wasmbin.LoopForever(), wasmbin.I64Const(0)))
	srv, err := b.startServer(ctx, "interrupt")
	if err != nil {
		return nil, err
	}
	defer srv.Close(context.Background())
	if _, err := srv.PutArtifact(ctx, artifact); err != nil {
		return nil, err
	}
	fn := benchFunction(artifact)
	fn.TimeoutMS = int64(timeout / time.Millisecond)
	fn.Routes = []model.Route{{Method: "GET", Path: "/spin"}}
	if _, _, err := srv.Deploy(ctx, "spin", model.Spec{Functions: []model.Function{fn}}); err != nil {
		return nil, fmt.Errorf("deploy spin: %w", err)
	}
	client := loadClient(1)
	defer client.CloseIdleConnections()
	url := srv.GatewayURL() + "/spin"
	var p50, p99 []float64
	for range b.opts.runs {
		res, err := measure(ctx, 1, b.opts.duration, 100, func(ctx context.Context) (time.Duration, error) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return 0, err
			}
			t0 := time.Now()
			resp, err := client.Do(req)
			if err != nil {
				return 0, err
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			took := time.Since(t0) - timeout
			if resp.StatusCode != http.StatusGatewayTimeout {
				return 0, fmt.Errorf("status %d, want 504", resp.StatusCode)
			}
			return max(took, 1), nil
		})
		if err != nil {
			return nil, fmt.Errorf("gateway: %w", err)
		}
		p50, p99 = append(p50, us(res.P50)), append(p99, us(res.P99))
	}
	return []row{
		newRow("interrupt", "timeout to the caller's 504, loop, via gateway: p50 past the deadline", "µs", p50, "", nil),
		newRow("interrupt", "timeout to the caller's 504, loop, via gateway: p99 past the deadline", "µs", p99, "", nil),
	}, nil
}

// spinningSDK is the minimal SDK guest with handleBody as nimbus_handle.
func spinningSDK(handleBody []byte) []byte {
	tVoid := wasmbin.FuncType{}
	tAlloc := wasmbin.FuncType{Params: []byte{wasmbin.I32}, Results: []byte{wasmbin.I32}}
	tHandle := wasmbin.FuncType{Params: []byte{wasmbin.I32, wasmbin.I32}, Results: []byte{wasmbin.I64}}
	m := &wasmbin.Module{
		Types:       []wasmbin.FuncType{tVoid, tAlloc, tHandle},
		Funcs:       []wasmbin.Func{{Type: 0}, {Type: 1, Body: wasmbin.I32Const(minimalReqAt)}, {Type: 2, Body: handleBody}},
		MemoryPages: 1,
		Exports: []wasmbin.Export{
			{Name: "memory", Kind: wasmbin.KindMemory},
			{Name: wire.ExportMarker, Kind: wasmbin.KindFunc, Index: 0},
			{Name: wire.ExportAlloc, Kind: wasmbin.KindFunc, Index: 1},
			{Name: wire.ExportHandle, Kind: wasmbin.KindFunc, Index: 2},
		},
	}
	return m.Encode()
}
