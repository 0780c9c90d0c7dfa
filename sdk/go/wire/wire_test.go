package wire

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
)

func TestRequestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		req  Request
	}{
		{"empty", Request{}},
		{"full", Request{
			Method: "POST", Path: "/users/42", RawQuery: "a=1&b=2", Host: "example.com",
			RemoteAddr: "127.0.0.1:5555", Route: "POST /users/{id}", InvocationID: "inv-1",
			TraceParent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
			Header:      map[string][]string{"Accept": {"a", "b"}, "X-Empty": {""}},
			Params:      map[string]string{"id": "42", "": "empty-key"},
			Body:        []byte("hello\x00world"),
		}},
		{"binary body", Request{Method: "PUT", Body: bytes.Repeat([]byte{0xff, 0}, 1000)}},
		{"more strings than one pass notes", Request{Method: "GET", Header: manyHeader(30), Params: map[string]string{"a": "1", "b": strings.Repeat("x", 200)}, Body: []byte("b")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := EncodeRequest(nil, &tt.req)
			got, err := DecodeRequest(b)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !reflect.DeepEqual(*got, tt.req) {
				t.Fatalf("round trip:\n got %#v\nwant %#v", *got, tt.req)
			}
			if b2 := EncodeRequest(nil, got); !bytes.Equal(b, b2) {
				t.Fatal("encoding is not deterministic")
			}
		})
	}
}

func TestResponseRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		resp Response
	}{
		{"ok", Response{Status: 200}},
		{"full", Response{Status: 404, Header: map[string][]string{"Content-Type": {"text/plain"}, "Set-Cookie": {"a=1", "b=2"}}, Body: []byte("not found")}},
		{"error", Response{Status: 500, Error: "panic: boom"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeResponse(EncodeResponse(nil, &tt.resp))
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !reflect.DeepEqual(*got, tt.resp) {
				t.Fatalf("round trip:\n got %#v\nwant %#v", *got, tt.resp)
			}
		})
	}
}

func TestResponseZeroStatusMeans200(t *testing.T) {
	got, err := DecodeResponse(EncodeResponse(nil, &Response{}))
	if err != nil || got.Status != 200 {
		t.Fatalf("got %v, %v; want status 200", got, err)
	}
}

func TestDecodeRejects(t *testing.T) {
	valid := EncodeResponse(nil, &Response{Status: 201, Body: []byte("x")})
	tests := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"wrong tag", EncodeRequest(nil, &Request{})},
		{"truncated", valid[:len(valid)-1]},
		{"trailing", append(append([]byte{}, valid...), 0)},
		{"status out of range", []byte{TagResponse, 5, 0, 0, 0}},
		{"huge length", []byte{TagResponse, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}},
		{"huge count", []byte{TagResponse, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f}},
		{"bad varint", []byte{TagResponse, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := DecodeResponse(tt.b); !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
		})
	}
	if _, err := DecodeRequest(valid); !errors.Is(err, ErrMalformed) {
		t.Fatalf("request decoder accepted a response: %v", err)
	}
}

// FuzzDecode feeds hostile bytes to both decoders: they must not panic, must
// not allocate beyond the input's size, and what they accept must re-encode
// to something that decodes to the same message.
func FuzzDecode(f *testing.F) {
	f.Add(EncodeRequest(nil, &Request{Method: "GET", Path: "/", Header: map[string][]string{"A": {"b"}}, Params: map[string]string{"x": "y"}, Body: []byte("hi")}))
	f.Add(EncodeResponse(nil, &Response{Status: 404, Error: "e", Header: map[string][]string{"A": {"b", "c"}}, Body: []byte("body")}))
	f.Add([]byte{TagRequest})
	f.Add([]byte{TagResponse, 0x80})
	f.Add([]byte{TagResponse, 0, 0, 0xff, 0xff, 0x03, 0, 0})
	f.Add(EncodeRequest(nil, &Request{Header: manyHeader(30)}))
	f.Fuzz(func(t *testing.T, b []byte) {
		// The one-pass decoder agrees with the two-pass one.
		var r1, r2 Request
		p1, err1 := DecodeRequestInto(b, &r1, nil)
		p2, err2 := decodeRequestTwoPass(b, &r2, nil)
		if (err1 == nil) != (err2 == nil) || err1 != nil && err1.Error() != err2.Error() || !reflect.DeepEqual(r1, r2) || !reflect.DeepEqual(p1, p2) {
			t.Fatalf("DecodeRequestInto %+v %q %v, two passes %+v %q %v", r1, p1, err1, r2, p2, err2)
		}
		if r, err := DecodeRequest(b); err == nil {
			r2, err := DecodeRequest(EncodeRequest(nil, r))
			if err != nil || !reflect.DeepEqual(r, r2) {
				t.Fatalf("request re-encode mismatch: %v", err)
			}
		}
		if r, err := DecodeResponse(b); err == nil {
			if len(r.Body) > len(b) {
				t.Fatal("body longer than input")
			}
			r2, err := DecodeResponse(EncodeResponse(nil, r))
			if err != nil || !reflect.DeepEqual(r, r2) {
				t.Fatalf("response re-encode mismatch: %v", err)
			}
		}
	})
}

