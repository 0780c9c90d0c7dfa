package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/audit"
	"github.com/nimbus-dev/nimbus/internal/capability/captest"
	"github.com/nimbus-dev/nimbus/internal/guestlog"
	"github.com/nimbus-dev/nimbus/internal/guesttest"
	"github.com/nimbus-dev/nimbus/internal/server"
)

// lockedBuffer collects the node's log.
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

// TestEgressWithSecretNeverLeaks: a wasm function reads a secret and sends
// it to an allowed loopback service; the secret is rotated without a
// redeploy; blocked, ungranted and missing cases fail with clear errors;
// and no log line (debug level: the outbound calls' spans included), guest
// log entry, audit entry, API or gateway answer (headers and bodies: logs,
// audit, metrics) of the whole run holds either value of the secret.
func TestEgressWithSecretNeverLeaks(t *testing.T) {
	t.Parallel()
	guest := guesttest.MustBuild(t, "testdata/egress", guesttest.Reactor)
	upstream := captest.Echo(t, "127.0.0.2")
	canary := captest.NewCanary(t, "127.0.0.1")
	logs := &lockedBuffer{}
	dir := t.TempDir()
	srv, err := server.Start(context.Background(), server.Config{
		DataDir: filepath.Join(dir, "data"), CacheDir: cacheDir, Listen: "127.0.0.1:0", APIListen: "127.0.0.1:0",
		Logger:           slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		EgressAllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")},
		MasterKeyFile:    filepath.Join(dir, "keys", "master.key"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close(context.Background()) })
	token := srv.AdminToken()

	var seen []string // every answer body of the run
	call := func(method, url, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, url, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		seen = append(seen, fmt.Sprint(resp.Header), string(b)) // headers too: traceparent, errors
		return resp.StatusCode, string(b)
	}
	secrets := []string{"sk_live_LEAKCANARY_v1_5d41402abc4b2a76", "sk_live_LEAKCANARY_v2_7d793037a0760186"}
	hash := func(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:8]) }

	if code, body := call("PUT", srv.APIURL()+"/api/v1/apps/shop/secrets/STRIPE_KEY", `{"value":"`+secrets[0]+`"}`); code != 200 || !strings.Contains(body, `"version": 1`) {
		t.Fatalf("set secret: %d %s", code, body)
	}
	up, cp := upstream.String(), canary.Addr.String()
	f := fn("pay", guest, "/pay", "/secret")
	f.Capabilities = []string{"log", "secret:STRIPE_KEY", "secret:MISSING", "http:POST http://" + up, "http:" + cp}
	deploy(t, srv, "shop", [][]byte{guest}, f)

	gw := srv.GatewayURL()
	if code, body := call("GET", gw+"/pay?to=http://"+up+"/charge", ""); code != 200 || body != "status=200 auth=true key="+hash(secrets[0]) {
		t.Fatalf("pay: %d %q", code, body)
	}
	// The caller's trace continues through the guest into its outbound
	// call: the call's span line has the trace id the client sent.
	req, _ := http.NewRequest("GET", gw+"/pay?to=http://"+up+"/charge", nil)
	req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("pay with a traceparent: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if l := lineOf(logs.String(), `msg="egress call" app=shop function=pay`, "trace_id=4bf92f3577b34da6a3ce929d0e0e4736"); !strings.Contains(l, "outcome=ok") {
		t.Errorf("no egress span in the client's trace in the node's log")
	}
	// Rotation without redeploy: the next invocation reads the new value.
	if code, body := call("PUT", srv.APIURL()+"/api/v1/apps/shop/secrets/STRIPE_KEY", `{"value":"`+secrets[1]+`"}`); code != 200 || !strings.Contains(body, `"version": 2`) {
		t.Fatalf("set secret again: %d %s", code, body)
	}
	if code, body := call("GET", gw+"/pay?to=http://"+up+"/charge", ""); code != 200 || body != "status=200 auth=true key="+hash(secrets[1]) {
		t.Fatalf("pay after rotation: %d %q", code, body)
	}
	for _, c := range []struct{ path, want string }{
		{"/pay?to=http://" + cp + "/", "destination blocked by the network guard"},
		{"/pay?to=http://" + up + "/x", ""}, // granted: POST to the upstream
		{"/pay?to=http://example.invalid/", "capability not granted"},
		{"/secret?name=MISSING", "secret not set"},
		{"/secret?name=OTHER", `capabilities: [secret:OTHER]`},
		{"/secret?name=bad-name", "bad argument"},
	} {
		code, body := call("GET", gw+c.path, "")
		if c.want == "" {
			if code != 200 {
				t.Errorf("%s: %d %q", c.path, code, body)
			}
			continue
		}
		if code != 502 || !strings.Contains(body, c.want) {
			t.Errorf("%s: %d %q, want 502 with %q", c.path, code, body, c.want)
		}
	}
	if code, body := call("GET", srv.APIURL()+"/api/v1/apps/shop/secrets", ""); code != 200 || !strings.Contains(body, `"name": "STRIPE_KEY"`) {
		t.Fatalf("list: %d %s", code, body)
	}
	_, metrics := call("GET", srv.APIURL()+"/metrics", "")
	for _, want := range []string{`nimbus_egress_requests_total{app="shop",outcome="ok"} 4`, `nimbus_egress_requests_total{app="shop",outcome="blocked"} 1`, `nimbus_egress_requests_total{app="shop",outcome="denied"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// Repeats of a denial are one summary entry per window, not one each.
	for range 5 {
		if code, _ := call("GET", gw+"/pay?to=http://"+cp+"/", ""); code != 502 {
			t.Fatalf("blocked again: %d", code)
		}
	}
	srv.FlushDenials()
	if code, _ := call("DELETE", srv.APIURL()+"/api/v1/apps/shop/secrets/STRIPE_KEY", ""); code != 204 {
		t.Fatalf("rm: %d", code)
	}

	// The guest log holds the blocked call's warning (and no secret).
	var guestLines []string
	poll(t, "the blocked fetch's warning in the guest log", func() error {
		guestLines = guestLines[:0]
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.ReadLogs(ctx, guestlog.Query{App: "shop"}, func(e guestlog.Entry) error {
			guestLines = append(guestLines, e.Message)
			return nil
		})
		if !strings.Contains(strings.Join(guestLines, "\n"), "network guard") {
			return io.ErrUnexpectedEOF
		}
		return nil
	})
	// The API's answers of logs and audit entries join what is searched.
	call("GET", srv.APIURL()+"/api/v1/apps/shop/logs", "")
	call("GET", srv.APIURL()+"/api/v1/audit", "")
	if !strings.Contains(logs.String(), `msg="egress call"`) {
		t.Errorf("the node's log lacks the outbound calls' spans (debug level)")
	}
	everything := logs.String() + "\n" + strings.Join(guestLines, "\n") + "\n" + strings.Join(seen, "\n")
	for _, s := range secrets {
		if strings.Contains(everything, s) {
			t.Errorf("the secret value %q appears in a log line or an answer", s)
		}
	}
	if !strings.Contains(logs.String(), "fetch blocked by the network guard") {
		t.Errorf("the node's log lacks the blocked fetch")
	}
	if conns, n := canary.Reached(); conns != 0 || n != 0 {
		t.Errorf("the canary received %d connections, %d bytes", conns, n)
	}
	// The audit log holds the secret operations (names only), the
	// ungranted call and the blocked one, and its chain verifies.
	ctx := context.Background()
	poll(t, "the function's denials in the audit log", func() error {
		entries, err := srv.Audit().List(ctx, audit.Filter{})
		if err != nil {
			return err
		}
		got := map[string]bool{}
		for _, e := range entries {
			got[e.Action+" "+e.Target+" "+e.Outcome] = true
			for _, s := range secrets {
				if strings.Contains(fmt.Sprint(e), s) {
					t.Fatalf("audit entry %d holds a secret value", e.Seq)
				}
			}
		}
		var blocked []string
		for _, e := range entries {
			if e.Action == "egress.blocked" {
				blocked = append(blocked, e.Detail)
			}
		}
		if len(blocked) != 2 || !strings.HasPrefix(blocked[0], "invocation ") || blocked[1] != "5 more denials in the window since the first" {
			t.Fatalf("egress.blocked entries: %q, want the first one's invocation, then a summary of 5 more", blocked)
		}
		for _, want := range []string{"secret.set shop/STRIPE_KEY ok", "secret.rm shop/STRIPE_KEY ok", "egress.blocked 127.0.0.1 denied"} {
			if !got[want] {
				return fmt.Errorf("no entry %q in %v", want, got)
			}
		}
		for k := range got {
			if strings.HasPrefix(k, "capability.denied http:") {
				return nil
			}
		}
		return fmt.Errorf("no capability.denied entry in %v", got)
	})
	if rep, err := srv.Audit().Verify(ctx); err != nil || !rep.OK() {
		t.Fatalf("audit verify: %+v %v", rep, err)
	}
}

// lineOf is the first line of log holding every one of subs ("" if none).
func lineOf(log string, subs ...string) string {
next:
	for _, l := range strings.Split(log, "\n") {
		for _, s := range subs {
			if !strings.Contains(l, s) {
				continue next
			}
		}
		return l
	}
	return ""
}
