package capability_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nimbus-dev/nimbus/internal/capability"
	"github.com/nimbus-dev/nimbus/internal/capability/captest"
)

// egressEnv is a canary on 127.0.0.1 that no case may reach, an echo
// server on 127.0.0.2 that the operator allows (--egress-allow-cidr
// 127.0.0.2/32), and a DNS server naming both and worse.
type egressEnv struct {
	canary  *captest.Canary
	allowed netip.AddrPort
	dns     *captest.DNS
}

func newEgressEnv(t *testing.T) *egressEnv {
	e := &egressEnv{canary: captest.NewCanary(t, "127.0.0.1"), allowed: captest.Echo(t, "127.0.0.2")}
	rebind := func(n int) []netip.Addr { // public (allowed) first, loopback after
		if n == 0 {
			return []netip.Addr{netip.MustParseAddr("127.0.0.2")}
		}
		return []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	}
	e.dns = captest.NewDNS(t, map[string]func(int) []netip.Addr{
		"canary.test":    captest.Fixed("127.0.0.1"),
		"allowed.test":   captest.Fixed("127.0.0.2"),
		"mixed.test":     captest.Fixed("127.0.0.2", "127.0.0.1"),
		"rebind.test":    rebind,
		"v6loop.test":    captest.Fixed("::1"),
		"mapped.test":    captest.Fixed("::ffff:127.0.0.1"),
		"nat64.test":     captest.Fixed("64:ff9b::7f00:1"),
		"meta.test":      captest.Fixed("169.254.169.254"),
		"private.test":   captest.Fixed("10.1.2.3"),
		"cgnat.test":     captest.Fixed("100.64.0.1"),
		"ula.test":       captest.Fixed("fd00::1"),
		"zero.test":      captest.Fixed("0.0.0.0"),
		"multicast.test": captest.Fixed("224.0.0.1"),
	})
	return e
}

func (e *egressEnv) services(t *testing.T, logger *slog.Logger, cfg capability.EgressConfig) *capability.Services {
	if cfg.Resolver == nil {
		cfg.Resolver = e.dns.Resolver()
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second // a guard that let a case through to the canary fails, not hangs
	}
	svc := capability.New(capability.Config{Logger: logger, Egress: cfg, Registerer: prometheus.NewRegistry()})
	t.Cleanup(svc.Fetch.CloseIdleConnections)
	return svc
}

func (e *egressEnv) ports() (canary, allowed string) {
	return fmt.Sprint(e.canary.Addr.Port()), fmt.Sprint(e.allowed.Port())
}

func (e *egressEnv) assertCanaryUntouched(t *testing.T) {
	t.Helper()
	if conns, n := e.canary.Reached(); conns != 0 || n != 0 {
		t.Fatalf("the canary on %s received %d connections and %d bytes; every case must be refused before connecting", e.canary.Addr, conns, n)
	}
}

func fetchCaller(grants ...string) *capability.Caller {
	c, _ := caller("shop", grants...)
	return c
}

