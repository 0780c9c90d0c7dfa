package nimbus

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// Errors of Fetch and Secret, beyond the common ones.
var (
	// ErrBlocked means the destination resolves to an address functions
	// may not reach (loopback, private, link-local such as the cloud
	// metadata service, ...), whatever the function is granted; an
	// operator may allow a range with --egress-allow-cidr.
	ErrBlocked = errors.New("destination blocked by the network guard")
	// ErrTimeout means an outbound request did not complete in time, or
	// a workflow's WaitForEvent got no signal in time (match it with
	// errors.Is).
	ErrTimeout = errors.New("timed out")
	// ErrSecretNotFound means the secret is not set for the app (set it
	// with `nimbus secret set APP NAME`).
	ErrSecretNotFound = errors.New("secret not set")
)

// Transport is an http.RoundTripper that sends requests through the host
// (capability "http:HOST"), so the standard client works in a function:
//
//	client := &http.Client{Transport: &nimbus.Transport{}}
//	resp, err := client.Get("https://api.example.com/v1/items")
//
// The host follows redirects itself (each one checked against the
// function's grants), so the client sees the final response. A request's
// timeout is its context's deadline, else Timeout, else the host's
// default (10s); the invocation's own deadline applies too. The whole
// response body is read by the host, up to MaxResponseBytes.
type Transport struct {
	// Timeout bounds a request without a context deadline. Optional:
	// default the host's (10s).
	Timeout time.Duration
	// MaxResponseBytes caps a response body: a longer one fails with
	// ErrTooLarge. Optional: default the host's limit (10MiB).
	MaxResponseBytes int64
}

// RoundTrip implements http.RoundTripper. Errors wrap ErrDenied (the host
// is not granted: the message names the grant to add), ErrBlocked,
// ErrTimeout, ErrTooLarge, ErrBadArgument or ErrUnavailable, with the
// host's reason.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		var err error
		body, err = io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("nimbus: fetch: read the request body: %w", err)
		}
	}
	timeout := t.Timeout
	if dl, ok := req.Context().Deadline(); ok {
		timeout = max(time.Until(dl), time.Millisecond)
	}
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	wr := wire.FetchRequest{Method: method, URL: req.URL.String(), Header: req.Header, Body: body,
		TimeoutMS: uint64(max(timeout.Milliseconds(), 0)), MaxResponseBytes: uint64(max(t.MaxResponseBytes, 0))}
	resp, err := fetchWire(wire.EncodeFetchRequest(nil, &wr))
	if err != nil {
		return nil, err
	}
	return &http.Response{
		Status:        strconv.Itoa(resp.Status) + " " + http.StatusText(resp.Status),
		StatusCode:    resp.Status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header(resp.Header),
		Body:          io.NopCloser(bytes.NewReader(resp.Body)),
		ContentLength: int64(len(resp.Body)),
		Request:       req,
	}, nil
}

// Fetch sends req through the host with the default Transport and
// returns the response; see Transport for the grants, limits and errors.
// A response with any status (404, 500) is not an error.
func Fetch(req *http.Request) (*http.Response, error) {
	return (&Transport{}).RoundTrip(req)
}

// fetchWire calls fetch, then fetch_take for the response.
func fetchWire(req []byte) (*wire.FetchResponse, error) {
	var out [wire.FetchOutSize]byte
	errBuf := make([]byte, 1024)
	code := hostFetch(req, errBuf, &out)
	if code != wire.CodeOK {
		msg := string(errBuf[:min(int(binary.LittleEndian.Uint32(out[8:])), len(errBuf))])
		return nil, fetchError(code, msg)
	}
	handle, n := binary.LittleEndian.Uint32(out[:4]), binary.LittleEndian.Uint32(out[4:8])
	buf := make([]byte, n)
	var tout [wire.FetchTakeOutSize]byte
	if code := hostFetchTake(handle, buf, &tout); code != wire.CodeOK {
		return nil, codeError("fetch_take", "http", code)
	}
	resp, err := wire.DecodeFetchResponse(buf)
	if err != nil {
		return nil, fmt.Errorf("nimbus: fetch: %w: %w", ErrHost, err)
	}
	return resp, nil
}

// fetchError is fetch's error for code, with the host's reason.
func fetchError(code int32, msg string) error {
	var kind error
	switch code {
	case wire.CodeDenied:
		kind = ErrDenied
	case wire.CodeBlocked:
		kind = ErrBlocked
	case wire.CodeTimeout:
		kind = ErrTimeout
	case wire.CodeTooLarge:
		kind = ErrTooLarge
	case wire.CodeBadArgument:
		kind = ErrBadArgument
	case wire.CodeUnavailable:
		kind = ErrUnavailable
	default:
		return codeError("fetch", "http", code)
	}
	if msg == "" {
		return fmt.Errorf("nimbus: fetch: %w", kind)
	}
	return fmt.Errorf("nimbus: %w (%s)", kind, msg)
}

// Secret returns the current value of the app's secret name (set with
// `nimbus secret set APP NAME`). It needs the capability "secret:NAME";
// without it the error wraps ErrDenied. Each call reads the current
// value: a secret set again is seen without a redeploy. Errors wrap
// ErrDenied, ErrSecretNotFound, ErrBadArgument (not a secret name) or
// ErrUnavailable, and never carry the value.
func Secret(name string) (string, error) {
	buf := make([]byte, 256)
	for range 3 { // the value may grow between calls; a third try is generous
		var out [wire.SecretOutSize]byte
		code := hostSecretGet(name, buf, &out)
		n := binary.LittleEndian.Uint32(out[:])
		switch code {
		case wire.CodeOK:
			return string(buf[:n]), nil
		case wire.CodeTooLarge:
			buf = make([]byte, n)
			continue
		case wire.CodeNotFound:
			return "", fmt.Errorf("nimbus: secret %s: %w: set it with `nimbus secret set APP %s`", name, ErrSecretNotFound, name)
		}
		return "", codeError("secret "+name, "secret:"+name, code)
	}
	return "", fmt.Errorf("nimbus: secret %s: %w: its size kept changing", name, ErrHost)
}
