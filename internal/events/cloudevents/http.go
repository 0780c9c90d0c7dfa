package cloudevents

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Defaults for Limits.
const (
	DefaultMaxEventBytes  = 1 << 20 // 1 MiB, NATS's default max_payload
	DefaultMaxBatchBytes  = 4 << 20 // 4 MiB
	DefaultMaxBatchEvents = 10_000
	DefaultMaxExtensions  = 64
)

// Media types of the JSON event format and the JSON batch format.
const (
	MediaTypeStructured = "application/cloudevents+json"
	MediaTypeBatch      = "application/cloudevents-batch+json"
)

// Limits bound what ReadRequest accepts. The zero value of a field means its
// default.
type Limits struct {
	// MaxEventBytes caps one event: the body in binary mode, the JSON
	// object in structured mode, each array element in batched mode.
	// Optional: default DefaultMaxEventBytes.
	MaxEventBytes int64
	// MaxBatchBytes caps the body of a batched request; it is raised to
	// MaxEventBytes if lower. Optional: default DefaultMaxBatchBytes.
	MaxBatchBytes int64
	// MaxBatchEvents caps the number of events in a batch. Optional:
	// default DefaultMaxBatchEvents.
	MaxBatchEvents int
	// MaxExtensions caps the extension attributes of one event. Optional:
	// default DefaultMaxExtensions.
	MaxExtensions int
}

func (l Limits) withDefaults() Limits {
	if l.MaxEventBytes <= 0 {
		l.MaxEventBytes = DefaultMaxEventBytes
	}
	if l.MaxBatchBytes <= 0 {
		l.MaxBatchBytes = DefaultMaxBatchBytes
	}
	l.MaxBatchBytes = max(l.MaxBatchBytes, l.MaxEventBytes)
	if l.MaxBatchEvents <= 0 {
		l.MaxBatchEvents = DefaultMaxBatchEvents
	}
	if l.MaxExtensions <= 0 {
		l.MaxExtensions = DefaultMaxExtensions
	}
	return l
}

// TooLargeError is returned when a request exceeds a limit; an HTTP server
// answers it with 413.
type TooLargeError struct {
	What  string // "request body", "event 3", "batch"
	Limit int64  // the limit that was exceeded, in bytes (events for "batch")
}

func (e *TooLargeError) Error() string {
	if e.What == "batch" {
		return fmt.Sprintf("cloudevents: batch has more than %d events; split it into smaller batches", e.Limit)
	}
	return fmt.Sprintf("cloudevents: %s is larger than the limit of %d bytes", e.What, e.Limit)
}

// ErrUnsupportedFormat is wrapped by the error ReadRequest returns for a
// CloudEvents media type it cannot read (application/cloudevents+xml, for
// instance); an HTTP server answers it with 415.
var ErrUnsupportedFormat = errors.New("unsupported event format")

// MalformedError is returned by ReadRequest when the request is not a
// valid CloudEvent (or batch of them); an HTTP server answers it with 400
// and the message. It wraps an *AttributeError, a *SyntaxError or
// ErrUnsupportedFormat.
type MalformedError struct {
	Index int // the event's position in a batch, or -1
	Err   error
}

func (e *MalformedError) Error() string {
	var b strings.Builder
	b.WriteString("cloudevents: ")
	if e.Index >= 0 {
		fmt.Fprintf(&b, "event %d: ", e.Index)
	}
	if t, ok := e.Err.(interface{ text() string }); ok {
		b.WriteString(t.text())
	} else {
		b.WriteString(strings.TrimPrefix(e.Err.Error(), "cloudevents: "))
	}
	return b.String()
}

func (e *MalformedError) Unwrap() error { return e.Err }

// requestError is a problem with the request as a whole rather than with
// one attribute; unsupported marks an event format or charset this package
// cannot read (ErrUnsupportedFormat).
type requestError struct {
	msg         string
	unsupported bool
}

func (e *requestError) Error() string { return e.msg }
func (e *requestError) text() string  { return e.msg }
func (e *requestError) Unwrap() error {
	if e.unsupported {
		return ErrUnsupportedFormat
	}
	return nil
}

func malformed(index int, err error) error {
	return &MalformedError{Index: index, Err: err}
}

// ReadRequest reads the events of an HTTP request in any content mode of the
// CloudEvents HTTP protocol binding, with default Limits except
// MaxEventBytes (0 means its default). See Limits.ReadRequest.
func ReadRequest(r *http.Request, maxEventBytes int64) ([]Event, Mode, error) {
	return Limits{MaxEventBytes: maxEventBytes}.ReadRequest(r)
}