// TestFetchSSRFMatrix walks every way to reach an internal address: each
// must be refused with the right error and leave the canary untouched,
// while the range the operator allowed is reached.
func TestFetchSSRFMatrix(t *testing.T) {
	e := newEgressEnv(t)
	cp, ap := e.ports()
	allow := []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}
	svc := e.services(t, nil, capability.EgressConfig{AllowCIDRs: allow})
	grants := []string{"http:*:" + cp, "http:*:" + ap, "http:*"}
	allowedURL := "http://allowed.test:" + ap
	for _, c := range []struct {
		name, url string
		want      error
	}{
		{"loopback literal", "http://127.0.0.1:" + cp + "/", capability.ErrBlocked},
		{"loopback name", "http://canary.test:" + cp + "/", capability.ErrBlocked},
		{"localhost", "http://localhost:" + cp + "/", nil}, // NXDOMAIN from the test DNS, or blocked: never reached
		{"loopback with trailing dot", "http://127.0.0.1.:" + cp + "/", capability.ErrBlocked},
		{"IPv6 loopback", "http://[::1]:" + cp + "/", capability.ErrBlocked},
		{"IPv4-mapped IPv6", "http://[::ffff:127.0.0.1]:" + cp + "/", capability.ErrBlocked},
		{"IPv4-mapped IPv6, hex", "http://[::ffff:7f00:1]:" + cp + "/", capability.ErrBlocked},
		{"IPv4-compatible IPv6", "http://[::127.0.0.1]:" + cp + "/", capability.ErrBlocked},
		{"unspecified", "http://0.0.0.0:" + cp + "/", capability.ErrBlocked},
		{"unspecified IPv6", "http://[::]:" + cp + "/", capability.ErrBlocked},
		{"unspecified by name", "http://zero.test:" + cp + "/", capability.ErrBlocked},
		{"decimal", "http://2130706433:" + cp + "/", capability.ErrBadArgument},
		{"hex", "http://0x7f000001:" + cp + "/", capability.ErrBadArgument},
		{"dotted hex", "http://0x7f.0.0.1:" + cp + "/", capability.ErrBadArgument},
		{"octal", "http://0177.0.0.1:" + cp + "/", capability.ErrBadArgument},
		{"short form", "http://127.1:" + cp + "/", capability.ErrBadArgument},
		{"IPv6 zone", "http://[fe80::1%25lo]:" + cp + "/", capability.ErrBadArgument},
		{"user info", "http://user:pw@127.0.0.2:" + ap + "/", capability.ErrBadArgument},
		{"scheme", "ftp://allowed.test:" + ap + "/", capability.ErrBadArgument},
		{"mixed answer", "http://mixed.test:" + cp + "/", capability.ErrBlocked},
		{"IPv6 loopback by name", "http://v6loop.test:" + cp + "/", capability.ErrBlocked},
		{"IPv4-mapped by name", "http://mapped.test:" + cp + "/", capability.ErrBlocked},
		{"NAT64 by name", "http://nat64.test:" + cp + "/", capability.ErrBlocked},
		{"metadata literal", "http://169.254.169.254/latest/meta-data/", capability.ErrBlocked},
		{"metadata by name", "http://meta.test/", capability.ErrBlocked},
		{"private", "http://private.test/", capability.ErrBlocked},
		{"CGNAT", "http://cgnat.test/", capability.ErrBlocked},
		{"ULA", "http://ula.test/", capability.ErrBlocked},
		{"multicast", "http://multicast.test/", capability.ErrBlocked},
		{"redirect to loopback", allowedURL + "/redirect?to=http://127.0.0.1:" + cp + "/", capability.ErrBlocked},
		{"redirect to loopback name", allowedURL + "/redirect?to=http://canary.test:" + cp + "/", capability.ErrBlocked},
		{"redirect to decimal", allowedURL + "/redirect?to=http://2130706433:" + cp + "/", capability.ErrBadArgument},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, err := svc.Fetch.Fetch(context.Background(), fetchCaller(grants...), capability.FetchRequest{Method: "GET", URL: c.url})
			switch {
			case c.want == nil && err == nil:
				t.Fatalf("reached: status %d body %q", resp.Status, resp.Body)
			case c.want != nil && !errors.Is(err, c.want):
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if err != nil && strings.Contains(err.Error(), "127.0.0.1:"+cp) && c.want == capability.ErrBlocked {
				t.Errorf("the error names the address: %v", err)
			}
		})
	}

	t.Run("DNS rebinding", func(t *testing.T) {
		// The first answer (the allowed range) is checked and dialed:
		// nothing listens on that port there. A guard that resolved again
		// to dial would have reached the canary with the second answer.
		_, err := svc.Fetch.Fetch(context.Background(), fetchCaller(grants...), capability.FetchRequest{Method: "GET", URL: "http://rebind.test:" + cp + "/"})
		if !errors.Is(err, capability.ErrUnavailable) {
			t.Fatalf("first fetch: err = %v, want a refused connection to 127.0.0.2", err)
		}
		if n := e.dns.Queries("rebind.test"); n != 1 {
			t.Fatalf("rebind.test was resolved %d times for one request, want 1", n)
		}
		_, err = svc.Fetch.Fetch(context.Background(), fetchCaller(grants...), capability.FetchRequest{Method: "GET", URL: "http://rebind.test:" + cp + "/"})
		if !errors.Is(err, capability.ErrBlocked) {
			t.Fatalf("second fetch (now loopback): err = %v, want ErrBlocked", err)
		}
	})

	t.Run("operator-allowed range", func(t *testing.T) {
		for _, u := range []string{allowedURL + "/ok", "http://127.0.0.2:" + ap + "/ok"} {
			resp, err := svc.Fetch.Fetch(context.Background(), fetchCaller(grants...), capability.FetchRequest{Method: "GET", URL: u})
			if err != nil || resp.Status != 200 || resp.Header.Get("Echo-Path") != "/ok" {
				t.Fatalf("%s: %+v, %v", u, resp, err)
			}
		}
	})
	e.assertCanaryUntouched(t)
}

