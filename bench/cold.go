package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	goruntime "runtime"
	"runtime/debug"
	"time"

	"github.com/tetratelabs/wazero/api"

	"github.com/nimbus-dev/nimbus/internal/guesttest"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/runtime/wasm"
	"github.com/nimbus-dev/nimbus/internal/scheduler"
	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// coldLimit bounds one cold-start measurement in count.
const coldLimit = 20_000

// runCold: the first request on a new instance of an already compiled
// module (NewInstance + one Handle through internal/runtime/wasm) against
// plain wazero doing the same (InstantiateModule, nimbus_alloc,
// nimbus_handle), for the minimal hand-made SDK guest and for the Go SDK
// hello guest. Instances are closed outside the timed part on both sides.
func runCold(ctx context.Context, b *bench) ([]row, error) {
	ex, err := b.loadExample("hello", "hello", guesttest.Reactor)
	if err != nil {
		return nil, err
	}
	minimal := minimalSDK(0)
	minimalFn := ex.fn
	minimalFn.Module = sha(minimal)

	var rows []row
	for _, g := range []struct {
		name string
		wasm []byte
		fn   model.Function
		// live is how many instances are held at once to measure memory.
		live int
	}{
		{"minimal", minimal, minimalFn, 200},
		{"go-sdk", ex.wasm, ex.fn, 16},
	} {
		r, err := coldGuest(ctx, b, g.name, g.wasm, g.fn, g.live)
		if err != nil {
			return nil, fmt.Errorf("%s guest: %w", g.name, err)
		}
		rows = append(rows, r...)
	}
	return rows, nil
}

