package wire

import (
	"encoding/binary"
	"slices"
	"unsafe"
)

// Field is one header or path parameter: a name and one value.
type Field struct{ Name, Value string }

// View is a decoded request without maps, for a guest that reads a
// request's fields in place: its header and parameters are lists in wire
// order, and decoding one costs one allocation (a copy of the message)
// however many fields it has. The Go SDK's Request handlers are served from it.
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
// arrays. The strings and Body share one copy of the message: nothing in v
// aliases b, and a handler that writes to Body changes no string (they
// point before the body). It never panics; a malformed message leaves v
// empty (its arrays kept) and returns an error wrapping ErrMalformed.
func DecodeView(b []byte, v *View) error {
	header, params := v.Header[:0], v.Params[:0]
	if len(b) < 2 || b[0] != TagRequest {
		return decodeViewSlow(b, v, header, params)
	}
	// One pass over a copy that no one writes to before the body: its
	// strings can be cut from it in place.
	c := make([]byte, len(b))
	copy(c, b)
	d := viewDecoder{decoder{b: c, off: 1}}
	var f [8]string
	d.strs(f[:])
	header = d.fields(header)
	params = d.fields(params)
	n := d.length()
	if d.err != nil || d.off+n != len(c) { // the body is the message's end
		return decodeViewSlow(b, v, header[:0], params[:0]) // says what is wrong
	}
	*v = View{Method: f[0], Path: f[1], RawQuery: f[2], Host: f[3], RemoteAddr: f[4],
		Route: f[5], InvocationID: f[6], TraceParent: f[7], Header: header, Params: params}
	if n > 0 {
		v.Body = c[d.off : d.off+n : d.off+n]
	}
	return nil
}

// viewDecoder reads the strings of a message that no one writes to, in
// place; its decoder checks lengths and counts as DecodeRequest's does.
type viewDecoder struct{ decoder }

// strs fills dst with the next len(dst) strings, in place. A length under
// 128 (one byte) takes the short way, written out here: calls are dear in
// a Go guest compiled to wasm.
func (d *viewDecoder) strs(dst []string) {
	for i := range dst {
		o := d.off
		if o+1 < len(d.b) {
			if n := int(d.b[o]); n < 0x80 && o+n < len(d.b) {
				d.off = o + 1 + n
				dst[i] = unsafe.String(&d.b[o+1], n)
				continue
			}
		}
		dst[i] = d.strLong()
	}
}

// fields appends the next list of fields (a count, then name and value
// strings) to list.
func (d *viewDecoder) fields(list []Field) []Field {
	n := d.count()
	if n == 0 {
		return list
	}
	at := len(list)
	list = slices.Grow(list, n)[:at+n]
	// A Field is two strings: the new ones are filled as 2n strings.
	d.strs(unsafe.Slice((*string)(unsafe.Pointer(&list[at])), 2*n))
	return list
}

// strLong is strs's string for a longer length, or a malformed one.
func (d *viewDecoder) strLong() string {
	n := d.length()
	if d.err != nil || n == 0 {
		return ""
	}
	s := unsafe.String(&d.b[d.off], n)
	d.off += n
	return s
}

// decodeViewSlow is DecodeView with the decoder of DecodeRequest, for a
// message the one pass refused: it names what is wrong.
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
		dst = appendShort(dst, f.Name)
		dst = appendShort(dst, f.Value)
	}
	return appendBytes(dst, body)
}

// appendShort is appendString, without a call for a length under 128.
func appendShort(dst []byte, s string) []byte {
	if len(s) < 0x80 {
		return append(append(dst, byte(len(s))), s...)
	}
	return appendString(dst, s)
}
