package wasm

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nimbus-dev/nimbus/internal/runtime"
)

// wagiInstance serves WAGI (CGI over WASI) requests. Each Handle
// instantiates the command afresh, because CGI fixes the request in the
// environment and stdin at instantiation; the instance itself holds nothing.
type wagiInstance struct {
	m      *module
	res    *compiled // m's code, kept from eviction until Close
	closed bool
}

// Handle implements runtime.Instance.
func (i *wagiInstance) Handle(ctx context.Context, req *runtime.Request) (*runtime.Response, error) {
	m := i.m
	stdout := &cappedBuffer{limit: int(m.limits.MaxResponseBytes) + maxCGIHeaderBytes}
	stderr := newLineWriter("stderr", req.Log)
	defer runtime.FlushLog(req.Log) // after stderr's last line
	defer stderr.flush()
	cfg := m.moduleConfig().
		WithStdin(bytes.NewReader(req.Body)).
		WithStdout(stdout).
		WithStderr(stderr).
		WithStartFunctions("_start")
	for _, e := range cgiEnv(req) {
		cfg = cfg.WithEnv(e.k, e.v)
	}
	alloc := &cappedAllocator{limit: m.limits.MemoryBytes, image: i.res.image}
	defer alloc.release()

	tctx, cancel := withDeadline(ctx, time.Now().Add(m.limits.Timeout))
	defer cancel()
	// Stdout is the response: once it is past the limit the request has
	// failed, so stop the guest (at its next interruption check) rather than let one
	// that writes forever run into its timeout.
	stdout.onOverflow = cancel
	// On exit code 0 wazero returns a nil error and a closed module.
	mod, err := m.instantiate(m.withCall(tctx, req.InvocationID, req.TraceParent, req.Log), i.res.module, alloc, cfg)
	if mod != nil {
		mod.Close(ctx)
	}
	if stdout.overflow {
		// Whatever stopped the guest, the overflow came first; the caller's
		// own cancellation still wins.
		if perr := ctx.Err(); perr != nil {
			return nil, fmt.Errorf("%s/%s: %w", m.app, m.function, perr)
		}
		return nil, m.responseTooLarge()
	}
	if err != nil {
		return nil, m.failure(ctx, err, alloc, stderr)
	}
	resp, err := parseCGI(stdout.buf.Bytes(), maxCGIHeaderBytes)
	if err != nil {
		return nil, guestFailed(err.Error(), stderr.reason(), err)
	}
	if int64(len(resp.Body)) > m.limits.MaxResponseBytes {
		return nil, m.responseTooLarge()
	}
	return &runtime.Response{Status: resp.Status, Header: resp.Header, Body: resp.Body}, nil
}

// Close implements runtime.Instance.
func (i *wagiInstance) Close(ctx context.Context) error {
	if !i.closed {
		i.closed = true
		i.m.rt.unuse(ctx, i.m.code)
	}
	return nil
}

// cgiEnv is the RFC 3875 meta-variables of req, as WAGI sets them, plus
// Nimbus extras. The request path is all PATH_INFO (SCRIPT_NAME is empty):
// routes are ServeMux patterns, and their parameters are X_PARAM_<NAME>.
// These variables are set after the function's own environment, so they win.
func cgiEnv(req *runtime.Request) []envVar {
	host, port := req.Host, "80"
	if h, p, err := net.SplitHostPort(req.Host); err == nil {
		host, port = h, p
	}
	remoteAddr, remotePort := req.RemoteAddr, ""
	if h, p, err := net.SplitHostPort(req.RemoteAddr); err == nil {
		remoteAddr, remotePort = h, p
	}
	u := &url.URL{Path: req.Path, RawQuery: req.RawQuery}
	scheme := "http"
	if strings.EqualFold(req.Header.Get("X-Forwarded-Proto"), "https") {
		scheme = "https"
	}
	env := []envVar{
		{"GATEWAY_INTERFACE", "CGI/1.1"},
		{"SERVER_SOFTWARE", "Nimbus"},
		{"SERVER_PROTOCOL", "HTTP/1.1"},
		{"SERVER_NAME", host},
		{"SERVER_PORT", port},
		{"REQUEST_METHOD", req.Method},
		{"SCRIPT_NAME", ""},
		{"PATH_INFO", req.Path},
		{"PATH_TRANSLATED", req.Path},
		{"QUERY_STRING", req.RawQuery},
		{"REQUEST_URI", u.RequestURI()},
		{"CONTENT_TYPE", req.Header.Get("Content-Type")},
		{"CONTENT_LENGTH", strconv.Itoa(len(req.Body))},
		{"REMOTE_ADDR", remoteAddr},
		{"REMOTE_HOST", remoteAddr},
		{"REMOTE_PORT", remotePort},
		{"X_MATCHED_ROUTE", req.Route},
		{"X_FULL_URL", scheme + "://" + req.Host + u.RequestURI()},
		{"X_RAW_PATH_INFO", u.EscapedPath()},
		{"X_INVOCATION_ID", req.InvocationID},
		{"TRACEPARENT", req.TraceParent},
	}
	names := make([]string, 0, len(req.Header))
	for k := range req.Header {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if strings.EqualFold(k, "Content-Type") || strings.EqualFold(k, "Content-Length") || !validHeaderName(k) {
			continue
		}
		env = append(env, envVar{"HTTP_" + envName(k), strings.Join(req.Header[k], ", ")})
	}
	params := make([]string, 0, len(req.Params))
	for k := range req.Params {
		params = append(params, k)
	}
	sort.Strings(params)
	for _, k := range params {
		env = append(env, envVar{"X_PARAM_" + envName(k), req.Params[k]})
	}
	for i := range env {
		// WASI environment strings cannot hold NUL (a path may, once unescaped).
		env[i].v = strings.ReplaceAll(env[i].v, "\x00", "%00")
	}
	return env
}

// envName uppercases s and maps everything but letters and digits to '_'.
func envName(s string) string {
	b := []byte(strings.ToUpper(s))
	for i, c := range b {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	return string(b)
}
