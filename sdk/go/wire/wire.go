package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
)

// Message tags: the first byte of every encoded message.
const (
	TagRequest  byte = 0x01
	TagResponse byte = 0x02
)

// Export and import names of ABI version 1 (see the package documentation).
const (
	ExportMarker = "nimbus_abi_v1"
	ExportAlloc  = "nimbus_alloc"
	ExportHandle = "nimbus_handle"
	// ExportReuse is optional (see the package documentation, "One
	// request"): the buffer nimbus_alloc returns may be reused.
	ExportReuse = "nimbus_reuse_request_buffer"
	HostModule  = "nimbus"
)

// Status codes returned by host functions.
const (
	CodeOK          int32 = 0
	CodeDenied      int32 = 1
	CodeBadArgument int32 = 2
	CodeTooLarge    int32 = 3
	CodeUnavailable int32 = 4
	CodeInternal    int32 = 5
)

// Log levels of the log host function.
const (
	LevelDebug int32 = 0
	LevelInfo  int32 = 1
	LevelWarn  int32 = 2
	LevelError int32 = 3
)

// ErrMalformed is returned (wrapped) by the decoders for bytes that are not a
// valid message.
var ErrMalformed = errors.New("wire: malformed message")

// Request is one invocation as it crosses into the guest.
type Request struct {
	Method       string
	Path         string
	RawQuery     string
	Host         string
	RemoteAddr   string
	Route        string
	InvocationID string
	TraceParent  string
	// Header has the shape of net/http.Header (convertible to it).
	Header map[string][]string
	Params map[string]string
	Body   []byte
}

// Response is what the guest answers.
type Response struct {
	// Status is the HTTP status; 0 means 200.
	Status int
	// Error is non-empty when the guest failed to serve the request.
	Error  string
	Header map[string][]string
	Body   []byte
}

// EncodeRequest appends the encoding of r to dst and returns the result.
func EncodeRequest(dst []byte, r *Request) []byte {
	dst = append(dst, TagRequest)
	for _, s := range [...]string{r.Method, r.Path, r.RawQuery, r.Host, r.RemoteAddr, r.Route, r.InvocationID, r.TraceParent} {
		dst = appendString(dst, s)
	}
	dst = appendHeader(dst, r.Header)
	dst = binary.AppendUvarint(dst, uint64(len(r.Params)))
	for _, k := range sortedKeys(r.Params) {
		dst = appendString(dst, k)
		dst = appendString(dst, r.Params[k])
	}
	return appendBytes(dst, r.Body)
}

// EncodeResponse appends the encoding of r to dst and returns the result.
func EncodeResponse(dst []byte, r *Response) []byte {
	dst = append(dst, TagResponse)
	status := r.Status
	if status < 0 {
		status = 0
	}
	dst = binary.AppendUvarint(dst, uint64(status))
	dst = appendString(dst, r.Error)
	dst = appendHeader(dst, r.Header)
	return appendBytes(dst, r.Body)
}

// DecodeRequest decodes a request. It never panics, and it allocates at most
// a small multiple of len(b): every length is checked against what remains
// before anything is allocated. The returned Body aliases b.
func DecodeRequest(b []byte) (*Request, error) {
	r := &Request{}
	params, err := DecodeRequestInto(b, r, nil)
	if err != nil {
		return nil, err
	}
	if len(params) > 0 {
		r.Params = make(map[string]string, len(params)/2)
		for i := 0; i < len(params); i += 2 {
			r.Params[params[i]] = params[i+1]
		}
	}
	return r, nil
}

// DecodeRequestInto is DecodeRequest into *r (overwriting every field),
// for a caller that reuses one Request: it leaves r.Params nil and appends
// the parameters to params as name, value pairs instead, and returns it.
// Its strings share one allocation; Body aliases b.
func DecodeRequestInto(b []byte, r *Request, params []string) ([]string, error) {
	// One pass notes where each string is; the strings are then cut from
	// one copy of everything before the body. A request with more strings
	// than fit here, or a malformed one, takes the two-pass way below.
	var buf [48]span
	if sp, nh, body, ok := scanRequest(b, buf[:0]); ok {
		return buildRequest(b, sp, nh, body, r, params), nil
	}
	return decodeRequestTwoPass(b, r, params)
}

// decodeRequestTwoPass is DecodeRequestInto for any request: a first pass
// finds where the body starts, the second decodes.
func decodeRequestTwoPass(b []byte, r *Request, params []string) ([]string, error) {
	d := decoder{b: b, s: requestArena(b)}
	if d.byte() != TagRequest && d.err == nil {
		d.fail("not a request")
	}
	// Calls in a composite literal run left to right: the wire's order.
	*r = Request{
		Method: d.string(), Path: d.string(), RawQuery: d.string(), Host: d.string(),
		RemoteAddr: d.string(), Route: d.string(), InvocationID: d.string(), TraceParent: d.string(),
		Header: d.header(),
	}
	n := d.count()
	for i := 0; i < n && d.err == nil; i++ {
		params = append(params, d.string(), d.string())
	}
	r.Body = d.bytes()
	if err := d.finish(); err != nil {
		*r = Request{}
		return params[:0], err
	}
	return params, nil
}

