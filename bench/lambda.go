package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/nimbus-dev/nimbus/internal/deploy"
	"github.com/nimbus-dev/nimbus/internal/runtime/process"
)

// runLambda: examples/lambda-go (an unmodified aws-lambda-go function)
// deployed on a whole in-process node, sandboxed, warm, GET /lambda/bench
// through the gateway with one worker (a Lambda instance takes one
// invocation at a time), vs the same binary driven directly by a minimal
// Runtime API (what the AWS Runtime Interface Emulator does): the bench
// hands the same API Gateway event to the binary's /next and waits for its
// /response. The baseline is the cost of the Lambda loop itself (two
// loopback HTTP exchanges and the handler); the difference is the
// gateway, scheduler, event mapping and the sandbox's network namespace.
func runLambda(ctx context.Context, b *bench) ([]row, error) {
	if !process.Probe().Sandbox() {
		return nil, errors.New("this host cannot sandbox processes (see process.Probe); the scenario measures the sandbox")
	}
	dir := filepath.Join(b.root, "examples", "lambda-go")
	bin := filepath.Join(b.tmp, "lambda-go")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	build.Dir = dir
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build lambda-go: %w\n%s", err, out)
	}

	srv, err := b.startServer(ctx, "lambda")
	if err != nil {
		return nil, err
	}
	defer srv.Close(context.Background())
	if _, err := deploy.Run(ctx, deploy.Local{S: srv}, dir, nil); err != nil {
		return nil, err
	}
	rie, err := startRuntimeAPI(bin)
	if err != nil {
		return nil, err
	}
	defer rie.close()

	client := loadClient(1)
	defer client.CloseIdleConnections()
	url := srv.GatewayURL() + "/lambda/bench"
	if _, err := drive(ctx, client, url, 1, min(b.opts.duration/4, 500*time.Millisecond)); err != nil {
		return nil, fmt.Errorf("warm up: %w", err)
	}
	if _, err := measure(ctx, 1, min(b.opts.duration/4, 500*time.Millisecond), maxRequests, rie.invoke); err != nil {
		return nil, fmt.Errorf("warm up the direct loop: %w", err)
	}
	var rps, p50, rawRPS, rawP50 []float64
	for i := range b.opts.runs {
		sides := []func() error{
			func() error {
				res, err := drive(ctx, client, url, 1, b.opts.duration)
				if err == nil {
					rps, p50 = append(rps, res.RPS()), append(p50, us(res.P50))
				}
				return err
			},
			func() error {
				res, err := measure(ctx, 1, b.opts.duration, maxRequests, rie.invoke)
				if err == nil {
					rawRPS, rawP50 = append(rawRPS, res.RPS()), append(rawP50, us(res.P50))
				}
				return err
			},
		}
		if i%2 == 1 {
			sides[0], sides[1] = sides[1], sides[0]
		}
		for _, side := range sides {
			if err := side(); err != nil {
				return nil, err
			}
		}
	}
	const base = "same binary, direct Runtime API loop"
	return []row{
		newRow("lambda", "warm invocations/s, 1 worker (one instance)", "req/s", rps, base, rawRPS),
		newRow("lambda", "warm p50, 1 worker", "µs", p50, base, rawP50),
	}, nil
}

// runtimeAPI is a minimal Lambda Runtime API serving one process on the
// host: invoke hands it one event and waits for its response.
type runtimeAPI struct {
	ln      net.Listener
	srv     *http.Server
	cmd     *exec.Cmd
	events  chan []byte
	answers chan []byte
	event   []byte
}

func startRuntimeAPI(bin string) (*runtimeAPI, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	event, _ := json.Marshal(map[string]any{
		"version": "2.0", "routeKey": "GET /lambda/{name}", "rawPath": "/lambda/bench", "rawQueryString": "",
		"headers": map[string]string{"host": "127.0.0.1", "user-agent": "Go-http-client/1.1"}, "pathParameters": map[string]string{"name": "bench"},
		"requestContext": map[string]any{"http": map[string]string{"method": "GET", "path": "/lambda/bench", "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1"},
			"requestId": "bench", "routeKey": "GET /lambda/{name}", "stage": "$default"},
		"isBase64Encoded": false,
	})
	r := &runtimeAPI{ln: ln, events: make(chan []byte), answers: make(chan []byte), event: event}
	var seq int
	mux := http.NewServeMux()
	mux.HandleFunc("GET /2018-06-01/runtime/invocation/next", func(w http.ResponseWriter, req *http.Request) {
		select {
		case ev := <-r.events:
			seq++
			w.Header().Set("Lambda-Runtime-Aws-Request-Id", strconv.Itoa(seq))
			w.Header().Set("Lambda-Runtime-Deadline-Ms", strconv.FormatInt(time.Now().Add(10*time.Second).UnixMilli(), 10))
			w.Header().Set("Lambda-Runtime-Invoked-Function-Arn", process.LambdaFunctionARN("bench", "api"))
			w.Write(ev)
		case <-req.Context().Done():
		}
	})
	mux.HandleFunc("POST /2018-06-01/runtime/invocation/{id}/response", func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		w.WriteHeader(http.StatusAccepted)
		r.answers <- body
	})
	r.srv = &http.Server{Handler: mux}
	go r.srv.Serve(ln)
	r.cmd = exec.Command(bin)
	r.cmd.Env = []string{"AWS_LAMBDA_RUNTIME_API=" + ln.Addr().String(), "_HANDLER=api", "GREETING=bench",
		"AWS_LAMBDA_FUNCTION_NAME=bench-api", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=64"}
	if err := r.cmd.Start(); err != nil {
		r.srv.Close()
		return nil, err
	}
	return r, nil
}

func (r *runtimeAPI) invoke(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	select {
	case r.events <- r.event:
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	select {
	case ans := <-r.answers:
		var resp struct{ StatusCode int }
		if err := json.Unmarshal(ans, &resp); err != nil || resp.StatusCode != 200 {
			return 0, fmt.Errorf("direct invocation answered %s", ans)
		}
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	return time.Since(start), nil
}

func (r *runtimeAPI) close() {
	r.cmd.Process.Kill()
	r.cmd.Wait()
	r.srv.Close()
}
