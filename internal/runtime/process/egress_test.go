package process

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/capability"
	"github.com/nimbus-dev/nimbus/internal/capability/captest"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/security"
)

// lockedBuffer is a log destination safe for concurrent writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestProcessEgressAndSecrets: a sandboxed process reaches the network only
// through its egress proxy, which exists only with an http grant and lets
// through only granted hosts, over the network guard of nimbus.Fetch; a
// granted secret is an environment variable, only when granted, and
// never in the node's log.
func TestProcessEgressAndSecrets(t *testing.T) {
	sandboxed(t)
	t.Parallel()
	ctx := context.Background()
	echo := captest.Echo(t, "127.0.0.1")
	other := captest.Echo(t, "127.0.0.1")
	tlsSrv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("tls ok")) }))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tlsSrv.Listener = ln
	tlsSrv.StartTLS()
	t.Cleanup(tlsSrv.Close)
	tlsPort := ln.Addr().(*net.TCPAddr).Port
	dns := captest.NewDNS(t, map[string]func(int) []netip.Addr{
		"echo.test": captest.Fixed("127.0.0.1"), "other.test": captest.Fixed("127.0.0.1"),
		"tls.test": captest.Fixed("127.0.0.1"), "internal.test": captest.Fixed("10.1.2.3"), "post.test": captest.Fixed("127.0.0.1"),
	})

	st, _ := captest.OpenLog(t)
	secrets := security.NewSecrets(st.Security(), security.NewMasterKeys(security.MasterKeyConfig{File: filepath.Join(t.TempDir(), "master.key")}))
	const value = "s3cr3t-VALUE-42"
	if _, err := secrets.Set(ctx, "app", "API_KEY", []byte(value)); err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	services := capability.New(capability.Config{Logger: logger, Secrets: secrets,
		Egress: capability.EgressConfig{AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, Resolver: dns.Resolver()}})
	rt, err := New(Config{Dir: filepath.Join(t.TempDir(), "process"), Logger: logger, Services: services, StopGrace: time.Second, MaxProcs: 64})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close(context.Background()) })

	env := func(inst runtime.Instance) []string {
		var env []string
		if err := json.Unmarshal([]byte(mustGet(t, inst, "/env")), &env); err != nil {
			t.Fatal(err)
		}
		return env
	}

	// Without grants: no proxy, no secret, no way out.
	bare := start(t, load(t, rt, spec(t, true)))
	if e := env(bare); slices.ContainsFunc(e, func(kv string) bool {
		return strings.HasPrefix(kv, "API_KEY=") || strings.HasPrefix(strings.ToUpper(kv), "HTTP_PROXY=")
	}) {
		t.Errorf("an ungranted process has a secret or a proxy: %v", e)
	}
	if got := mustGet(t, bare, "/fetch?url=http://echo.test:"+fmt.Sprint(echo.Port())+"/"); !strings.HasPrefix(got, "fetch failed") {
		t.Errorf("ungranted fetch: %s", got)
	}
	if got := mustGet(t, bare, "/dial?addr=10.1.2.3:80"); !strings.Contains(got, "network is unreachable") {
		t.Errorf("ungranted dial: %s", got)
	}

	// Granted: echo.test on its port (http), tls.test (https), internal.test
	// (whose address the guard refuses), the secret.
	granted := start(t, load(t, rt, spec(t, true, func(s *runtime.Spec) {
		s.Function = "granted"
		s.Capabilities = []string{fmt.Sprintf("http:echo.test:%d", echo.Port()), fmt.Sprintf("http:https://tls.test:%d", tlsPort),
			"http:internal.test", "http:https://internal.test", fmt.Sprintf("http:POST https://post.test:%d", tlsPort),
			"secret:API_KEY", "secret:MISSING"}
	})))
	e := env(granted)
	if !slices.Contains(e, "API_KEY="+value) || !slices.Contains(e, "HTTPS_PROXY=http://"+EgressProxyAddr) {
		t.Errorf("a granted process lacks its secret or its proxy: %v", e)
	}
	if slices.ContainsFunc(e, func(kv string) bool { return strings.HasPrefix(kv, "MISSING=") }) ||
		!strings.Contains(logs.String(), "secret=MISSING") {
		t.Errorf("a granted secret that is not set: env %v; the node's log should name it:\n%s", e, logs.String())
	}
	cases := []struct{ path, want string }{
		{fmt.Sprintf("/fetch?url=http://echo.test:%d/hello", echo.Port()), "200 "},
		{fmt.Sprintf("/fetch?url=https://tls.test:%d/&insecure=1", tlsPort), "200 tls ok"},
		{fmt.Sprintf("/fetch?url=http://other.test:%d/", other.Port()), "403 nimbus egress:"},  // not granted
		{"/fetch?url=http://internal.test/", "403 nimbus egress:"},                             // granted, but a private address
		{"/fetch?url=https://internal.test/", "fetch failed"},                                  // CONNECT refused by the guard
		{fmt.Sprintf("/fetch?url=https://other.test:%d/&insecure=1", tlsPort), "fetch failed"}, // CONNECT not granted
		{fmt.Sprintf("/dial?addr=127.0.0.1:%d", echo.Port()), "dial failed"},                   // its loopback is its own
		{"/dial?addr=10.1.2.3:80", "network is unreachable"},                                   // no route but the proxy
	}
	for _, c := range cases {
		if got := mustGet(t, granted, c.path); !strings.Contains(got, c.want) {
			t.Errorf("%s: %q, want %q", c.path, got, c.want)
		}
	}
	if got := mustGet(t, granted, fmt.Sprintf("/tunnels?n=%d&addr=tls.test:%d", maxTunnels+3, tlsPort)); got != fmt.Sprint(maxTunnels) {
		t.Errorf("tunnels opened at once: %s, want the cap of %d", got, maxTunnels)
	}
	if got := mustGet(t, granted, "/fetch?url=http://internal.test/"); !strings.Contains(got, "private (RFC 1918)") {
		t.Errorf("a blocked address's refusal should say why: %s", got)
	}
	rt.Close(context.Background())
	if strings.Contains(logs.String(), value) {
		t.Fatalf("the secret's value is in the node's log:\n%s", logs.String())
	}
}
