package capability

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/telemetry"
)

// Defaults of EgressConfig.
const (
	DefaultFetchTimeout          = 10 * time.Second
	DefaultFetchMaxTimeout       = 60 * time.Second
	DefaultFetchMaxResponseBytes = 10 << 20
	DefaultFetchMaxRequestBytes  = 10 << 20
	DefaultFetchMaxRequests      = 100
	DefaultFetchMaxRedirects     = 5
)

// EgressConfig configures outbound HTTP (the fetch service). The zero value
// is the default: the public Internet only, the limits below.
type EgressConfig struct {
	// AllowCIDRs are ranges the network guard lets through although they
	// are internal (see NetGuard), such as 10.0.0.0/8 for services on the
	// node's network, or 127.0.0.0/8 in tests. Optional: default none.
	AllowCIDRs []netip.Prefix
	// Resolver resolves host names. Optional: default net.DefaultResolver.
	Resolver *net.Resolver
	// TLS is the client's TLS configuration (its roots, for a private CA).
	// Optional: default the system's roots.
	TLS *tls.Config
	// Timeout bounds a request that names no timeout, from the call to
	// the end of its body. Optional: default 10s.
	Timeout time.Duration
	// MaxTimeout caps the timeout a function asks for. Optional: default
	// 60s. The invocation's own deadline applies too.
	MaxTimeout time.Duration
	// MaxResponseBytes caps a response body (after decompression); a
	// larger one fails with ErrTooLarge. A function may ask for less.
	// Optional: default 10MiB.
	MaxResponseBytes int64
	// MaxRequestBytes caps a request body. Optional: default 10MiB.
	MaxRequestBytes int
	// MaxRequests caps the requests of one invocation (redirects
	// included). Optional: default 100.
	MaxRequests int
	// MaxRedirects caps the redirects one request follows; each is
	// checked against the grants and the network guard. Optional:
	// default 5; negative: redirects are returned, not followed.
	MaxRedirects int
}

// FetchRequest is one outbound HTTP request.
type FetchRequest struct {
	// Method is GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS.
	Method string
	// URL is an absolute http or https URL.
	URL string
	// Header is sent as is, with a traceparent added when absent.
	Header http.Header
	// Body is the request body (nil: none).
	Body []byte
	// Timeout bounds the request. Optional: default EgressConfig.Timeout;
	// capped at EgressConfig.MaxTimeout.
	Timeout time.Duration
	// MaxResponseBytes caps the response body. Optional: default, and
	// capped at, EgressConfig.MaxResponseBytes.
	MaxResponseBytes int64
}

// FetchResponse is the answer to a FetchRequest.
type FetchResponse struct {
	Status int
	Header http.Header
	Body   []byte
}

// FetchService makes outbound HTTP requests for functions (capability
// "http", scoped by host, port, scheme and method: see ParseHTTP's
// grammar in httpgrant.go). Every request, and every redirect it follows,
// is checked against the caller's grants; every connection against the
// network guard.
type FetchService struct {
	*guard
	cfg       EgressConfig
	net       *NetGuard
	transport *http.Transport
	calls     *prometheus.CounterVec
	duration  *prometheus.HistogramVec
}

func newFetchService(g *guard, cfg EgressConfig, reg prometheus.Registerer) *FetchService {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultFetchTimeout
	}
	if cfg.MaxTimeout <= 0 {
		cfg.MaxTimeout = DefaultFetchMaxTimeout
	}
	if cfg.MaxResponseBytes <= 0 {
		cfg.MaxResponseBytes = DefaultFetchMaxResponseBytes
	}
	if cfg.MaxRequestBytes <= 0 {
		cfg.MaxRequestBytes = DefaultFetchMaxRequestBytes
	}
	if cfg.MaxRequests <= 0 {
		cfg.MaxRequests = DefaultFetchMaxRequests
	}
	if cfg.MaxRedirects == 0 {
		cfg.MaxRedirects = DefaultFetchMaxRedirects
	}
	s := &FetchService{guard: g, cfg: cfg, net: NewNetGuard(cfg.AllowCIDRs, cfg.Resolver)}
	s.transport = &http.Transport{
		Proxy:                  nil, // a proxy would be dialed instead of the target: the guard would check the wrong address
		DialContext:            s.net.DialContext,
		TLSClientConfig:        cfg.TLS,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           256,
		MaxIdleConnsPerHost:    16,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    10 * time.Second,
		MaxResponseHeaderBytes: 64 << 10,
	}
	s.calls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "nimbus_egress_requests_total",
		Help: "Outbound HTTP requests of functions, by outcome (ok, denied, blocked, bad_argument, too_large, limit, timeout, error).",
	}, []string{"app", "outcome"})
	s.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "nimbus_egress_request_duration_seconds",
		Help:    "Time of outbound HTTP requests of functions that got a response, to the end of the body.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"app"})
	if reg != nil {
		reg.MustRegister(s.calls, s.duration)
	}
	return s
}

