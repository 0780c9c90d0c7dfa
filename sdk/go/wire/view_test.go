package wire

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// viewAsRequest turns a View into the Request DecodeRequest gives for the
// same bytes, to compare the two decoders.
func viewAsRequest(v *View) *Request {
	r := &Request{Method: v.Method, Path: v.Path, RawQuery: v.RawQuery, Host: v.Host, RemoteAddr: v.RemoteAddr,
		Route: v.Route, InvocationID: v.InvocationID, TraceParent: v.TraceParent, Body: v.Body}
	for _, f := range v.Header {
		if r.Header == nil {
			r.Header = map[string][]string{}
		}
		r.Header[f.Name] = append(r.Header[f.Name], f.Value)
	}
	for _, f := range v.Params {
		if r.Params == nil {
			r.Params = map[string]string{}
		}
		r.Params[f.Name] = f.Value
	}
	return r
}

// TestDecodeView: every field, a header's values in order, the body a
// copy (the input is reused for the next request), and the lists' arrays
// reused by the next decode, which leaves nothing of the first.
func TestDecodeView(t *testing.T) {
	in := EncodeRequest(nil, &Request{Method: "POST", Path: "/a/b", RawQuery: "q=1", Host: "h", RemoteAddr: "r:1",
		Route: "POST /a/{x}", InvocationID: "inv", TraceParent: "tp",
		Header: map[string][]string{"A": {"1"}, "B": {"2", "3"}}, Params: map[string]string{"x": "b"}, Body: []byte("body")})
	var v View
	if err := DecodeView(in, &v); err != nil {
		t.Fatal(err)
	}
	want := View{Method: "POST", Path: "/a/b", RawQuery: "q=1", Host: "h", RemoteAddr: "r:1", Route: "POST /a/{x}",
		InvocationID: "inv", TraceParent: "tp", Header: []Field{{"A", "1"}, {"B", "2"}, {"B", "3"}},
		Params: []Field{{"x", "b"}}, Body: []byte("body")}
	if !reflect.DeepEqual(v, want) {
		t.Fatalf("got %+v\nwant %+v", v, want)
	}
	v.Body[0] = 'B' // the handler's to change: no string sees it
	if v.Method != "POST" || v.TraceParent != "tp" || v.Params[0].Value != "b" {
		t.Fatalf("a write to Body changed a string: %+v", v)
	}
	kept := v.Body
	for i := range in {
		in[i] = 'X' // the host writes the next request over the buffer
	}
	if string(kept) != "Body" || v.Method != "POST" || v.Header[1].Value != "2" {
		t.Fatalf("the view aliases its input: %q %+v", kept, v)
	}
	header := v.Header
	if err := DecodeView(EncodeRequest(nil, &Request{Path: "/c"}), &v); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(v, View{Path: "/c", Header: header[:0], Params: v.Params[:0]}) || v.Body != nil {
		t.Fatalf("second decode left %+v", v)
	}
	if err := DecodeView([]byte{TagRequest, 0x05}, &v); !errors.Is(err, ErrMalformed) || v.Path != "" {
		t.Fatalf("malformed: %v, left %+v", err, v)
	}
}

// TestDecodeViewManyFields: a request with many fields and a length past
// one byte decodes as DecodeRequest does.
func TestDecodeViewManyFields(t *testing.T) {
	req := &Request{Method: "GET", Path: "/" + strings.Repeat("p", 300), Header: manyHeader(40), Params: map[string]string{"p": "1"}, Body: []byte("x")}
	var v View
	if err := DecodeView(EncodeRequest(nil, req), &v); err != nil {
		t.Fatal(err)
	}
	if got := viewAsRequest(&v); !reflect.DeepEqual(got, req) {
		t.Fatalf("got %+v\nwant %+v", got, req)
	}
}

// TestAppendResponse: fields in the order given, repeated names as
// several values, and the same bytes DecodeResponse reads as
// EncodeResponse's.
func TestAppendResponse(t *testing.T) {
	b := AppendResponse(nil, 201, []Field{{"X-B", "1"}, {"X-A", "2"}, {"X-B", "3"}}, []byte("hi"))
	r, err := DecodeResponse(b)
	if err != nil {
		t.Fatal(err)
	}
	want := &Response{Status: 201, Header: map[string][]string{"X-A": {"2"}, "X-B": {"1", "3"}}, Body: []byte("hi")}
	if !reflect.DeepEqual(r, want) {
		t.Fatalf("got %+v, want %+v", r, want)
	}
	if r, err := DecodeResponse(AppendResponse(nil, 0, nil, nil)); err != nil || r.Status != 200 || r.Header != nil || r.Body != nil {
		t.Fatalf("empty response: %+v %v", r, err)
	}
}

// FuzzDecodeView: DecodeView accepts exactly what DecodeRequest accepts,
// with the same content, and never panics.
func FuzzDecodeView(f *testing.F) {
	f.Add(EncodeRequest(nil, &Request{Method: "GET", Path: "/", Header: map[string][]string{"A": {"b", "c"}}, Params: map[string]string{"x": "y"}, Body: []byte("hi")}))
	f.Add(EncodeRequest(nil, &Request{Header: manyHeader(30)}))
	f.Add([]byte{TagRequest})
	f.Add([]byte{TagResponse, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var v View
		err := DecodeView(b, &v)
		r, rerr := DecodeRequest(b)
		if (err == nil) != (rerr == nil) {
			t.Fatalf("DecodeView: %v, DecodeRequest: %v", err, rerr)
		}
		if err != nil {
			return
		}
		got := viewAsRequest(&v)
		// Parameters repeated on the wire: the map keeps the last, as
		// DecodeRequest's does.
		if !reflect.DeepEqual(got, r) {
			t.Fatalf("DecodeView %+v, DecodeRequest %+v", got, r)
		}
	})
}

func BenchmarkDecodeView(b *testing.B) {
	in := EncodeRequest(nil, benchRequest)
	var v View
	b.ReportAllocs()
	for b.Loop() {
		if err := DecodeView(in, &v); err != nil {
			b.Fatal(err)
		}
	}
}