// TestFetchDefaultsAndOwnPorts: without an allowed range loopback is
// refused; with 127.0.0.0/8 allowed the node's own listening addresses are
// still refused.
func TestFetchDefaultsAndOwnPorts(t *testing.T) {
	e := newEgressEnv(t)
	cp, ap := e.ports()
	grants := []string{"http:*:" + cp, "http:*:" + ap}

	def := e.services(t, nil, capability.EgressConfig{})
	_, err := def.Fetch.Fetch(context.Background(), fetchCaller(grants...), capability.FetchRequest{Method: "GET", URL: "http://127.0.0.2:" + ap + "/"})
	if !errors.Is(err, capability.ErrBlocked) {
		t.Fatalf("no allowed range: err = %v, want ErrBlocked", err)
	}

	svc := e.services(t, nil, capability.EgressConfig{AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	svc.Fetch.Guard().Protect(e.canary.Addr)
	for _, u := range []string{"http://127.0.0.1:" + cp + "/", "http://[::1]:" + cp + "/", "http://127.0.0.3:" + cp + "/"} {
		_, err := svc.Fetch.Fetch(context.Background(), fetchCaller(grants...), capability.FetchRequest{Method: "GET", URL: u})
		var be *capability.BlockedError
		if !errors.As(err, &be) || !strings.Contains(err.Error(), "this Nimbus node listens on") {
			t.Fatalf("%s: err = %v, want the node's own address refused", u, err)
		}
	}
	resp, err := svc.Fetch.Fetch(context.Background(), fetchCaller(grants...), capability.FetchRequest{Method: "GET", URL: "http://127.0.0.2:" + ap + "/"})
	if err != nil || resp.Status != 200 {
		t.Fatalf("allowed range: %+v, %v", resp, err)
	}
	e.assertCanaryUntouched(t)
}

// TestFetchGrants: the URL and every redirect must be granted; a denial
// names the grant to add and is logged once.
func TestFetchGrants(t *testing.T) {
	e := newEgressEnv(t)
	cp, ap := e.ports()
	var logBuf syncBuffer
	logger := slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	svc := e.services(t, logger, capability.EgressConfig{AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}})
	call, sink := caller("shop", "http:GET allowed.test:"+ap)
	ctx := context.Background()

	for _, c := range []struct {
		method, url, need string
	}{
		{"POST", "http://allowed.test:" + ap + "/", "http:POST http://allowed.test:" + ap},
		{"GET", "https://allowed.test/", "http:GET https://allowed.test"},
		{"GET", "http://other.test:" + ap + "/", "http:GET http://other.test:" + ap},
		{"GET", "http://allowed.test/", "http:GET http://allowed.test"},
		{"GET", "http://allowed.test:" + ap + "/redirect?to=http://canary.test:" + cp + "/secret-path", "http:GET http://canary.test:" + cp},
	} {
		_, err := svc.Fetch.Fetch(ctx, call, capability.FetchRequest{Method: c.method, URL: c.url})
		var de *capability.DeniedError
		if !errors.As(err, &de) || de.Need.String() != c.need {
			t.Fatalf("%s %s: err = %v, want denied needing %q", c.method, c.url, err, c.need)
		}
		if strings.Contains(err.Error(), "secret-path") {
			t.Errorf("the error carries the URL's path: %v", err)
		}
	}
	// Granted, and the traceparent continues the invocation's trace.
	call.TraceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	resp, err := svc.Fetch.Fetch(ctx, call, capability.FetchRequest{Method: "GET", URL: "http://ALLOWED.test:" + ap + "/x"})
	if err != nil {
		t.Fatal(err)
	}
	if tp := resp.Header.Get("Echo-Traceparent"); !strings.HasPrefix(tp, "00-0af7651916cd43dd8448eb211c80319c-") || tp == call.TraceParent {
		t.Errorf("traceparent sent = %q, want a child span of the invocation's", tp)
	}
	// The call's span is logged (debug) with its ids, parent and outcome;
	// so is the call a redirect took to an ungranted host.
	tp := resp.Header.Get("Echo-Traceparent")
	if len(tp) == 55 {
		want := `msg="egress call" app=shop function=fn invocation=inv1 host=http://allowed.test:` + ap + ` method=GET status=200 outcome=ok duration_ms=`
		line := lineWith(logBuf.String(), "span_id="+tp[36:52])
		if !strings.Contains(line, want) || !strings.Contains(line, "trace_id=0af7651916cd43dd8448eb211c80319c") ||
			!strings.HasSuffix(line, "parent_span_id=b7ad6b7169203331") {
			t.Errorf("the call's span line is %q, want %q... with its trace and parent", line, want)
		}
	}
	if !strings.Contains(logBuf.String(), `msg="egress call" app=shop function=fn invocation=inv1 host=http://allowed.test:`+ap+` method=GET status=0 outcome=denied`) {
		t.Errorf("no span line for the call redirected to an ungranted host:\n%s", logBuf.String())
	}
	if n := strings.Count(logBuf.String(), "host function denied"); n != 5 {
		t.Errorf("%d denial warnings logged, want one per grant:\n%s", n, logBuf.String())
	}
	if strings.Contains(logBuf.String(), "secret-path") || strings.Contains(fmt.Sprint(sink.get()), "secret-path") {
		t.Errorf("a log carries the URL's path:\n%s", logBuf.String())
	}
	e.assertCanaryUntouched(t)
}

// TestFetchLimits: response size, request body size, request count,
// timeout and redirects.
func TestFetchLimits(t *testing.T) {
	e := newEgressEnv(t)
	_, ap := e.ports()
	reg := prometheus.NewRegistry()
	svc := capability.New(capability.Config{Registerer: reg, Egress: capability.EgressConfig{
		Resolver: e.dns.Resolver(), AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")},
		MaxResponseBytes: 1000, MaxRequestBytes: 100, MaxRequests: 3, MaxRedirects: 1, Timeout: 5 * time.Second,
	}})
	t.Cleanup(svc.Fetch.CloseIdleConnections)
	ctx := context.Background()
	base := "http://allowed.test:" + ap
	call := fetchCaller("http:allowed.test:" + ap)
	get := func(u string, req capability.FetchRequest) (*capability.FetchResponse, error) {
		req.Method, req.URL = "GET", base+u
		return svc.Fetch.Fetch(ctx, call, req)
	}
	if resp, err := get("/big?n=1000", capability.FetchRequest{}); err != nil || len(resp.Body) != 1000 {
		t.Fatalf("body at the limit: %v", err)
	}
	if _, err := get("/big?n=1001", capability.FetchRequest{}); !errors.Is(err, capability.ErrTooLarge) {
		t.Fatalf("body over the limit: err = %v", err)
	}
	if _, err := get("/big?n=11", capability.FetchRequest{MaxResponseBytes: 10}); !errors.Is(err, capability.ErrTooLarge) {
		t.Fatalf("body over the caller's limit: err = %v", err)
	}
	if _, err := get("/", capability.FetchRequest{}); !errors.Is(err, capability.ErrTooLarge) || !strings.Contains(err.Error(), "3 requests per invocation") {
		t.Fatalf("fourth request: err = %v", err)
	}

	call = fetchCaller("http:allowed.test:" + ap)
	if _, err := get("/hang", capability.FetchRequest{Timeout: 50 * time.Millisecond}); !errors.Is(err, capability.ErrTimeout) {
		t.Fatalf("hang: err = %v, want ErrTimeout", err)
	}
	// A request body over the limit is refused before anything is sent
	// (and is not counted against the invocation's requests).
	if _, err := svc.Fetch.Fetch(ctx, call, capability.FetchRequest{Method: "POST", URL: base + "/", Body: make([]byte, 101)}); !errors.Is(err, capability.ErrTooLarge) ||
		!strings.Contains(err.Error(), "the request body is 101B, over the limit of 100B") {
		t.Fatalf("request body over the limit: err = %v", err)
	}
	two := "/redirect?to=" + base + "/redirect?to=" + base + "/"
	if _, err := get(two, capability.FetchRequest{}); !errors.Is(err, capability.ErrTooLarge) || !strings.Contains(err.Error(), "redirects") {
		t.Fatalf("two redirects with a limit of one: err = %v", err)
	}
	if _, err := get("/", capability.FetchRequest{Header: map[string][]string{"X-A": {"a\r\nInjected: 1"}}}); !errors.Is(err, capability.ErrBadArgument) {
		t.Fatalf("header injection: err = %v", err)
	}
	want := map[string]float64{"ok": 1, "too_large": 3, "limit": 2, "timeout": 1, "bad_argument": 1}
	for outcome, n := range want {
		if got := egressCount(t, reg, outcome); got != n {
			t.Errorf("nimbus_egress_requests_total{outcome=%q} = %v, want %v", outcome, got, n)
		}
	}
}

// egressCount reads nimbus_egress_requests_total{app="shop",outcome}.
func egressCount(t *testing.T, reg *prometheus.Registry, outcome string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "nimbus_egress_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["app"] == "shop" && labels["outcome"] == outcome {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// lineWith returns the first line of log that contains s.
func lineWith(log, s string) string {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}
