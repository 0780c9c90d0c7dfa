package nimbus

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"testing"

	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

func roundTrip(t *testing.T, h http.Handler, req *wire.Request) *wire.Response {
	t.Helper()
	resp, err := wire.DecodeResponse(serve(h, wire.EncodeRequest(nil, req), nil))
	if err != nil {
		t.Fatalf("decode response: %v", err)
	}
	return resp
}

func TestServe(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Name", r.PathValue("name"))
		w.Header().Set("X-Invocation", InvocationID(r))
		w.Header().Set("X-Trace", r.Header.Get("Traceparent"))
		w.Header().Set("X-Pattern", r.Pattern)
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "%s %s %s %s %s %d %q", r.Method, r.URL.Path, r.URL.Query().Get("q"), r.Host, r.RemoteAddr, r.ContentLength, body)
	})
	resp := roundTrip(t, h, &wire.Request{
		Method: "POST", Path: "/hello/bob", RawQuery: "q=1", Host: "h.example", RemoteAddr: "127.0.0.1:1",
		Route: "POST /hello/{name}", InvocationID: "inv-7", TraceParent: "00-aa-bb-01",
		Params: map[string]string{"name": "bob"}, Body: []byte("payload"),
	})
	want := `POST /hello/bob 1 h.example 127.0.0.1:1 7 "payload"`
	if resp.Status != 201 || string(resp.Body) != want || resp.Error != "" {
		t.Fatalf("got %d %q %q, want 201 %q", resp.Status, resp.Body, resp.Error, want)
	}
	for k, v := range map[string]string{"X-Name": "bob", "X-Invocation": "inv-7", "X-Trace": "00-aa-bb-01", "X-Pattern": "POST /hello/{name}", "Content-Type": "text/plain; charset=utf-8"} {
		if got := http.Header(resp.Header).Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
}

func TestServeDefaults(t *testing.T) {
	tests := []struct {
		name       string
		h          http.Handler
		wantStatus int
		wantHeader http.Header
		wantError  string
	}{
		{"no write", http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), 200, http.Header{}, ""},
		{"explicit content type kept", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte("{}"))
		}), 200, http.Header{"Content-Type": {"application/json"}}, ""},
		{"second WriteHeader ignored", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(404)
			w.WriteHeader(500)
		}), 404, http.Header{}, ""},
		{"panic", http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") }), 500, nil, "panic: boom"},
		{"no handler", nil, 500, nil, "no handler registered: call nimbus.Handle or nimbus.HandleFunc from init"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := roundTrip(t, tt.h, &wire.Request{Method: "GET", Path: "/"})
			if resp.Status != tt.wantStatus || resp.Error != tt.wantError {
				t.Fatalf("got %d %q, want %d %q", resp.Status, resp.Error, tt.wantStatus, tt.wantError)
			}
			if tt.wantHeader != nil && !reflect.DeepEqual(http.Header(resp.Header), tt.wantHeader) && !(len(resp.Header) == 0 && len(tt.wantHeader) == 0) {
				t.Fatalf("header %v, want %v", resp.Header, tt.wantHeader)
			}
		})
	}
}

func TestServeBadInput(t *testing.T) {
	resp, err := wire.DecodeResponse(serve(http.NotFoundHandler(), []byte("garbage"), nil))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Error == "" {
		t.Fatal("garbage request did not produce an error response")
	}
}

func TestCodeError(t *testing.T) {
	tests := []struct {
		code int32
		want error
	}{
		{wire.CodeOK, nil},
		{wire.CodeDenied, ErrDenied},
		{wire.CodeBadArgument, ErrBadArgument},
		{wire.CodeTooLarge, ErrTooLarge},
		{wire.CodeUnavailable, ErrUnavailable},
		{99, ErrHost},
	}
	for _, tt := range tests {
		err := codeError("log", "log", tt.code)
		if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
			t.Errorf("code %d: err %v, want %v", tt.code, err, tt.want)
		}
	}
}

func TestLogOutsideWasm(t *testing.T) {
	if err := Logf(LevelInfo, "hello %d", 1); err != nil {
		t.Fatal(err)
	}
}

// TestServeFreshResponse: the response writer is reused across requests,
// but a header or status one request set never reaches the next.
func TestServeFreshResponse(t *testing.T) {
	n := 0
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n++
		if n == 1 {
			w.Header().Set("X-Once", "yes")
			w.WriteHeader(http.StatusTeapot)
			w.Write([]byte("<html>first"))
			return
		}
		w.Write([]byte("second"))
	})
	first := roundTrip(t, h, &wire.Request{Method: "GET", Path: "/"})
	second := roundTrip(t, h, &wire.Request{Method: "GET", Path: "/"})
	if first.Status != http.StatusTeapot || first.Header["X-Once"] == nil || first.Header["Content-Type"][0] != "text/html; charset=utf-8" {
		t.Fatalf("first response %d %v", first.Status, first.Header)
	}
	if second.Status != http.StatusOK || second.Header["X-Once"] != nil || second.Header["Content-Type"][0] != "text/plain; charset=utf-8" || string(second.Body) != "second" {
		t.Errorf("second response %d %v %q: carries the first's state", second.Status, second.Header, second.Body)
	}
}
