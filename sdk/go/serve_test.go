package nimbus

import (
	"bytes"
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

// detectSeeds start with every byte and hit the shortcut's edges: the
// mp4 and OpenType signatures that look past the start, and every
// control byte after a letter.
func detectSeeds() [][]byte {
	seeds := [][]byte{
		nil, []byte("hello, bench\n"), []byte("abcdftypisom0000"), []byte("abcdftyp"),
		append(append([]byte("a"), bytes.Repeat([]byte("x"), 33)...), "LP"...),
		append([]byte("a"), bytes.Repeat([]byte("x"), 600)...),
		append(append([]byte("a"), bytes.Repeat([]byte("x"), 600)...), 0),
		[]byte("wOFF0000"), []byte("ttcf"), []byte("<html>"), []byte(" <?xml"), []byte("{\"a\":1}"),
	}
	// Every signature of http.DetectContentType that starts with a
	// printable byte, completed with text where it masks bytes.
	for _, sig := range []string{
		"<!DOCTYPE HTML ", "<HTML ", "<!-- ", "<?xml", "%PDF-", "%!PS-Adobe-", "BM", "GIF87a", "GIF89a",
		"RIFFxxxxWEBPVP", "FORMxxxxAIFF", "ID3", "OggS\x00", "MThd\x00\x00\x00\x06", "RIFFxxxxAVI ", "RIFFxxxxWAVE",
		"OTTO", "ttcf", "wOFF", "wOF2", "PK\x03\x04", "Rar!\x1A\x07\x00", "Rar!\x1A\x07\x01\x00",
	} {
		seeds = append(seeds, []byte(sig), []byte(sig+" and some text"))
	}
	for c := range 256 {
		seeds = append(seeds, []byte{byte(c)}, []byte{'a', byte(c), 'b'}, []byte{byte(c), 'a', 'b', 'c', 'f', 't', 'y', 'p', 0, 0, 0, 0})
	}
	return seeds
}

func TestDetectContentType(t *testing.T) {
	for _, b := range detectSeeds() {
		if got, want := detectContentType(b), http.DetectContentType(b); got != want {
			t.Errorf("detectContentType(%q) = %q, http.DetectContentType says %q", b, got, want)
		}
	}
}

func FuzzDetectContentType(f *testing.F) {
	for _, b := range detectSeeds() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := detectContentType(b), http.DetectContentType(b); got != want {
			t.Errorf("detectContentType(%q) = %q, http.DetectContentType says %q", b, got, want)
		}
	})
}

// TestRequestKeptAfterReturn: net/http lets a handler keep its request;
// what the SDK allocates together or reuses must not leak the next
// request into a kept one.
func TestRequestKeptAfterReturn(t *testing.T) {
	var kept []*http.Request
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { kept = append(kept, r) })
	for _, name := range []string{"ann", "bob"} {
		roundTrip(t, h, &wire.Request{
			Method: "POST", Path: "/hello/" + name, RawQuery: "q=" + name, Host: "h.example", Route: "POST /hello/{name}",
			InvocationID: "inv-" + name, TraceParent: "00-" + name + "-01",
			Header: map[string][]string{"X-Who": {name}}, Params: map[string]string{"name": name}, Body: []byte("body of " + name),
		})
	}
	for i, name := range []string{"ann", "bob"} {
		r := kept[i]
		body, _ := io.ReadAll(r.Body)
		got := fmt.Sprintf("%s %s %s %s %s %s %s %s", r.URL.Path, r.URL.RawQuery, r.RequestURI, r.Header.Get("X-Who"), r.Header.Get("Traceparent"), InvocationID(r), r.PathValue("name"), body)
		want := fmt.Sprintf("/hello/%[1]s q=%[1]s /hello/%[1]s?q=%[1]s %[1]s 00-%[1]s-01 inv-%[1]s %[1]s body of %[1]s", name)
		if got != want {
			t.Errorf("kept request %d: %q, want %q", i, got, want)
		}
	}
}

// TestTraceparentHeader: the invocation's traceparent is the request's
// Traceparent header unless the request brought its own.
func TestTraceparentHeader(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%q", r.Header["Traceparent"])
	})
	for _, c := range []struct {
		header map[string][]string
		want   string
	}{
		{nil, `["00-inv-01"]`},
		{map[string][]string{"Accept": {"*/*"}}, `["00-inv-01"]`},
		{map[string][]string{"Traceparent": {""}}, `["00-inv-01"]`},
		{map[string][]string{"Traceparent": {"00-own-01"}}, `["00-own-01"]`},
	} {
		resp := roundTrip(t, h, &wire.Request{Method: "GET", Path: "/", TraceParent: "00-inv-01", Header: c.header})
		if string(resp.Body) != c.want {
			t.Errorf("header %v: Traceparent %s, want %s", c.header, resp.Body, c.want)
		}
	}
}
