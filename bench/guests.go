package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/nimbus-dev/nimbus/internal/guesttest"
	"github.com/nimbus-dev/nimbus/internal/manifest"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime/wasm/wasmbin"
	"github.com/nimbus-dev/nimbus/internal/server"
	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

const modulePath = "github.com/nimbus-dev/nimbus"

// moduleRoot finds the Nimbus module's directory from the working directory
// up, so `go run ./bench` works from anywhere inside the repository.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(bytes.TrimSpace(b), []byte("module "+modulePath+"\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run the benchmarks from inside the Nimbus repository (no go.mod of " + modulePath + " found above the working directory)")
		}
		dir = parent
	}
}

// machine describes where the figures come from.
func machine() string {
	model := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	s := fmt.Sprintf("%d CPUs (GOMAXPROCS %d), %s/%s, %s", runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH, runtime.Version())
	if model != "" {
		s += ", " + model
	}
	return s
}

// example is a function of one of the example apps, built with the local
// toolchain, with the configuration its nimbus.yaml gives it.
type example struct {
	wasm []byte
	fn   model.Function
}

// loadExample builds examples/<app>'s function and resolves its manifest.
// The module is built into a temporary directory (not into examples/).
func (b *bench) loadExample(app, function string, mode guesttest.Mode) (*example, error) {
	dir := filepath.Join(b.root, "examples", app)
	m, err := manifest.Load(dir)
	if err != nil {
		return nil, err
	}
	f := m.Function(function)
	if f == nil {
		return nil, fmt.Errorf("examples/%s has no function %s", app, function)
	}
	if f.Build == nil {
		return nil, fmt.Errorf("examples/%s: function %s has no build step", app, function)
	}
	progress("   building examples/%s (%s)", app, map[guesttest.Mode]string{guesttest.Reactor: "reactor", guesttest.Command: "command"}[mode])
	// Build.Dir is the manifest's build.dir, made absolute.
	wasm, err := guesttest.Build(f.Build.Dir, mode)
	if err != nil {
		return nil, err
	}
	return &example{wasm: wasm, fn: f.Registry(sha(wasm))}, nil
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// startServer starts a whole node in process, on 127.0.0.1 port 0, with its
// data in a fresh directory under the bench's temp dir.
// opts change the node's configuration before it starts.
func (b *bench) startServer(ctx context.Context, name string, opts ...func(*server.Config)) (*server.Server, error) {
	dir, err := os.MkdirTemp(b.tmp, name+"-")
	if err != nil {
		return nil, err
	}
	cfg := server.Config{
		DataDir:   dir,
		Listen:    "127.0.0.1:0",
		APIListen: "127.0.0.1:0",
		Version:   "bench",
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	for _, o := range opts {
		o(&cfg)
	}
	return server.Start(ctx, cfg)
}

// deployExample uploads the example's module and deploys it as app.
func deployExample(ctx context.Context, srv *server.Server, app string, ex *example) error {
	if _, err := srv.PutArtifact(ctx, ex.wasm); err != nil {
		return err
	}
	if _, _, err := srv.Deploy(ctx, app, model.Spec{Functions: []model.Function{ex.fn}}); err != nil {
		return fmt.Errorf("deploy %s: %w", app, err)
	}
	return nil
}

// Minimal SDK guest, hand-encoded: no imports, one page of memory,
// nimbus_alloc returns a fixed buffer and nimbus_handle returns a response
// encoded ahead of time in a data segment. It is the smallest module the
// runtime accepts as an SDK guest, so its cold start is the runtime's own
// cost.
const (
	minimalReqAt  = 1024
	minimalRespAt = 8192
)

// minimalSDK returns the minimal guest; variant changes a data segment only,
// so each variant is a distinct module (a distinct sha256) of the same shape.
func minimalSDK(variant uint32) []byte {
	tVoid := wasmbin.FuncType{}
	tAlloc := wasmbin.FuncType{Params: []byte{wasmbin.I32}, Results: []byte{wasmbin.I32}}
	tHandle := wasmbin.FuncType{Params: []byte{wasmbin.I32, wasmbin.I32}, Results: []byte{wasmbin.I64}}
	resp := wire.EncodeResponse(nil, &wire.Response{Status: 200, Header: map[string][]string{"Content-Type": {"text/plain"}}, Body: []byte("hello, bench\n")})
	m := &wasmbin.Module{
		Types: []wasmbin.FuncType{tVoid, tAlloc, tHandle},
		Funcs: []wasmbin.Func{
			{Type: 0},
			{Type: 1, Body: wasmbin.I32Const(minimalReqAt)},
			{Type: 2, Body: wasmbin.I64Const(int64(minimalRespAt)<<32 | int64(len(resp)))},
		},
		MemoryPages: 1,
		Exports: []wasmbin.Export{
			{Name: "memory", Kind: wasmbin.KindMemory},
			{Name: wire.ExportMarker, Kind: wasmbin.KindFunc, Index: 0},
			{Name: wire.ExportAlloc, Kind: wasmbin.KindFunc, Index: 1},
			{Name: wire.ExportHandle, Kind: wasmbin.KindFunc, Index: 2},
		},
		Data: []wasmbin.Data{
			{Offset: minimalRespAt, Bytes: resp},
			{Offset: 60000, Bytes: binary.LittleEndian.AppendUint32(nil, variant)},
		},
	}
	return m.Encode()
}

// serverWithGuest builds the guest in guestDir (relative to the module
// root) as a reactor, starts a node named name and uploads the module. The
// caller deploys it and closes the node.
func (b *bench) serverWithGuest(ctx context.Context, name, guestDir string, opts ...func(*server.Config)) (*server.Server, []byte, error) {
	progress("   building %s (reactor)", guestDir)
	wasm, err := guesttest.Build(b.root+"/"+guestDir, guesttest.Reactor)
	if err != nil {
		return nil, nil, err
	}
	srv, err := b.startServer(ctx, name, opts...)
	if err != nil {
		return nil, nil, err
	}
	if _, err := srv.PutArtifact(ctx, wasm); err != nil {
		srv.Close(context.Background())
		return nil, nil, err
	}
	return srv, wasm, nil
}

// benchFunction is the function "f" of the scenarios' apps, running wasm.
func benchFunction(wasm []byte) model.Function {
	return model.Function{Name: "f", Runtime: "wasm", Module: sha(wasm), MemoryBytes: 64 << 20, TimeoutMS: 5000,
		Concurrency: 1, MaxInstances: 8, MaxRequestBytes: 1 << 20, MaxResponseBytes: 1 << 20}
}

// topicTrigger subscribes a function to topic with the default retries.
func topicTrigger(topic string) model.Trigger {
	return model.Trigger{Name: "t", Kind: model.TriggerTopic, Topic: topic, MaxAttempts: 5,
		BackoffMS: 1000, MaxBackoffMS: 300_000, DeadLetter: model.DeadLetterTopic}
}

// benchTopics are the topics of the scenarios' apps: the dead-letter topic
// and the named ones.
func benchTopics(names ...string) []model.Topic {
	out := []model.Topic{{Name: model.DeadLetterTopic, MaxEventBytes: 1 << 20, RetentionMS: 3_600_000}}
	for _, n := range names {
		out = append(out, model.Topic{Name: n, MaxEventBytes: 1 << 16, RetentionMS: 3_600_000})
	}
	return out
}
