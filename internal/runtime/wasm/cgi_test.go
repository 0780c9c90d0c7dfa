package wasm

import (
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

func TestParseCGI(t *testing.T) {
	tests := []struct {
		name       string
		in         string
		wantStatus int
		wantHeader http.Header
		wantBody   string
		wantErr    string
	}{
		{"content type", "Content-Type: text/plain\n\nhello", 200, http.Header{"Content-Type": {"text/plain"}}, "hello", ""},
		{"crlf", "Content-Type: text/plain\r\nX-A: 1\r\n\r\nbody\r\n", 200, http.Header{"Content-Type": {"text/plain"}, "X-A": {"1"}}, "body\r\n", ""},
		{"mixed endings", "Content-Type: a\r\n\nb", 200, http.Header{"Content-Type": {"a"}}, "b", ""},
		{"status with reason", "Status: 404 Not Found\nContent-Type: text/plain\n\nnope", 404, http.Header{"Content-Type": {"text/plain"}}, "nope", ""},
		{"status code only", "status: 201\n\n", 201, http.Header{}, "", ""},
		{"location redirects", "Location: /elsewhere\n\n", 302, http.Header{"Location": {"/elsewhere"}}, "", ""},
		{"location with status", "Status: 301 Moved\nLocation: /x\n\n", 301, http.Header{"Location": {"/x"}}, "", ""},
		{"no headers", "\nbody only", 200, http.Header{}, "body only", ""},
		{"repeated header", "Set-Cookie: a=1\nSet-Cookie: b=2\n\n", 200, http.Header{"Set-Cookie": {"a=1", "b=2"}}, "", ""},
		{"lowercase canonicalized", "x-custom-thing:  v  \n\n", 200, http.Header{"X-Custom-Thing": {"v"}}, "", ""},
		{"empty value", "X-Empty:\n\n", 200, http.Header{"X-Empty": {""}}, "", ""},
		{"body with blank lines", "A: b\n\n\n\nx\n\n", 200, http.Header{"A": {"b"}}, "\n\nx\n\n", ""},
		{"empty output", "", 0, nil, "", "output ended before the blank line"},
		{"no blank line", "Content-Type: text/plain\nhello", 0, nil, "", "output ended before the blank line"},
		{"not a header", "hello world\n\n", 0, nil, "", "is not \"Name: value\""},
		{"empty name", ": v\n\n", 0, nil, "", "is not \"Name: value\""},
		{"space in name", "Bad Name: v\n\n", 0, nil, "", "invalid header line"},
		{"control char in value", "A: b\x00c\n\n", 0, nil, "", "invalid header line"},
		{"stray CR in value", "A: b\rX-Injected: 1\n\n", 0, nil, "", "invalid header line"},
		{"bad status", "Status: abc\n\n", 0, nil, "", "three-digit"},
		{"status too small", "Status: 42\n\n", 0, nil, "", "three-digit"},
		{"status out of range", "Status: 1000\n\n", 0, nil, "", "three-digit"},
		{"headers too long", "A: " + strings.Repeat("x", 70<<10) + "\n\n", 0, nil, "", "headers longer than"},
		{"headers too long without newline", strings.Repeat("x", 70<<10), 0, nil, "", "headers longer than"},
		{"too many headers", strings.Repeat("A: b\n", 101) + "\n", 0, nil, "", "more than 100 header lines"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseCGI([]byte(tt.in), maxCGIHeaderBytes)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, errCGI) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if got.Status != tt.wantStatus || string(got.Body) != tt.wantBody || !reflect.DeepEqual(got.Header, tt.wantHeader) {
				t.Fatalf("got %d %v %q, want %d %v %q", got.Status, got.Header, got.Body, tt.wantStatus, tt.wantHeader, tt.wantBody)
			}
		})
	}
}

// FuzzParseCGI: whatever a guest prints, the parser must not panic, must
// keep its header bound, and anything it accepts must be a valid response.
func FuzzParseCGI(f *testing.F) {
	for _, s := range []string{
		"Content-Type: text/plain\n\nhello",
		"Status: 404 Not Found\r\n\r\n",
		"Location: /x\n\n",
		"\n",
		"A: b\nA: c\n\nbody",
		"no colon\n\n",
		"Status: 99999\n\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		resp, err := parseCGI(b, 1024)
		if err != nil {
			return
		}
		if resp.Status < 100 || resp.Status > 999 {
			t.Fatalf("status %d accepted", resp.Status)
		}
		if len(b)-len(resp.Body) > 1024 {
			t.Fatalf("consumed %d header bytes past the 1024 bound", len(b)-len(resp.Body))
		}
		for k, vs := range resp.Header {
			if !validHeaderName(k) {
				t.Fatalf("invalid name %q accepted", k)
			}
			for _, v := range vs {
				if !validHeaderValue(v) {
					t.Fatalf("invalid value %q accepted", v)
				}
			}
		}
	})
}

func TestCheckHeader(t *testing.T) {
	tests := []struct {
		name string
		in   map[string][]string
		want http.Header
		ok   bool
	}{
		{"canonicalized", map[string][]string{"x-a": {"1", "2"}}, http.Header{"X-A": {"1", "2"}}, true},
		{"empty", nil, http.Header{}, true},
		{"bad name", map[string][]string{"X A": {"1"}}, nil, false},
		{"newline in value", map[string][]string{"X-A": {"1\r\nSet-Cookie: x"}}, nil, false},
		{"NUL in value", map[string][]string{"X-A": {"\x00"}}, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := checkHeader(tt.in)
			if (err == nil) != tt.ok || (tt.ok && !reflect.DeepEqual(got, tt.want)) {
				t.Fatalf("got %v, %v; want %v ok=%v", got, err, tt.want, tt.ok)
			}
		})
	}
}
