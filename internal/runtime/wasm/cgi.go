package wasm

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"strconv"
)

// CGI output limits. They bound the work a hostile guest can make the host
// do before the body; the body itself is bounded by the response limit.
const (
	maxCGIHeaderBytes = 64 << 10
	maxCGIHeaders     = 100
)

// errCGI marks malformed CGI output.
var errCGI = errors.New("bad CGI output")

// cgiResponse is a parsed CGI response.
type cgiResponse struct {
	Status int
	Header http.Header
	Body   []byte
}

// parseCGI parses a CGI response (RFC 3875 section 6, as WAGI does): header
// lines, a blank line (LF or CRLF line endings), then the body.
//
//   - Status: "404 Not Found" (or just "404") sets the status;
//   - Location without Status means a redirect: 302;
//   - every other header passes through (canonicalized);
//   - no Status and no Location means 200.
//
// It never panics and reads at most maxHeaderBytes of headers (at most
// maxCGIHeaders lines) before giving up. Body aliases out.
func parseCGI(out []byte, maxHeaderBytes int) (*cgiResponse, error) {
	resp := &cgiResponse{Header: make(http.Header)}
	rest := out
	consumed := 0
	for n := 0; ; n++ {
		i := bytes.IndexByte(rest, '\n')
		lineEnd := i + 1
		if i < 0 {
			lineEnd = len(rest)
		}
		if consumed+lineEnd > maxHeaderBytes {
			return nil, fmt.Errorf("%w: headers longer than %d bytes (no blank line ends them)", errCGI, maxHeaderBytes)
		}
		if i < 0 {
			return nil, fmt.Errorf("%w: output ended before the blank line that ends the headers", errCGI)
		}
		line := rest[:i]
		rest = rest[i+1:]
		consumed += i + 1
		line = bytes.TrimSuffix(line, []byte{'\r'})
		if len(line) == 0 {
			break
		}
		if n >= maxCGIHeaders {
			return nil, fmt.Errorf("%w: more than %d header lines", errCGI, maxCGIHeaders)
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return nil, fmt.Errorf("%w: header line %d %q is not \"Name: value\"", errCGI, n+1, truncate(line, 60))
		}
		name := string(bytes.TrimSpace(line[:colon]))
		value := string(bytes.TrimSpace(line[colon+1:]))
		if !validHeaderName(name) || !validHeaderValue(value) {
			return nil, fmt.Errorf("%w: invalid header line %d %q", errCGI, n+1, truncate(line, 60))
		}
		name = textproto.CanonicalMIMEHeaderKey(name)
		if name == "Status" {
			st, err := parseStatus(value)
			if err != nil {
				return nil, err
			}
			resp.Status = st
			continue
		}
		resp.Header.Add(name, value)
	}
	if resp.Status == 0 {
		resp.Status = http.StatusOK
		if resp.Header.Get("Location") != "" {
			resp.Status = http.StatusFound
		}
	}
	resp.Body = rest
	return resp, nil
}

func parseStatus(v string) (int, error) {
	code := v
	if i := bytes.IndexByte([]byte(v), ' '); i >= 0 {
		code = v[:i]
	}
	st, err := strconv.Atoi(code)
	if err != nil || len(code) != 3 || st < 100 || st > 999 {
		return 0, fmt.Errorf("%w: Status %q is not a three-digit code", errCGI, truncate([]byte(v), 40))
	}
	return st, nil
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// validHeaderName reports whether s is an RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validHeaderValue rejects control characters other than tab, so a guest
// cannot split or smuggle headers.
func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
