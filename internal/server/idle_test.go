package server_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/guesttest"
	"github.com/nimbus-dev/nimbus/internal/server"
)

// TestIdleFunctionReloadsFromTheStore: with a budget of one idle wasm
// module, deploying a second app releases the first one's compiled code;
// concurrent first requests to it reload it once from the node's artifact
// store and are all served.
func TestIdleFunctionReloadsFromTheStore(t *testing.T) {
	t.Parallel()
	hello := guesttest.MustBuild(t, helloDir, guesttest.Reactor)
	wagi := guesttest.MustBuild(t, wagiDir, guesttest.Command)
	var logs lockedBuffer
	srv, err := server.Start(context.Background(), server.Config{
		DataDir: t.TempDir(), CacheDir: cacheDir,
		Listen: "127.0.0.1:0", APIListen: "127.0.0.1:0", Version: "test",
		Logger:          slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		WasmIdleModules: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close(context.Background()) })

	f := fn("hello", hello, "GET /hello/{name}")
	f.Env = map[string]string{"GREETING": "hi"}
	deploy(t, srv, "hello", [][]byte{hello}, f)
	deploy(t, srv, "wagi", [][]byte{wagi}, fn("wagi", wagi, "GET /wagi"))
	reloaded := "msg=\"compiled code reloaded\" artifact=" + sha(hello)[:16]
	if strings.Contains(logs.String(), reloaded) {
		t.Fatal("reloaded before any request")
	}

	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			status, body, _ := get(t, fmt.Sprintf("%s/hello/u%d", srv.GatewayURL(), i))
			if want := fmt.Sprintf("hi, u%d\n", i); status != 200 || body != want {
				errs <- fmt.Errorf("GET /hello/u%d: %d %q, want 200 %q", i, status, body, want)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := strings.Count(logs.String(), reloaded); got != 1 {
		t.Fatalf("%d reloads of the hello module for %d concurrent first requests, want 1; logs:\n%s", got, n, logs.String())
	}
}
