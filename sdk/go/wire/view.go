package wire

import (
	"encoding/binary"
)

// Field is one header or path parameter: a name and one value.
type Field struct{ Name, Value string }

// View is a decoded request without maps, for a guest that reads a
// request's fields in place: its header and parameters are lists in wire
// order, and decoding one costs one allocation (two with a body) however
// many fields it has. The Go SDK's Request handlers are served from it.
type View struct {
	Method, Path, RawQuery, Host, RemoteAddr, Route, InvocationID, TraceParent string
	// Header holds every (name, value) pair in the order sent; a name with
	// several values appears once per value.
	Header []Field
	// Params are the route's path parameters.
	Params []Field
	// Body is a copy of the request's body, owned by the caller.
	Body []byte
}

// DecodeView decodes a request into v, reusing v.Header's and v.Params'
// arrays. The strings share one copy of the message, and Body is a copy
// too: nothing in v aliases b. It never panics; a malformed message
// leaves v empty (its arrays kept) and returns an error wrapping
// ErrMalformed.
func DecodeView(b []byte, v *View) error {
	header, params := v.Header[:0], v.Params[:0]
	var buf [48]span
	sp, nh, body, ok := scanRequest(b, buf[:0])
	if !ok {
		return decodeViewSlow(b, v, header, params)
	}
	arena := string(b[:body.off])
	var f [8]string
	for i := range f {
		if s := sp[i]; s.n > 0 {
			f[i] = arena[s.off : s.off+s.n]
		}
	}
	fields := sp[8:]
	for i := 0; i+1 < len(fields); i += 2 {
		fl := Field{cut(arena, fields[i]), cut(arena, fields[i+1])}
		if i < 2*nh {
			header = append(header, fl)
		} else {
			params = append(params, fl)
		}
	}
	*v = View{Method: f[0], Path: f[1], RawQuery: f[2], Host: f[3], RemoteAddr: f[4],
		Route: f[5], InvocationID: f[6], TraceParent: f[7], Header: header, Params: params}
	if body.n > 0 { // the body is the message's end
		v.Body = append([]byte(nil), b[len(b)-int(body.n):]...)
	}
	return nil
}

func cut(arena string, s span) string {
	if s.n == 0 {
		return ""
	}
	return arena[s.off : s.off+s.n]
}

// decodeViewSlow is DecodeView for a request with more fields than
// scanRequest notes, or a malformed one.
func decodeViewSlow(b []byte, v *View, header, params []Field) error {
	d := decoder{b: b, s: requestArena(b)}
	if d.byte() != TagRequest && d.err == nil {
		d.fail("not a request")
	}
	w := View{
		Method: d.string(), Path: d.string(), RawQuery: d.string(), Host: d.string(),
		RemoteAddr: d.string(), Route: d.string(), InvocationID: d.string(), TraceParent: d.string(),
	}
	for list := range 2 { // the header, then the parameters
		n := d.count()
		for i := 0; i < n && d.err == nil; i++ {
			fl := Field{d.string(), d.string()}
			if list == 0 {
				header = append(header, fl)
			} else {
				params = append(params, fl)
			}
		}
	}
	w.Header, w.Params = header, params
	if body := d.bytes(); len(body) > 0 {
		w.Body = append([]byte(nil), body...)
	}
	if err := d.finish(); err != nil {
		*v = View{Header: header[:0], Params: params[:0]}
		return err
	}
	*v = w
	return nil
}

// AppendResponse appends the encoding of a response (EncodeResponse's)
// whose header is a list of fields, in the order given.
func AppendResponse(dst []byte, status int, header []Field, body []byte) []byte {
	dst = append(dst, TagResponse)
	dst = binary.AppendUvarint(dst, uint64(max(status, 0)))
	dst = append(dst, 0) // no error
	dst = binary.AppendUvarint(dst, uint64(len(header)))
	for _, f := range header {
		dst = appendString(dst, f.Name)
		dst = appendString(dst, f.Value)
	}
	return appendBytes(dst, body)
}
