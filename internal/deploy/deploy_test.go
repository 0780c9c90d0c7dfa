package deploy_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/client"
	"github.com/nimbus-dev/nimbus/internal/deploy"
	"github.com/nimbus-dev/nimbus/internal/guesttest"
	"github.com/nimbus-dev/nimbus/internal/manifest"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime/wasm/wasmbin"
	"github.com/nimbus-dev/nimbus/internal/server"
)

// start runs a real server in a temp dir, listening on loopback ports the
// kernel picks.
func start(t *testing.T) *server.Server {
	t.Helper()
	srv, err := server.Start(context.Background(), server.Config{
		DataDir:   t.TempDir(),
		CacheDir:  guesttest.WazeroCacheDir(),
		Listen:    "127.0.0.1:0",
		APIListen: "127.0.0.1:0",
		Version:   "test",
		Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Cleanup(func() { srv.Close(context.Background()) })
	return srv
}

// wagiGuest is a real WAGI command, encoded by hand so that compiling it
// costs nothing: _start writes a CGI answer whose body is body to stdout
// with fd_write.
func wagiGuest(body string) []byte {
	out := "Content-Type: text/plain\n\n" + body
	const iovec, nwritten, data = 0, 8, 16
	iov := binary.LittleEndian.AppendUint32(nil, data)
	iov = binary.LittleEndian.AppendUint32(iov, uint32(len(out)))
	i32 := wasmbin.I32
	m := &wasmbin.Module{
		Types: []wasmbin.FuncType{
			{Params: []byte{i32, i32, i32, i32}, Results: []byte{i32}},
			{},
		},
		Imports: []wasmbin.Import{{Module: "wasi_snapshot_preview1", Name: "fd_write", Type: 0}},
		Funcs: []wasmbin.Func{{Type: 1, Body: wasmbin.Concat(
			wasmbin.I32Const(1), wasmbin.I32Const(iovec), wasmbin.I32Const(1), wasmbin.I32Const(nwritten),
			wasmbin.Call(0), wasmbin.Drop(),
		)}},
		MemoryPages: 1,
		Exports: []wasmbin.Export{
			{Name: "memory", Kind: wasmbin.KindMemory},
			{Name: "_start", Kind: wasmbin.KindFunc, Index: 1},
		},
		Data: []wasmbin.Data{{Offset: iovec, Bytes: iov}, {Offset: data, Bytes: []byte(out)}},
	}
	return m.Encode()
}

// writeApp writes an app directory: a prebuilt module answering body (so
// the deploy's build step only reads it) and a manifest for it with env
// GREETING=greeting (a change of configuration only).
func writeApp(t *testing.T, body, greeting string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hello.wasm"), wagiGuest(body), 0o644); err != nil {
		t.Fatal(err)
	}
	yaml := fmt.Sprintf(`app: hello
functions:
  hello:
    module: hello.wasm
    env:
      GREETING: %s
    routes:
      - GET /hello
`, greeting)
	if err := os.WriteFile(filepath.Join(dir, "nimbus.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// steps records the progress of a deploy as "step function: message".
type steps []string

func (s *steps) record(e deploy.Event) {
	*s = append(*s, e.Step+" "+e.Function+": "+e.Message)
}

func (s steps) has(t *testing.T, prefix, contains string) {
	t.Helper()
	for _, l := range s {
		if strings.HasPrefix(l, prefix) && strings.Contains(l, contains) {
			return
		}
	}
	t.Errorf("no progress line %q...%q in:\n%s", prefix, contains, strings.Join(s, "\n"))
}

// get fetches the gateway's path and returns the body.
func get(t *testing.T, srv *server.Server, path string) string {
	t.Helper()
	resp, err := http.Get(srv.GatewayURL() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", path, resp.Status, b)
	}
	return string(b)
}

// TestRunLocal deploys into an in-process server (what `nimbus up` does):
// the first run uploads the module and activates a revision that serves;
// the same app again uploads nothing and changes nothing.
func TestRunLocal(t *testing.T) {
	ctx := context.Background()
	srv := start(t)
	dir := writeApp(t, "hi", "hi")
	target := deploy.Local{S: srv}

	var first steps
	res, err := deploy.Run(ctx, target, dir, first.record)
	if err != nil {
		t.Fatal(err)
	}
	if res.App != "hello" || !res.Changed || res.Uploaded != 1 || res.Revision == nil {
		t.Fatalf("first deploy = %+v", res)
	}
	first.has(t, "validate", "app hello, 1 function(s)")
	first.has(t, "upload hello", "uploading module")
	first.has(t, "activate", "activating revision")
	if got := get(t, srv, "/hello"); got != "hi" {
		t.Fatalf("served %q", got)
	}

	var again steps
	res2, err := deploy.Run(ctx, target, filepath.Join(dir, "nimbus.yaml"), again.record)
	if err != nil {
		t.Fatal(err)
	}
	if res2.Changed || res2.Uploaded != 0 || res2.Revision.ID != res.Revision.ID {
		t.Fatalf("unchanged deploy = %+v (first revision %s)", res2, res.Revision.ID)
	}
	again.has(t, "upload hello", "already on the server")
}

// TestRunAPI deploys through the control plane API with a client, as the
// CLI does: a change of configuration makes a new revision without
// uploading the module again, a new module is uploaded and served, and a
// token without the deploy scope is refused.
func TestRunAPI(t *testing.T) {
	ctx := context.Background()
	srv := start(t)
	admin := deploy.API{C: client.New(srv.APIURL(), srv.AdminToken())}

	first, err := deploy.Run(ctx, admin, writeApp(t, "hi", "hi"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !first.Changed || first.Uploaded != 1 {
		t.Fatalf("first deploy = %+v", first)
	}

	second, err := deploy.Run(ctx, admin, writeApp(t, "hi", "howdy"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !second.Changed || second.Uploaded != 0 || second.Revision.ID == first.Revision.ID {
		t.Fatalf("config-only deploy = %+v (first revision %s)", second, first.Revision.ID)
	}

	third, err := deploy.Run(ctx, admin, writeApp(t, "howdy", "howdy"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !third.Changed || third.Uploaded != 1 {
		t.Fatalf("new module deploy = %+v", third)
	}
	if got := get(t, srv, "/hello"); got != "howdy" {
		t.Fatalf("served %q", got)
	}

	reader, err := srv.Tokens().Create(ctx, "reader", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = deploy.Run(ctx, deploy.API{C: client.New(srv.APIURL(), reader)}, writeApp(t, "nope", "nope"), nil)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != http.StatusForbidden {
		t.Fatalf("deploy with a read-only token = %v", err)
	}
}

// TestRunInvalidManifest: a manifest error stops the deploy before anything
// reaches the server.
func TestRunInvalidManifest(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "nimbus.yaml"), []byte("app: hello\nfunctions:\n  hello:\n    runtime: cobol\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var events steps
	_, err := deploy.Run(context.Background(), refuse{t}, dir, events.record)
	if err == nil {
		t.Fatal("deploy of an invalid manifest succeeded")
	}
	var merr manifest.Errors
	if !errors.As(err, &merr) {
		t.Fatalf("err = %v (%T), want manifest.Errors", err, err)
	}
	if len(events) != 0 {
		t.Fatalf("progress before validation passed: %v", events)
	}
}

// refuse is a Target for deploys that must stop before reaching a server:
// any call fails the test.
type refuse struct{ t *testing.T }

func (r refuse) HasArtifact(context.Context, string) (bool, error) {
	r.t.Error("HasArtifact called")
	return false, errors.New("refused")
}

func (r refuse) PutArtifact(context.Context, string, []byte) error {
	r.t.Error("PutArtifact called")
	return errors.New("refused")
}

func (r refuse) Deploy(context.Context, string, model.Spec) (*model.Revision, bool, error) {
	r.t.Error("Deploy called")
	return nil, false, errors.New("refused")
}