// ReadRequest reads the events of an HTTP request. The mode follows from
// Content-Type: application/cloudevents+json is structured (one event),
// application/cloudevents-batch+json batched (zero or more events), another
// application/cloudevents* media type is refused with ErrUnsupportedFormat,
// and anything else is binary mode, which needs ce-* headers. Every event
// returned has passed Validate.
//
// Errors: *TooLargeError when a limit is exceeded (the body is not read past
// it), *MalformedError for anything wrong with the request, naming the
// attribute and, in a batch, the event's index; other errors come from
// reading the body.
func (l Limits) ReadRequest(r *http.Request) ([]Event, Mode, error) {
	l = l.withDefaults()
	ct := r.Header.Get("Content-Type")
	mt, params := mediaType(ct)
	switch {
	case strings.EqualFold(mt, MediaTypeStructured):
		if err := checkCharset(params); err != nil {
			return nil, Structured, err
		}
		body, err := readBody(r, l.MaxEventBytes, "request body")
		if err != nil {
			return nil, Structured, err
		}
		d := decoder{s: string(body), b: body, maxExt: l.MaxExtensions}
		ev := make([]Event, 1)
		if err := d.event(&ev[0]); err != nil {
			return nil, Structured, malformed(-1, err)
		}
		if d.ws(); d.i != len(d.s) {
			return nil, Structured, malformed(-1, d.syntax("unexpected %q after the event object", d.s[d.i]))
		}
		return ev, Structured, nil
	case strings.EqualFold(mt, MediaTypeBatch):
		if err := checkCharset(params); err != nil {
			return nil, Batched, err
		}
		body, err := readBody(r, l.MaxBatchBytes, "request body")
		if err != nil {
			return nil, Batched, err
		}
		ev, err := l.readBatch(body)
		return ev, Batched, err
	case hasPrefixFold(mt, "application/cloudevents"):
		return nil, 0, malformed(-1, &requestError{fmt.Sprintf(
			"unsupported event format %q: send binary mode (ce-* headers), %s (one event) or %s (a JSON array of events)",
			mt, MediaTypeStructured, MediaTypeBatch), true})
	}
	e, err := l.readBinary(r, ct)
	if err != nil {
		return nil, Binary, err
	}
	return []Event{e}, Binary, nil
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// checkCharset accepts a missing charset or UTF-8: the JSON formats are
// UTF-8 only.
func checkCharset(params string) error {
	for params != "" {
		var p string
		p, params, _ = strings.Cut(params, ";")
		name, v, _ := strings.Cut(p, "=")
		if !strings.EqualFold(strings.TrimSpace(name), "charset") {
			continue
		}
		v = strings.Trim(strings.TrimSpace(v), `"`)
		if !strings.EqualFold(v, "utf-8") && !strings.EqualFold(v, "utf8") {
			return malformed(-1, &requestError{fmt.Sprintf("unsupported charset %q: CloudEvents JSON is UTF-8; send charset=utf-8 or none", v), true})
		}
	}
	return nil
}

func (l Limits) readBatch(body []byte) ([]Event, error) {
	d := decoder{s: string(body), b: body, maxExt: l.MaxExtensions}
	if err := d.expect('['); err != nil {
		if d.i < len(d.s) {
			return nil, malformed(-1, d.syntax("a batch must be a JSON array of events"))
		}
		return nil, malformed(-1, err)
	}
	d.ws()
	if d.i < len(d.s) && d.s[d.i] == ']' {
		d.i++
		if d.ws(); d.i != len(d.s) {
			return nil, malformed(-1, d.syntax("unexpected %q after the batch", d.s[d.i]))
		}
		return []Event{}, nil
	}
	// Small events are ~150 bytes of JSON; the slice grows by appending
	// past this guess, never beyond what the input holds.
	events := make([]Event, 0, min(l.MaxBatchEvents, len(body)/128+1))
	for {
		if len(events) == l.MaxBatchEvents {
			return nil, &TooLargeError{What: "batch", Limit: int64(l.MaxBatchEvents)}
		}
		d.ws()
		start := d.i
		events = append(events, Event{})
		if err := d.event(&events[len(events)-1]); err != nil {
			return nil, malformed(len(events)-1, err)
		}
		if int64(d.i-start) > l.MaxEventBytes {
			return nil, &TooLargeError{What: fmt.Sprintf("event %d", len(events)-1), Limit: l.MaxEventBytes}
		}
		d.ws()
		if d.i >= len(d.s) {
			return nil, malformed(-1, d.syntax("unexpected end of input, expected ',' or ']'"))
		}
		if d.s[d.i] == ']' {
			d.i++
			break
		}
		if d.s[d.i] != ',' {
			return nil, malformed(-1, d.syntax("expected ',' or ']' after event %d, found %q", len(events)-1, d.s[d.i]))
		}
		d.i++
	}
	if d.ws(); d.i != len(d.s) {
		return nil, malformed(-1, d.syntax("unexpected %q after the batch", d.s[d.i]))
	}
	return events, nil
}

// readBinary reads a binary-mode event: attributes from ce-* headers,
// datacontenttype from Content-Type, data from the body.
func (l Limits) readBinary(r *http.Request, ct string) (Event, error) {
	var e Event
	found := false
	for k, vs := range r.Header {
		if !hasPrefixFold(k, "ce-") {
			continue
		}
		found = true
		if err := l.binaryHeader(&e, k, vs); err != nil {
			return Event{}, malformed(-1, err)
		}
	}
	if !found {
		return Event{}, malformed(-1, &requestError{msg: fmt.Sprintf(
			"not a CloudEvent: no ce-* headers and Content-Type %q; send binary mode (ce-specversion, ce-id, ce-source, ce-type headers) or Content-Type %s",
			ct, MediaTypeStructured)})
	}
	if vs := r.Header.Values("Content-Type"); len(vs) > 1 {
		return Event{}, malformed(-1, attrErr("datacontenttype", "Content-Type appears %d times; send it once", len(vs)))
	}
	e.DataContentType = strings.TrimSpace(ct)
	body, err := readBody(r, l.MaxEventBytes, "request body")
	if err != nil {
		return Event{}, err
	}
	if len(body) > 0 {
		e.Data = body[:len(body):len(body)]
	}
	if err := e.validate(); err != nil {
		return Event{}, malformed(-1, err)
	}
	return e, nil
}

func (l Limits) binaryHeader(e *Event, key string, vs []string) error {
	name := key[3:]
	if len(vs) != 1 {
		return attrErr(strings.ToLower(name), "header %s appears %d times; send each attribute once", key, len(vs))
	}
	core := ""
	for _, c := range [...]string{"specversion", "id", "source", "type", "subject", "dataschema", "time", "datacontenttype"} {
		if strings.EqualFold(name, c) {
			core = c
			break
		}
	}
	if core == "" {
		name = strings.ToLower(name)
	} else {
		name = core
	}
	v, err := decodeHeaderValue(vs[0])
	if err != nil {
		return attrErr(name, "header %s: %v", key, err)
	}
	switch name {
	case "specversion":
		e.SpecVersion = v
		return nil
	case "id":
		e.ID = v
		return nil
	case "source":
		e.Source = v
		return nil
	case "type":
		e.Type = v
		return nil
	case "datacontenttype":
		return attrErr(name, "in binary mode datacontenttype travels in the Content-Type header; remove the ce-datacontenttype header")
	}
	if core != "" && v == "" {
		return attrErr(name, "is empty: when present it must not be empty; leave the header out instead")
	}
	switch name {
	case "subject":
		e.Subject = v
	case "dataschema":
		e.DataSchema = v
	case "time":
		t, err := parseTime(v)
		if err != nil {
			return err
		}
		e.Time = t
	default:
		if err := checkExtensionName(name); err != nil {
			return err
		}
		if e.Extensions == nil {
			e.Extensions = make(map[string]string, 4)
		}
		if len(e.Extensions) >= l.MaxExtensions {
			return attrErr(name, "too many extensions: at most %d per event", l.MaxExtensions)
		}
		if _, dup := e.Extensions[name]; dup {
			// Two header keys that differ only in case, set directly in the map.
			return attrErr(name, "appears more than once; give each attribute once")
		}
		e.Extensions[name] = v
	}
	return nil
}

// decodeHeaderValue undoes the binding's header encoding (HTTP protocol
// binding 3.1.3.2): first RFC 7230 quoted strings, then one round of
// percent-decoding; the result must be valid UTF-8. A '%' not followed by
// two hex digits is kept as is, for senders that do not percent-encode
// (sdk-go v2 sends header values raw).
func decodeHeaderValue(v string) (string, error) {
	if strings.IndexByte(v, '"') < 0 && strings.IndexByte(v, '%') < 0 {
		if !utf8.ValidString(v) {
			return "", errors.New("not valid UTF-8")
		}
		return v, nil
	}
	unquoted := make([]byte, 0, len(v))
	for i := 0; i < len(v); i++ {
		if v[i] != '"' {
			unquoted = append(unquoted, v[i])
			continue
		}
		for i++; ; i++ {
			if i >= len(v) {
				return "", errors.New("unterminated quoted string")
			}
			if v[i] == '\\' && i+1 < len(v) {
				i++
			} else if v[i] == '"' {
				break
			}
			unquoted = append(unquoted, v[i])
		}
	}
	out := unquoted[:0] // decoding shrinks, so it can run in place
	for i := 0; i < len(unquoted); i++ {
		c := unquoted[i]
		if c == '%' && i+2 < len(unquoted) && isHex(unquoted[i+1]) && isHex(unquoted[i+2]) {
			c = unhex(unquoted[i+1])<<4 | unhex(unquoted[i+2])
			i += 2
		}
		out = append(out, c)
	}
	if !utf8.Valid(out) {
		return "", errors.New("percent-decodes to invalid UTF-8")
	}
	return string(out), nil
}

// encodeHeaderValue percent-encodes space, '"', '%' and every byte outside
// printable ASCII, as the HTTP protocol binding requires.
func encodeHeaderValue(v string) string {
	clean := true
	for i := 0; i < len(v); i++ {
		if needsPercent(v[i]) {
			clean = false
			break
		}
	}
	if clean {
		return v
	}
	b := make([]byte, 0, len(v)+16)
	for i := 0; i < len(v); i++ {
		c := v[i]
		if needsPercent(c) {
			b = append(b, '%', upperHex[c>>4], upperHex[c&0xF])
		} else {
			b = append(b, c)
		}
	}
	return string(b)
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

const upperHex = "0123456789ABCDEF"

func needsPercent(c byte) bool { return c <= ' ' || c >= 0x7F || c == '"' || c == '%' }

// Canonical header keys of the core attributes.
var coreHeaderKeys = [...]struct{ key, name string }{
	{"Ce-Specversion", "specversion"}, {"Ce-Id", "id"}, {"Ce-Source", "source"}, {"Ce-Type", "type"},
	{"Ce-Subject", "subject"}, {"Ce-Dataschema", "dataschema"}, {"Ce-Time", "time"},
}

// WriteRequest puts e on req in binary mode: attributes as percent-encoded
// ce-* headers (replacing any ce-* headers req had), datacontenttype as
// Content-Type, data as the body. It validates e first and returns its
// *AttributeError if it is not a valid event.
func WriteRequest(req *http.Request, e *Event) error {
	if err := e.validate(); err != nil {
		return err
	}
	if req.Header == nil {
		req.Header = make(http.Header, 8+len(e.Extensions))
	}
	WriteHeaders(req.Header, e)
	if len(e.Data) == 0 {
		req.Body, req.ContentLength, req.GetBody = http.NoBody, 0, nil
		return nil
	}
	data := e.Data
	req.ContentLength = int64(len(data))
	req.Body = io.NopCloser(bytes.NewReader(data))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }
	return nil
}

// WriteHeaders puts e's attributes on h as WriteRequest does (ce-*
// headers, replacing any h had, and Content-Type), without validating e:
// for an event that ReadRequest, UnmarshalJSON or Validate already
// checked. The dispatcher writes each delivery's headers this way.
func WriteHeaders(h http.Header, e *Event) {
	for k := range h {
		if hasPrefixFold(k, "ce-") {
			delete(h, k)
		}
	}
	for _, c := range coreHeaderKeys {
		var v string
		switch c.name {
		case "specversion":
			v = e.SpecVersion
		case "id":
			v = e.ID
		case "source":
			v = e.Source
		case "type":
			v = e.Type
		case "subject":
			v = e.Subject
		case "dataschema":
			v = e.DataSchema
		case "time":
			if !e.Time.IsZero() {
				v = e.Time.Format(time.RFC3339Nano)
			}
		}
		if v != "" {
			h[c.key] = []string{encodeHeaderValue(v)}
		}
	}
	for name, v := range e.Extensions {
		h[textproto.CanonicalMIMEHeaderKey("ce-"+name)] = []string{encodeHeaderValue(v)}
	}
	if e.DataContentType != "" {
		h.Set("Content-Type", e.DataContentType)
	} else {
		h.Del("Content-Type")
	}
}

// readBody reads r's body, refusing more than limit bytes. It allocates at
// most Content-Length+1 bytes up front (only when that is within the
// limit), so a lying or huge Content-Length costs nothing.
func readBody(r *http.Request, limit int64, what string) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	if r.ContentLength > limit {
		return nil, &TooLargeError{What: what, Limit: limit}
	}
	size := int64(4096)
	if r.ContentLength >= 0 {
		size = r.ContentLength + 1 // +1: the read that sees EOF needs room
	}
	buf := make([]byte, 0, min(size, limit+1))
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) > limit {
				return nil, &TooLargeError{What: what, Limit: limit}
			}
			buf = slices.Grow(buf, int(min(int64(cap(buf)), limit+1-int64(len(buf)))))
		}
		n, err := r.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > limit {
			return nil, &TooLargeError{What: what, Limit: limit}
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return nil, &TooLargeError{What: what, Limit: min(limit, mbe.Limit)}
			}
			return nil, fmt.Errorf("cloudevents: read %s: %w", what, err)
		}
	}
}