// Guard is the service's network guard; the server protects its own
// listening addresses with it.
func (s *FetchService) Guard() *NetGuard { return s.net }

// CloseIdleConnections closes the idle connections of the shared client.
func (s *FetchService) CloseIdleConnections() { s.transport.CloseIdleConnections() }

// MaxResponseBytes is the node's cap on a response body.
func (s *FetchService) MaxResponseBytes() int64 { return s.cfg.MaxResponseBytes }

// Fetch makes req on behalf of call and reads the whole response body.
// Errors match ErrBadArgument (method, URL, header), ErrDenied (the URL,
// or a redirect's, is not granted: a *DeniedError naming the grant),
// ErrBlocked (the network guard refused the address: a *BlockedError),
// ErrTooLarge (a body over its limit, or more requests in the invocation
// than allowed), ErrTimeout, or ErrUnavailable (the connection failed). A
// response with any status is not an error. Messages never carry the
// URL's path or query, the headers or the body (which may hold secrets).
func (s *FetchService) Fetch(ctx context.Context, call *Caller, req FetchRequest) (_ *FetchResponse, err error) {
	const op = "fetch"
	app := appOf(call)
	outcome := "error"
	defer func() { s.calls.WithLabelValues(app, outcome).Inc() }()
	u, err := url.Parse(req.URL)
	if err != nil {
		outcome = "bad_argument"
		return nil, fail(op, ErrBadArgument, errors.New("the URL does not parse")) // url's error repeats the URL
	}
	t, err := parseTarget(req.Method, u)
	if err == nil {
		err = checkHeader(req.Header)
	}
	if err == nil && len(req.Body) > s.cfg.MaxRequestBytes {
		outcome = "too_large"
		return nil, fail(op, ErrTooLarge, fmt.Errorf("the request body is %s, over the limit of %s", model.FormatBytes(uint64(len(req.Body))), model.FormatBytes(uint64(s.cfg.MaxRequestBytes))))
	}
	if err != nil {
		outcome = "bad_argument"
		return nil, fail(op, ErrBadArgument, err)
	}
	u.Host = t.hostport() // dial what was checked, in its canonical spelling
	if err := s.check(call, op, t.need()); err != nil {
		outcome = "denied"
		return nil, err
	}
	if err := s.countRequest(call); err != nil {
		outcome = "limit"
		return nil, err
	}
	timeout := req.Timeout
	if timeout <= 0 {
		timeout = s.cfg.Timeout
	}
	timeout = min(timeout, s.cfg.MaxTimeout)
	limit := s.cfg.MaxResponseBytes
	if req.MaxResponseBytes > 0 {
		limit = min(limit, req.MaxResponseBytes)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var body io.Reader
	if req.Body != nil {
		body = bytes.NewReader(req.Body)
	}
	hreq, err := http.NewRequestWithContext(ctx, req.Method, u.String(), body)
	if err != nil {
		outcome = "bad_argument"
		return nil, fail(op, ErrBadArgument, errors.New("the request could not be built"))
	}
	hreq.Header = req.Header.Clone()
	if hreq.Header == nil {
		hreq.Header = http.Header{}
	}
	hreq.Header.Del("Host") // the Host is the URL's: the grant was checked on it
	// The call is a span of the invocation's trace: its traceparent goes
	// to the server, and one debug line records it whatever the outcome.
	span := telemetry.Continue(call.TraceParent)
	if hreq.Header.Get("traceparent") == "" && call.TraceParent != "" {
		hreq.Header.Set("traceparent", span.String())
	}
	client := &http.Client{Transport: s.transport, CheckRedirect: func(r *http.Request, via []*http.Request) error {
		return s.redirect(call, r, via)
	}}
	start := time.Now()
	status := 0
	defer func() { s.logSpan(call, t, span, start, status, outcome) }()
	resp, err := client.Do(hreq)
	if err != nil {
		return nil, s.fetchError(ctx, call, t, timeout, err, &outcome)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, s.fetchError(ctx, call, t, timeout, err, &outcome)
	}
	if int64(len(b)) > limit {
		outcome = "too_large"
		return nil, fail(op, ErrTooLarge, fmt.Errorf("the response body of %s is over the limit of %s", t, model.FormatBytes(uint64(limit))))
	}
	s.duration.WithLabelValues(app).Observe(time.Since(start).Seconds())
	outcome, status = "ok", resp.StatusCode
	return &FetchResponse{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

// logSpan writes the span of one outbound call: where it went (host and
// method, never the path, query, headers or body), how it ended and how
// long it took, in the invocation's trace. Debug level: one line per call.
func (s *FetchService) logSpan(call *Caller, t target, span telemetry.TraceContext, start time.Time, status int, outcome string) {
	if !s.logger.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	parent := ""
	if tc, ok := telemetry.ParseTraceParent(call.TraceParent); ok {
		parent = hex.EncodeToString(tc.SpanID[:])
	}
	s.logger.Debug("egress call", "app", call.App, "function", call.Function, "invocation", call.InvocationID,
		"host", t.String(), "method", t.method, "status", status, "outcome", outcome,
		"duration_ms", float64(time.Since(start).Microseconds())/1000,
		"trace_id", span.TraceIDString(), "span_id", hex.EncodeToString(span.SpanID[:]), "parent_span_id", parent)
}

// countRequest counts one request of the invocation against its limit.
func (s *FetchService) countRequest(call *Caller) error {
	if n := call.count("\x00fetch"); n > s.cfg.MaxRequests {
		return fail("fetch", ErrTooLarge, fmt.Errorf("over the limit of %d requests per invocation", s.cfg.MaxRequests))
	}
	return nil
}

// redirect checks a redirect like a request: its URL against the grants,
// the count against the limits. The network guard checks its address when
// it is dialed. net/http drops Authorization and Cookie headers on a
// redirect to another domain.
func (s *FetchService) redirect(call *Caller, r *http.Request, via []*http.Request) error {
	if s.cfg.MaxRedirects < 0 {
		return http.ErrUseLastResponse
	}
	if len(via) > s.cfg.MaxRedirects {
		return fail("fetch", ErrTooLarge, fmt.Errorf("stopped after %d redirects", s.cfg.MaxRedirects))
	}
	t, err := parseTarget(r.Method, r.URL)
	if err != nil {
		return fail("fetch", ErrBadArgument, fmt.Errorf("redirect: %w", err))
	}
	if err := s.check(call, "fetch", t.need()); err != nil {
		return fmt.Errorf("redirect to %s: %w", t, err)
	}
	return s.countRequest(call)
}

// fetchError classifies a client error and logs what the function cannot
// see: a blocked address, a transport failure.
func (s *FetchService) fetchError(ctx context.Context, call *Caller, t target, timeout time.Duration, err error, outcome *string) error {
	const op = "fetch"
	var be *BlockedError
	switch {
	case errors.As(err, &be):
		*outcome = "blocked"
		if call.first("\x00blocked " + be.Host) {
			call.log("warn", fmt.Sprintf("nimbus.fetch %s: %s", t, be.Error()))
			s.logger.Warn("fetch blocked by the network guard", "app", call.App, "function", call.Function,
				"invocation", call.InvocationID, "host", be.Host, "addr", be.Addr.String(), "reason", be.Reason)
			s.denied(Denial{App: call.App, Function: call.Function, Invocation: call.InvocationID, Kind: "egress", What: be.Host})
		}
		return fail(op, ErrBlocked, be)
	case errors.Is(err, ErrDenied):
		*outcome = "denied"
		return unwrapURLError(err)
	case errors.Is(err, ErrTooLarge):
		*outcome = "limit"
		return unwrapURLError(err)
	case errors.Is(err, ErrBadArgument):
		*outcome = "bad_argument"
		return unwrapURLError(err)
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		*outcome = "timeout"
		return fail(op, ErrTimeout, fmt.Errorf("%s did not answer within %s", t, timeout))
	}
	*outcome = "error"
	s.logger.Log(ctx, slog.LevelDebug, "fetch failed", "app", call.App, "function", call.Function,
		"invocation", call.InvocationID, "host", t.String(), "err", unwrapURLError(err))
	return fail(op, ErrUnavailable, fmt.Errorf("%s: %w", t, unwrapURLError(err)))
}

// unwrapURLError drops *url.Error's wrapping, whose message repeats the
// whole URL (path and query may hold tokens).
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// checkHeader validates header names and values: tokens, and values
// without control characters (no header injection).
func checkHeader(h http.Header) error {
	for k, vs := range h {
		if k == "" || strings.IndexFunc(k, func(r rune) bool { return r <= ' ' || r >= 0x7f || strings.ContainsRune("\"(),/:;<=>?@[\\]{}", r) }) >= 0 {
			return fmt.Errorf("header name %q is not a token", k)
		}
		for _, v := range vs {
			if strings.IndexFunc(v, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }) >= 0 {
				return fmt.Errorf("header %s has a control character in its value", k)
			}
		}
	}
	return nil
}