func BenchmarkEncodeDecodeRequest(b *testing.B) {
	req := &Request{Method: "GET", Path: "/hello/world", Header: map[string][]string{"Accept": {"*/*"}, "User-Agent": {"bench"}}, Params: map[string]string{"name": "world"}}
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = EncodeRequest(buf[:0], req)
		if _, err := DecodeRequest(buf); err != nil {
			b.Fatal(err)
		}
	}
}

func TestKeys(t *testing.T) {
	for _, keys := range [][]string{nil, {""}, {"a"}, {"orders.1", "orders.2", strings.Repeat("k", 300)}} {
		b := AppendKeys(nil, keys)
		if len(b) != KeysSize(keys) {
			t.Fatalf("KeysSize %d, encoded %d", KeysSize(keys), len(b))
		}
		got, err := DecodeKeys(b)
		if err != nil || !reflect.DeepEqual(got, keys) && !(len(got) == 0 && len(keys) == 0) {
			t.Fatalf("round trip %q: %q %v", keys, got, err)
		}
	}
	for _, b := range [][]byte{{}, {1}, {2, 0}, {1, 5, 'a'}, {0, 0}, {0xff}} {
		if _, err := DecodeKeys(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("DecodeKeys(%x): %v, want ErrMalformed", b, err)
		}
	}
}

func FuzzDecodeKeys(f *testing.F) {
	f.Add(AppendKeys(nil, []string{"a", "bb"}))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, err := DecodeKeys(b)
		if err != nil {
			return
		}
		total := 0
		for _, k := range keys {
			total += len(k)
		}
		if total > len(b) {
			t.Fatal("keys longer than input")
		}
		again, err := DecodeKeys(AppendKeys(nil, keys))
		if err != nil || len(again) != len(keys) || len(keys) > 0 && !reflect.DeepEqual(again, keys) {
			t.Fatalf("re-encode mismatch: %q %q %v", keys, again, err)
		}
	})
}

// TestDecodeRequestInto: decoding into a reused Request overwrites every
// field, returns the parameters as pairs, and a value appended to a
// decoded header does not show through in another name's values.
func TestDecodeRequestInto(t *testing.T) {
	var r Request
	params, err := DecodeRequestInto(EncodeRequest(nil, &Request{Method: "POST", Path: "/a", Header: map[string][]string{"A": {"1"}, "B": {"2", "3"}}, Params: map[string]string{"x": "1", "y": "2"}, Body: []byte("b")}), &r, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Method != "POST" || r.Path != "/a" || string(r.Body) != "b" || !reflect.DeepEqual(params, []string{"x", "1", "y", "2"}) {
		t.Fatalf("got %+v %q", r, params)
	}
	r.Header["A"] = append(r.Header["A"], "appended")
	if !reflect.DeepEqual(r.Header["B"], []string{"2", "3"}) {
		t.Fatalf("B = %q after an append to A", r.Header["B"])
	}
	params, err = DecodeRequestInto(EncodeRequest(nil, &Request{Path: "/b"}), &r, params[:0])
	if err != nil {
		t.Fatal(err)
	}
	if r.Method != "" || r.Path != "/b" || r.Header != nil || r.Body != nil || len(params) != 0 {
		t.Fatalf("second decode left %+v %q", r, params)
	}
}

// benchRequest is a request as the gateway sends it for wrk's GET.
var benchRequest = &Request{
	Method: "GET", Path: "/hello/bench", Host: "127.0.0.1:8080", RemoteAddr: "127.0.0.1:4242",
	Route: "GET /hello/{name}", InvocationID: "0123456789abcdef0123456789", TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
	Header: map[string][]string{"User-Agent": {"wrk"}, "Accept": {"*/*"}},
	Params: map[string]string{"name": "bench"},
}

func BenchmarkDecodeRequestInto(b *testing.B) {
	in := EncodeRequest(nil, benchRequest)
	var r Request
	var params []string
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if params, err = DecodeRequestInto(in, &r, params[:0]); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeResponse(b *testing.B) {
	resp := &Response{Status: 200, Header: map[string][]string{"Content-Type": {"text/plain; charset=utf-8"}}, Body: []byte("hello, bench\n")}
	var out []byte
	b.ReportAllocs()
	for b.Loop() {
		out = EncodeResponse(out[:0], resp)
	}
}

// manyHeader is a header of n names, the second of them with two values.
func manyHeader(n int) map[string][]string {
	h := map[string][]string{}
	for i := range n {
		h[fmt.Sprintf("X-H%d", i)] = []string{fmt.Sprint(i)}
	}
	h["X-H1"] = append(h["X-H1"], "again")
	return h
}

// TestHeaderEncodingSorted: a header's fields are encoded in name order
// whatever the map's order, on each of appendHeader's ways (one name, a
// few sorted on the stack, many).
func TestHeaderEncodingSorted(t *testing.T) {
	for _, n := range []int{1, 2, 3, 8, 9, 20} {
		h := manyHeader(n)
		if n == 1 {
			h = map[string][]string{"X-One": {"a", "b"}}
		}
		names := make([]string, 0, len(h))
		count := 0
		for k, vs := range h {
			names = append(names, k)
			count += len(vs)
		}
		sort.Strings(names)
		want := appendUvarint(nil, uint64(count))
		for _, k := range names {
			for _, v := range h[k] {
				want = appendString(appendString(want, k), v)
			}
		}
		for range 10 { // map order varies from one iteration to the next
			if got := appendHeader(nil, h); !bytes.Equal(got, want) {
				t.Fatalf("%d names: encoded %q, want %q", n, got, want)
			}
		}
	}
}