func coldGuest(ctx context.Context, b *bench, name string, artifact []byte, fn model.Function, live int) ([]row, error) {
	rt, err := wasm.New(ctx, wasm.Config{Logger: b.logger})
	if err != nil {
		return nil, err
	}
	defer rt.Close(context.Background())
	mod, err := rt.Load(ctx, scheduler.SpecOf("bench", fn, artifact))
	if err != nil {
		return nil, err
	}
	defer mod.Close(context.Background())
	start := ""
	if name == "go-sdk" {
		start = "_initialize"
	}
	raw, err := newRawWazero(ctx, b.opts.baselineTermination, artifact, fn.Name, fn.Env, start)
	if err != nil {
		return nil, err
	}
	defer raw.close(context.Background())

	req := &runtime.Request{
		Method: http.MethodGet, Path: "/hello/bench", Header: http.Header{"User-Agent": {"bench"}},
		Host: "127.0.0.1", RemoteAddr: "127.0.0.1:40000", Route: "GET /hello/{name}",
		Params: map[string]string{"name": "bench"}, InvocationID: "bench",
		TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
	}
	rawReq := wire.EncodeRequest(nil, &wire.Request{
		Method: req.Method, Path: req.Path, Host: req.Host, RemoteAddr: req.RemoteAddr, Route: req.Route,
		InvocationID: req.InvocationID, TraceParent: req.TraceParent, Header: req.Header, Params: req.Params,
	})

	nimbusOnce := func(ctx context.Context) (runtime.Instance, error) {
		inst, err := mod.NewInstance(ctx)
		if err != nil {
			return nil, err
		}
		resp, err := inst.Handle(ctx, req)
		if err != nil {
			inst.Close(ctx)
			return nil, err
		}
		if resp.Status != http.StatusOK {
			inst.Close(ctx)
			return nil, fmt.Errorf("status %d: %s", resp.Status, resp.Body)
		}
		return inst, nil
	}
	rawOnce := func(ctx context.Context) (api.Module, error) {
		m, err := raw.rt.InstantiateModule(ctx, raw.compiled, raw.cfg)
		if err != nil {
			return nil, err
		}
		if _, err := sdkCall(ctx, m, rawReq); err != nil {
			m.Close(ctx)
			return nil, err
		}
		return m, nil
	}
	ops := map[string]func(context.Context) (time.Duration, error){
		"nimbus": func(ctx context.Context) (time.Duration, error) {
			t0 := time.Now()
			inst, err := nimbusOnce(ctx)
			took := time.Since(t0)
			if err != nil {
				return 0, err
			}
			return took, inst.Close(ctx)
		},
		"raw": func(ctx context.Context) (time.Duration, error) {
			t0 := time.Now()
			m, err := rawOnce(ctx)
			took := time.Since(t0)
			if err != nil {
				return 0, err
			}
			return took, m.Close(ctx)
		},
	}
	// Warm up both paths (code caches, allocator, first GC cycles).
	for _, op := range ops {
		if _, err := measure(ctx, 1, min(b.opts.duration/4, 300*time.Millisecond), coldLimit, op); err != nil {
			return nil, err
		}
	}
	p50 := map[string][]float64{}
	p99 := map[string][]float64{}
	rate := map[string][]float64{}
	sides := []string{"nimbus", "raw"}
	for i := range b.opts.runs {
		for j := range sides {
			side := sides[(i+j)%2]
			res, err := measure(ctx, 1, b.opts.duration/2, coldLimit, ops[side])
			if err != nil {
				return nil, fmt.Errorf("%s: %w", side, err)
			}
			p50[side] = append(p50[side], us(res.P50))
			p99[side] = append(p99[side], us(res.P99))
			rate[side] = append(rate[side], res.RPS())
			if b.opts.verbose {
				progress("   run %d %s %-6s p50 %.1fµs p99 %.1fµs (%d cold starts)", i+1, name, side, us(res.P50), us(res.P99), res.Requests)
			}
		}
	}

	// Warm call: one request on an instance that already served one, on
	// one thread, so the runtime's per-call cost is seen without HTTP.
	inst, err := nimbusOnce(ctx)
	if err != nil {
		return nil, err
	}
	defer inst.Close(context.Background())
	rawInst, err := rawOnce(ctx)
	if err != nil {
		return nil, err
	}
	defer rawInst.Close(context.Background())
	warmOps := map[string]func(context.Context) (time.Duration, error){
		"nimbus": func(ctx context.Context) (time.Duration, error) {
			resp, err := inst.Handle(ctx, req)
			if err == nil && resp.Status != http.StatusOK {
				err = fmt.Errorf("status %d", resp.Status)
			}
			return 0, err
		},
		"raw": func(ctx context.Context) (time.Duration, error) {
			_, err := sdkCall(ctx, rawInst, rawReq)
			return 0, err
		},
	}
	warm := map[string][]float64{}
	for i := range b.opts.runs {
		for j := range sides {
			side := sides[(i+j)%2]
			res, err := measure(ctx, 1, b.opts.duration/2, coldLimit*5, warmOps[side])
			if err != nil {
				return nil, fmt.Errorf("warm call %s: %w", side, err)
			}
			warm[side] = append(warm[side], us(res.P50))
			if b.opts.verbose {
				progress("   run %d %s warm call %-6s p50 %.1fµs p99 %.1fµs (%d calls)", i+1, name, side, us(res.P50), us(res.P99), res.Requests)
			}
		}
	}

	// Memory: hold `live` instances after one request each and divide the
	// growth of the Go heap (where wazero keeps module instances, and raw
	// wazero linear memories) and of the process's RSS (which also counts
	// Nimbus's linear memories, mapped outside the Go heap, by the pages
	// written) by their number.
	heap := map[string][]float64{}
	rssGrowth := map[string][]float64{}
	for range b.opts.runs {
		n, nr, err := memoryPerInstance(ctx, live, func(ctx context.Context) (closer, error) { return nimbusOnce(ctx) })
		if err != nil {
			return nil, err
		}
		r, rr, err := memoryPerInstance(ctx, live, func(ctx context.Context) (closer, error) { return rawOnce(ctx) })
		if err != nil {
			return nil, err
		}
		heap["nimbus"], heap["raw"] = append(heap["nimbus"], n), append(heap["raw"], r)
		rssGrowth["nimbus"], rssGrowth["raw"] = append(rssGrowth["nimbus"], nr), append(rssGrowth["raw"], rr)
	}
	m, err := rawOnce(ctx)
	if err != nil {
		return nil, err
	}
	linear := m.Memory().Size()
	m.Close(ctx)

	p := newRow("cold", name+": p50", "µs", p50["nimbus"], "wazero", p50["raw"])
	switch name {
	case "minimal":
		p = p.goal("<= 1000 µs and <= 2x raw", p.Nimbus <= 1000 && p.Ratio <= 2)
	case "go-sdk":
		p = p.goal("<= 1000 µs", p.Nimbus <= 1000)
	}
	return []row{
		p,
		newRow("cold", name+": p99", "µs", p99["nimbus"], "wazero", p99["raw"]),
		newRow("cold", name+": cold starts/s, 1 thread", "inst/s", rate["nimbus"], "wazero", rate["raw"]),
		newRow("cold", name+": warm call p50 (for contrast)", "µs", warm["nimbus"], "wazero", warm["raw"]),
		newRow("cold", fmt.Sprintf("%s: Go heap per live instance (linear memory %s)", name, fmtValue(float64(linear), "B")), "B", heap["nimbus"], "wazero", heap["raw"]),
		newRow("cold", fmt.Sprintf("%s: RSS per live instance, %d live", name, live), "B", rssGrowth["nimbus"], "wazero", rssGrowth["raw"]),
	}, nil
}

type closer interface {
	Close(context.Context) error
}

// memoryPerInstance creates n instances with newInst, keeps them all
// alive, and returns the growth of the live Go heap and of the process's
// RSS per instance.
func memoryPerInstance(ctx context.Context, n int, newInst func(context.Context) (closer, error)) (heap, rssPer float64, err error) {
	var before, after goruntime.MemStats
	goruntime.GC()
	debug.FreeOSMemory()
	goruntime.ReadMemStats(&before)
	rss0, err := rss(os.Getpid())
	if err != nil {
		return 0, 0, err
	}
	insts := make([]closer, 0, n)
	defer func() {
		for _, i := range insts {
			i.Close(ctx)
		}
	}()
	for range n {
		inst, err := newInst(ctx)
		if err != nil {
			return 0, 0, err
		}
		insts = append(insts, inst)
	}
	goruntime.GC()
	goruntime.ReadMemStats(&after)
	rss1, err := rss(os.Getpid())
	if err != nil {
		return 0, 0, err
	}
	return (float64(after.HeapAlloc) - float64(before.HeapAlloc)) / float64(n), float64(rss1-rss0) / float64(n), nil
}
