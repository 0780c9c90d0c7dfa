package process

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/capability"
	"github.com/nimbus-dev/nimbus/internal/capability/captest"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/security"
	"github.com/nimbus-dev/nimbus/internal/state"
)

// TestPlatformAPI: a process reaches KV and publish through its platform
// API with its token, within its grants: another bucket or topic is 403,
// a wrong token 401, and the denial names the grant in the invocation's
// log.
func TestPlatformAPI(t *testing.T) {
	st, evlog := captest.OpenLog(t)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	buckets := state.NewBuckets(st.JetStream(), quiet)
	for _, b := range []string{"counts", "orders"} {
		if err := buckets.Ensure(context.Background(), state.BucketConfig{App: "app", Name: b}); err != nil {
			t.Fatal(err)
		}
	}
	services := capability.New(capability.Config{Logger: quiet, KV: buckets,
		Publisher: &captest.Publisher{Log: evlog, Topics: []string{"events", "other"}}})
	modes(t, func(t *testing.T, sandbox bool) {
		rt, err := New(Config{Dir: filepath.Join(t.TempDir(), "process"), MaxProcs: 64, Services: services, StopGrace: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rt.Close(context.Background()) })
		inst := start(t, load(t, rt, spec(t, sandbox, func(s *runtime.Spec) {
			s.Capabilities = []string{"kv:counts", "publish:events"}
		})))
		call := func(method, path, body string, extra ...string) string {
			t.Helper()
			q := url.Values{"method": {method}, "path": {path}, "body": {body}}
			if len(extra) == 2 {
				q.Set(extra[0], extra[1])
			}
			return mustGet(t, inst, "/api?"+q.Encode())
		}
		if got := call("PUT", "/kv/counts/a/b", "1"); !strings.HasPrefix(got, `200 {"revision":`) {
			t.Fatalf("put: %s", got)
		}
		if got := call("GET", "/kv/counts/a/b", ""); got != "200 1" {
			t.Fatalf("get: %s", got)
		}
		if got := call("GET", "/kv/counts?prefix=a/", ""); got != `200 {"keys":["a/b"],"more":false}` {
			t.Fatalf("list: %s", got)
		}
		if got := call("PUT", "/kv/counts/a/b?if_revision=999", "2"); !strings.HasPrefix(got, `409 {"error":"revision_mismatch"`) {
			t.Fatalf("compare-and-swap: %s", got)
		}
		if got := call("DELETE", "/kv/counts/a/b", ""); got != "204 " {
			t.Fatalf("delete: %s", got)
		}
		if got := call("GET", "/kv/counts/a/b", ""); !strings.HasPrefix(got, `404 {"error":"not_found"`) {
			t.Fatalf("get after delete: %s", got)
		}
		if got := call("POST", "/publish/events", `{"specversion":"1.0","id":"e-`+t.Name()+`","type":"t","data":{"n":1}}`); got != `202 {"duplicate":false}` {
			t.Fatalf("publish: %s", got)
		}

		// Not granted: 403 naming the grant, and a warning in the
		// invocation's log.
		s := &sink{}
		q := url.Values{"method": {"GET"}, "path": {"/kv/orders/x"}}
		resp, err := inst.Handle(context.Background(), &runtime.Request{Method: "GET", Path: "/api", RawQuery: q.Encode(), InvocationID: "inv-denied", Log: s})
		if err != nil {
			t.Fatal(err)
		}
		if got := string(resp.Body); !strings.HasPrefix(got, `403 {"error":"denied"`) || !strings.Contains(got, `capabilities: [kv:orders:read]`) {
			t.Fatalf("kv:orders: %s", got)
		}
		if !s.hasPrefix(`log: nimbus.kv_get denied: capability "kv:orders:read"`) {
			t.Errorf("no denial in the invocation's log: %v", s.lines)
		}
		if got := call("PUT", "/kv/orders/x", "1"); !strings.HasPrefix(got, "403 ") || !strings.Contains(got, "[kv:orders]") {
			t.Fatalf("put kv:orders: %s", got)
		}
		if got := call("POST", "/publish/other", `{"specversion":"1.0","id":"e2","type":"t"}`); !strings.HasPrefix(got, "403 ") {
			t.Fatalf("publish:other: %s", got)
		}
		if got := call("GET", "/kv/counts/a", "", "token", "wrong"); !strings.HasPrefix(got, `401 {"error":"unauthorized"`) {
			t.Fatalf("wrong token: %s", got)
		}
		// A request head well over 64KiB: 431, as at the gateway.
		if got := call("GET", "/kv/counts/a", "", "pad", "100000"); !strings.HasPrefix(got, "431 ") {
			t.Fatalf("large head: %s", got)
		}
		if got := call("GET", "/kv/counts/a", "", "pad", "60000"); !strings.HasPrefix(got, "404 ") {
			t.Fatalf("head under the limit: %s", got)
		}
	})
}

// TestPlatformAPISecretRotation: a running process reads a granted secret
// through GET /secret/{name} and sees a new value set after it started,
// while its environment variable keeps the value it started with; an
// ungranted secret is 403 naming the grant, an unset one 404.
func TestPlatformAPISecretRotation(t *testing.T) {
	ctx := context.Background()
	st, _ := captest.OpenLog(t)
	secrets := security.NewSecrets(st.Security(), security.NewMasterKeys(security.MasterKeyConfig{File: filepath.Join(t.TempDir(), "master.key")}))
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	services := capability.New(capability.Config{Logger: quiet, Secrets: secrets})
	modes(t, func(t *testing.T, sandbox bool) {
		v1, v2 := "v1-"+t.Name(), "v2-"+t.Name()
		if _, err := secrets.Set(ctx, "app", "API_KEY", []byte(v1)); err != nil {
			t.Fatal(err)
		}
		rt, err := New(Config{Dir: filepath.Join(t.TempDir(), "process"), MaxProcs: 64, Services: services, StopGrace: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rt.Close(context.Background()) })
		inst := start(t, load(t, rt, spec(t, sandbox, func(s *runtime.Spec) {
			s.Capabilities = []string{"secret:API_KEY", "secret:UNSET"}
		})))
		get := func(path string) string {
			t.Helper()
			return mustGet(t, inst, "/api?"+url.Values{"method": {"GET"}, "path": {path}}.Encode())
		}
		if got := get("/secret/API_KEY"); got != "200 "+v1 {
			t.Fatalf("secret: %q", got)
		}
		if _, err := secrets.Set(ctx, "app", "API_KEY", []byte(v2)); err != nil {
			t.Fatal(err)
		}
		if got := get("/secret/API_KEY"); got != "200 "+v2 {
			t.Fatalf("secret after rotation: %q, want the new value without a restart", got)
		}
		var env []string
		if err := json.Unmarshal([]byte(mustGet(t, inst, "/env")), &env); err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(env, "API_KEY="+v1) {
			t.Errorf("the environment should keep the value the process started with: %v", env)
		}
		if got := get("/secret/OTHER"); !strings.HasPrefix(got, `403 {"error":"denied"`) || !strings.Contains(got, "secret:OTHER") {
			t.Errorf("ungranted secret: %q", got)
		}
		if got := get("/secret/UNSET"); !strings.HasPrefix(got, `404 {"error":"not_found"`) || !strings.Contains(got, "nimbus secret set app UNSET") {
			t.Errorf("unset secret: %q", got)
		}
	})
}