// span is where a string is in an encoded message.
type span struct{ off, n int32 }

// scanRequest notes the spans of a request's strings in sp (its 8 fields,
// then the header's names and values, then the parameters'), and the span
// of the body's length and bytes. ok is false for a malformed request or
// one with more strings than cap(sp).
func scanRequest(b []byte, sp []span) (_ []span, nh int, body span, ok bool) {
	if len(b) == 0 || b[0] != TagRequest || len(b) > 1<<31-1 {
		return nil, 0, span{}, false
	}
	d := decoder{b: b, off: 1}
	for range 8 {
		n := d.length()
		sp = append(sp, span{int32(d.off), int32(n)})
		d.off += n
	}
	nh = d.count()
	if 8+2*nh > cap(sp) {
		return nil, 0, span{}, false
	}
	for range 2 * nh {
		n := d.length()
		sp = append(sp, span{int32(d.off), int32(n)})
		d.off += n
	}
	np := d.count()
	if len(sp)+2*np > cap(sp) {
		return nil, 0, span{}, false
	}
	for range 2 * np {
		n := d.length()
		sp = append(sp, span{int32(d.off), int32(n)})
		d.off += n
	}
	at := d.off
	n := d.length()
	d.off += n
	if d.err != nil || d.off != len(b) {
		return nil, 0, span{}, false
	}
	return sp, nh, span{int32(at), int32(n)}, true
}

// buildRequest is DecodeRequestInto of a request scanRequest accepted.
func buildRequest(b []byte, sp []span, nh int, body span, r *Request, params []string) []string {
	arena := string(b[:body.off])
	var f [8]string
	for i := range f {
		if s := sp[i]; s.n > 0 {
			f[i] = arena[s.off : s.off+s.n]
		}
	}
	*r = Request{
		Method: f[0], Path: f[1], RawQuery: f[2], Host: f[3],
		RemoteAddr: f[4], Route: f[5], InvocationID: f[6], TraceParent: f[7],
	}
	if nh > 0 {
		r.Header = make(map[string][]string, nh)
		vals := make([]string, nh)
		for i, s := range sp[8 : 8+2*nh] {
			if s.n > 0 {
				f[i&1] = arena[s.off : s.off+s.n]
			} else {
				f[i&1] = ""
			}
			if i&1 == 1 {
				addHeader(r.Header, vals, i/2, f[0], f[1])
			}
		}
	}
	for _, s := range sp[8+2*nh:] {
		v := ""
		if s.n > 0 {
			v = arena[s.off : s.off+s.n]
		}
		params = append(params, v)
	}
	if body.n > 0 { // the body is the message's end
		r.Body = b[len(b)-int(body.n) : len(b) : len(b)]
	}
	return params
}

// addHeader adds the i-th name and value of a header to h: a name's first
// value gets a one-element slice of vals (full, so an append copies).
func addHeader(h map[string][]string, vals []string, i int, k, v string) {
	if vs, ok := h[k]; ok || i >= len(vals) {
		h[k] = append(vs, v)
		return
	}
	vals[i] = v
	h[k] = vals[i : i+1 : i+1]
}

