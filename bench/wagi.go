package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/nimbus-dev/nimbus/internal/guesttest"
)

// wagiWorkers is the fixed concurrency of the WAGI scenario.
const wagiWorkers = 8

// runWAGI: examples/wagi (a plain Go WASI command, one fresh instance per
// request) through the gateway of an in-process node, against a raw
// net/http handler printing the same text, and against raw wazero
// instantiating and running the same module with a CGI environment (no
// HTTP). All three run from 8 workers.
func runWAGI(ctx context.Context, b *bench) ([]row, error) {
	ex, err := b.loadExample("wagi", "cgi", guesttest.Command)
	if err != nil {
		return nil, err
	}
	srv, err := b.startServer(ctx, "wagi")
	if err != nil {
		return nil, err
	}
	defer srv.Close(context.Background())
	if err := deployExample(ctx, srv, "wagi", ex); err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/wagi/{rest...}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "hello, %s\n", "world")
		fmt.Fprintf(w, "method: %s\npath: %s\nquery: %s\n", r.Method, r.URL.Path, r.URL.RawQuery)
	})
	rawHTTP, err := startRawServer(mux)
	if err != nil {
		return nil, err
	}
	defer rawHTTP.close()

	raw, err := newRawWazero(ctx, b.opts.baselineTermination, ex.wasm, ex.fn.Name, ex.fn.Env, "_start")
	if err != nil {
		return nil, err
	}
	defer raw.close(context.Background())
	const path, query = "/wagi/bench", "q=1"
	cgi := [][2]string{
		{"GATEWAY_INTERFACE", "CGI/1.1"}, {"SERVER_SOFTWARE", "bench"}, {"SERVER_PROTOCOL", "HTTP/1.1"},
		{"SERVER_NAME", "127.0.0.1"}, {"SERVER_PORT", "80"}, {"REQUEST_METHOD", "GET"}, {"SCRIPT_NAME", ""},
		{"PATH_INFO", path}, {"PATH_TRANSLATED", path}, {"QUERY_STRING", query}, {"REQUEST_URI", path + "?" + query},
		{"CONTENT_TYPE", ""}, {"CONTENT_LENGTH", "0"}, {"REMOTE_ADDR", "127.0.0.1"}, {"REMOTE_HOST", "127.0.0.1"},
		{"REMOTE_PORT", "40000"}, {"X_MATCHED_ROUTE", "/wagi/{rest...}"}, {"X_FULL_URL", "http://127.0.0.1" + path + "?" + query},
		{"X_RAW_PATH_INFO", path}, {"X_INVOCATION_ID", "bench"}, {"TRACEPARENT", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
		{"HTTP_USER_AGENT", "Go-http-client/1.1"}, {"HTTP_ACCEPT_ENCODING", "gzip"}, {"X_PARAM_REST", "bench"},
	}
	rawRun := func(ctx context.Context) (time.Duration, error) {
		var stdout bytes.Buffer
		cfg := raw.cfg.WithStdin(bytes.NewReader(nil)).WithStdout(&stdout)
		for _, kv := range cgi {
			cfg = cfg.WithEnv(kv[0], kv[1])
		}
		m, err := raw.rt.InstantiateModule(ctx, raw.compiled, cfg)
		if m != nil {
			m.Close(ctx)
		}
		if err != nil {
			return 0, err
		}
		if !bytes.HasPrefix(stdout.Bytes(), []byte("Content-Type:")) {
			return 0, fmt.Errorf("raw wazero: unexpected CGI output %q", stdout.Bytes())
		}
		return 0, nil
	}

	nimbusURL := srv.GatewayURL() + path + "?" + query
	rawURL := rawHTTP.url + path + "?" + query
	clients := map[string]*http.Client{"nimbus": loadClient(wagiWorkers), "net/http": loadClient(wagiWorkers)}
	for _, c := range clients {
		defer c.CloseIdleConnections()
	}
	ops := map[string]func(context.Context, int, time.Duration) (loadResult, error){
		"nimbus": func(ctx context.Context, workers int, d time.Duration) (loadResult, error) {
			return drive(ctx, clients["nimbus"], nimbusURL, workers, d)
		},
		"net/http": func(ctx context.Context, workers int, d time.Duration) (loadResult, error) {
			return drive(ctx, clients["net/http"], rawURL, workers, d)
		},
		"wazero": func(ctx context.Context, workers int, d time.Duration) (loadResult, error) {
			return measure(ctx, workers, d, maxRequests, rawRun)
		},
	}
	sides := []string{"nimbus", "net/http", "wazero"}
	for _, side := range sides {
		if _, err := ops[side](ctx, wagiWorkers, min(b.opts.duration/4, 500*time.Millisecond)); err != nil {
			return nil, fmt.Errorf("warm up %s: %w", side, err)
		}
	}
	rps := map[string][]float64{}
	p50 := map[string][]float64{}
	p99 := map[string][]float64{}
	// One worker: the latency of a request alone, which 8 workers on 2
	// CPUs multiply by their queueing.
	p50one := map[string][]float64{}
	p99one := map[string][]float64{}
	for i := range b.opts.runs {
		for j := range sides {
			side := sides[(i+j)%len(sides)]
			res, err := ops[side](ctx, wagiWorkers, b.opts.duration)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", side, err)
			}
			rps[side] = append(rps[side], res.RPS())
			p50[side] = append(p50[side], ms(res.P50))
			p99[side] = append(p99[side], ms(res.P99))
			one, err := ops[side](ctx, 1, b.opts.duration/2)
			if err != nil {
				return nil, fmt.Errorf("%s, 1 worker: %w", side, err)
			}
			p50one[side] = append(p50one[side], ms(one.P50))
			p99one[side] = append(p99one[side], ms(one.P99))
			if b.opts.verbose {
				progress("   run %d %-8s %8.0f req/s p50 %.3fms p99 %.3fms; 1 worker p50 %.3fms", i+1, side, res.RPS(), ms(res.P50), ms(res.P99), ms(one.P50))
			}
		}
	}
	one := newRow("wagi", "p50, 1 worker", "ms", p50one["nimbus"], "wazero", p50one["wazero"])
	rows := []row{
		one.goal("<= 2 ms", one.Nimbus <= 2),
		newRow("wagi", "p99, 1 worker", "ms", p99one["nimbus"], "wazero", p99one["wazero"]),
		newRow("wagi", "p50, 1 worker", "ms", p50one["nimbus"], "net/http", p50one["net/http"]),
	}
	for _, base := range []string{"net/http", "wazero"} {
		rows = append(rows,
			newRow("wagi", fmt.Sprintf("req/s, %d workers", wagiWorkers), "req/s", rps["nimbus"], base, rps[base]),
			newRow("wagi", fmt.Sprintf("p50, %d workers", wagiWorkers), "ms", p50["nimbus"], base, p50[base]),
			newRow("wagi", fmt.Sprintf("p99, %d workers", wagiWorkers), "ms", p99["nimbus"], base, p99[base]),
		)
	}
	return rows, nil
}