// DecodeResponse decodes a response with the same guarantees as
// DecodeRequest. The returned Body aliases b.
func DecodeResponse(b []byte) (*Response, error) {
	d := decoder{b: b, s: responseArena(b)}
	if d.byte() != TagResponse && d.err == nil {
		d.fail("not a response")
	}
	r := &Response{}
	st := d.uvarint()
	if st != 0 && (st < 100 || st > 999) && d.err == nil {
		d.fail(fmt.Sprintf("status %d out of range", st))
	}
	r.Status = int(st)
	if r.Status == 0 {
		r.Status = 200
	}
	r.Error = d.string()
	r.Header = d.header()
	r.Body = d.bytes()
	if err := d.finish(); err != nil {
		return nil, err
	}
	return r, nil
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func appendBytes(dst, b []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

func appendHeader(dst []byte, h map[string][]string) []byte {
	// A response's header has zero or one name more often than not: those
	// need no sort. (In a Go guest compiled to wasm, a map iteration, a
	// lookup and clearing a keys array each cost hundreds of nanoseconds.)
	switch len(h) {
	case 0:
		return append(dst, 0)
	case 1:
		for k, vs := range h {
			dst = appendValues(binary.AppendUvarint(dst, uint64(len(vs))), k, vs)
		}
		return dst
	}
	if len(h) > 8 {
		keys := sortedKeys(h)
		n := 0
		for _, k := range keys {
			n += len(h[k])
		}
		dst = binary.AppendUvarint(dst, uint64(n))
		for _, k := range keys {
			dst = appendValues(dst, k, h[k])
		}
		return dst
	}
	// A few names: sorted by insertion with their values, so no second
	// lookup, in an array on the stack.
	var small [8]headerField
	fields := small[:0]
	n := 0
	for k, vs := range h {
		n += len(vs)
		i := len(fields)
		fields = fields[:i+1]
		for ; i > 0 && fields[i-1].k > k; i-- {
			fields[i] = fields[i-1]
		}
		fields[i] = headerField{k, vs}
	}
	dst = binary.AppendUvarint(dst, uint64(n))
	for _, f := range fields {
		dst = appendValues(dst, f.k, f.vs)
	}
	return dst
}

type headerField struct {
	k  string
	vs []string
}

func appendValues(dst []byte, k string, vs []string) []byte {
	for _, v := range vs {
		dst = appendString(dst, k)
		dst = appendString(dst, v)
	}
	return dst
}

// sortedKeys makes encodings deterministic (equal messages, equal bytes).
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// decoder reads from b; after the first error every read returns a zero value
// and err keeps the first error.
type decoder struct {
	b   []byte
	off int
	err error
	// s, when not empty, is string(b[:len(s)]): strings within it are
	// taken from it, so decoding a message's strings allocates once (a Go
	// guest's allocator is slow).
	s string
}

// requestArena returns the strings part of an encoded request (everything
// before the body) as one string, or "" if b is malformed.
func requestArena(b []byte) string {
	d := decoder{b: b}
	d.byte()
	for range 8 {
		d.skip()
	}
	d.skipPairs()
	d.skipPairs()
	return d.arena()
}

// responseArena is requestArena for a response.
func responseArena(b []byte) string {
	d := decoder{b: b}
	d.byte()
	d.uvarint()
	d.skip()
	d.skipPairs()
	return d.arena()
}

func (d *decoder) skip() { d.off += d.length() }

func (d *decoder) skipPairs() {
	for n := d.count(); n > 0 && d.err == nil; n-- {
		d.skip()
		d.skip()
	}
}

func (d *decoder) arena() string {
	if d.err != nil {
		return ""
	}
	return string(d.b[:d.off])
}

func (d *decoder) fail(why string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s at byte %d", ErrMalformed, why, d.off)
	}
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	if d.off >= len(d.b) {
		d.fail("unexpected end")
		return 0
	}
	c := d.b[d.off]
	d.off++
	return c
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.off += n
	return v
}

// length reads a length and checks it against the bytes that remain.
func (d *decoder) length() int {
	// Most lengths fit in one byte: read those without binary.Uvarint
	// (calls and bounds checks are dear in a Go guest compiled to wasm).
	if d.err == nil && d.off < len(d.b) && d.b[d.off] < 0x80 {
		v := int(d.b[d.off])
		d.off++
		if v > len(d.b)-d.off {
			d.fail("length past end")
			return 0
		}
		return v
	}
	v := d.uvarint()
	if d.err != nil {
		return 0
	}
	if v > uint64(len(d.b)-d.off) {
		d.fail("length past end")
		return 0
	}
	return int(v)
}

// count reads an element count; every element takes at least two bytes (two
// empty strings), so a count above half of what remains is a lie.
func (d *decoder) count() int {
	v := d.uvarint()
	if d.err != nil {
		return 0
	}
	if v > uint64(len(d.b)-d.off)/2 {
		d.fail("count past end")
		return 0
	}
	return int(v)
}

func (d *decoder) bytes() []byte {
	n := d.length()
	if d.err != nil || n == 0 {
		return nil
	}
	b := d.b[d.off : d.off+n : d.off+n]
	d.off += n
	return b
}

func (d *decoder) string() string {
	n := d.length()
	if d.err != nil || n == 0 {
		return ""
	}
	var s string
	if d.off+n <= len(d.s) {
		s = d.s[d.off : d.off+n]
	} else {
		s = string(d.b[d.off : d.off+n])
	}
	d.off += n
	return s
}

func (d *decoder) header() map[string][]string {
	n := d.count()
	if d.err != nil || n == 0 {
		return nil
	}
	h := make(map[string][]string, min(n, 64))
	// One array holds every value; a name's first value gets a
	// one-element slice of it (full, so an append copies).
	vals := make([]string, min(n, 64))
	for i := 0; i < n && d.err == nil; i++ {
		k := d.string()
		v := d.string()
		if d.err != nil {
			break
		}
		addHeader(h, vals, i, k, v)
	}
	return h
}

func (d *decoder) finish() error {
	if d.err == nil && d.off != len(d.b) {
		d.fail("trailing bytes")
	}
	return d.err
}

func appendUvarint(dst []byte, v uint64) []byte { return binary.AppendUvarint(dst, v) }
