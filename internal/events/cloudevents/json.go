package cloudevents

import (
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// The JSON event format (CloudEvents json-format.md) is read by a small
// hand-written parser rather than encoding/json: it is on the ingress hot
// path, and it must report problems per attribute (a duplicate member, a
// number where a string belongs, data and data_base64 together) that
// encoding/json would silently accept. Attribute strings without escapes are
// substrings of one string copy of the input, and JSON data is a sub-slice
// of the input bytes, so a batch costs a few allocations, not a few per
// attribute.

// maxDepth bounds the nesting of JSON data, as encoding/json does (10000);
// deeper input is refused instead of growing a stack.
const maxDepth = 10000

// SyntaxError is malformed JSON in the JSON event format.
type SyntaxError struct {
	Offset int64 // byte offset in the input where the problem was found
	msg    string
}

func (e *SyntaxError) Error() string { return "cloudevents: " + e.text() }
func (e *SyntaxError) text() string {
	return fmt.Sprintf("invalid JSON at byte %d: %s", e.Offset, e.msg)
}

// decoder reads the JSON event format from b; s is the same bytes as a
// string (s[i] == b[i]), so attribute values can be substrings of s and data
// sub-slices of b without copying.
type decoder struct {
	s      string
	b      []byte
	i      int
	maxExt int // maximum extensions per event
}

func (d *decoder) syntax(format string, args ...any) *SyntaxError {
	return &SyntaxError{Offset: int64(d.i), msg: fmt.Sprintf(format, args...)}
}

func (d *decoder) ws() {
	for d.i < len(d.s) {
		switch d.s[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// expect consumes c after optional white space.
func (d *decoder) expect(c byte) error {
	d.ws()
	if d.i >= len(d.s) {
		return d.syntax("unexpected end of input, expected %q", c)
	}
	if d.s[d.i] != c {
		return d.syntax("expected %q, found %q", c, d.s[d.i])
	}
	d.i++
	return nil
}

// jsonKind is the kind of a JSON value, from its first byte.
type jsonKind byte

const (
	kindString jsonKind = 's'
	kindNumber jsonKind = 'n'
	kindBool   jsonKind = 'b'
	kindNull   jsonKind = '0'
	kindObject jsonKind = 'o'
	kindArray  jsonKind = 'a'
)

func (k jsonKind) String() string {
	switch k {
	case kindString:
		return "a string"
	case kindNumber:
		return "a number"
	case kindBool:
		return "a boolean"
	case kindNull:
		return "null"
	case kindObject:
		return "an object"
	case kindArray:
		return "an array"
	}
	return "a value"
}

// span is a validated JSON value in the input: [start, end).
type span struct {
	start, end int
	kind       jsonKind
	escaped    bool // a string with backslash escapes
}

// value scans and validates one JSON value, without building it.
func (d *decoder) value() (span, error) {
	d.ws()
	if d.i >= len(d.s) {
		return span{}, d.syntax("unexpected end of input, expected a value")
	}
	start := d.i
	var (
		k   jsonKind
		esc bool
		err error
	)
	// Each case advances d.i; the span is built after, from the new d.i.
	switch c := d.s[d.i]; {
	case c == '"':
		k = kindString
		esc, err = d.str()
	case c == '-' || c >= '0' && c <= '9':
		k, err = kindNumber, d.number()
	case c == 't':
		k, err = kindBool, d.literal("true")
	case c == 'f':
		k, err = kindBool, d.literal("false")
	case c == 'n':
		k, err = kindNull, d.literal("null")
	case c == '{' || c == '[':
		k = kindObject
		if c == '[' {
			k = kindArray
		}
		err = d.container()
	default:
		return span{}, d.syntax("unexpected %q, expected a value", c)
	}
	return span{start, d.i, k, esc}, err
}

func (d *decoder) literal(lit string) error {
	if !strings.HasPrefix(d.s[d.i:], lit) {
		return d.syntax("invalid literal, expected %s", lit)
	}
	d.i += len(lit)
	return nil
}

// number scans an RFC 8259 number.
func (d *decoder) number() error {
	s, i := d.s, d.i
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && s[i] >= '1' && s[i] <= '9':
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
	default:
		d.i = i
		return d.syntax("invalid number")
	}
	if i < len(s) && s[i] == '.' {
		i++
		if i >= len(s) || s[i] < '0' || s[i] > '9' {
			d.i = i
			return d.syntax("invalid number: expected a digit after '.'")
		}
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if i >= len(s) || s[i] < '0' || s[i] > '9' {
			d.i = i
			return d.syntax("invalid number: expected a digit in the exponent")
		}
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
	}
	d.i = i
	return nil
}

// str scans a string starting at the opening quote and reports whether it
// has escapes. Control characters must be escaped; invalid UTF-8 is refused.
func (d *decoder) str() (escaped bool, err error) {
	s := d.s
	i := d.i + 1
	for {
		if i >= len(s) {
			d.i = i
			return false, d.syntax("unterminated string")
		}
		c := s[i]
		switch {
		case c == '"':
			d.i = i + 1
			return escaped, nil
		case c == '\\':
			escaped = true
			if i+1 >= len(s) {
				d.i = i
				return false, d.syntax("unterminated string")
			}
			switch s[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(s) || !isHex(s[i+2]) || !isHex(s[i+3]) || !isHex(s[i+4]) || !isHex(s[i+5]) {
					d.i = i
					return false, d.syntax(`invalid \u escape`)
				}
				i += 6
			default:
				d.i = i
				return false, d.syntax("invalid escape %q", s[i:i+2])
			}
		case c < 0x20:
			d.i = i
			return false, d.syntax("control character %#x in string (escape it)", c)
		case c < utf8.RuneSelf:
			i++
		default:
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 {
				d.i = i
				return false, d.syntax("invalid UTF-8 in string")
			}
			i += n
		}
	}
}

// container scans an object or array iteratively, keeping a stack of open
// brackets (bounded by maxDepth).
func (d *decoder) container() error {
	var stackArr [32]byte
	stack := stackArr[:0]
	opening := true // d.s[d.i] is a '{' or '[' to open
	for {
		if opening {
			c := d.s[d.i]
			d.i++
			stack = append(stack, c)
			if len(stack) > maxDepth {
				return d.syntax("nested deeper than %d levels", maxDepth)
			}
			d.ws()
			closing := byte('}')
			if c == '[' {
				closing = ']'
			}
			if d.i < len(d.s) && d.s[d.i] == closing {
				d.i++
				stack = stack[:len(stack)-1]
				done, err := d.afterValue(&stack)
				if done || err != nil {
					return err
				}
				// A ',' was consumed: read the parent's next element.
			}
		}
		// One element of the innermost open container.
		if stack[len(stack)-1] == '{' {
			d.ws()
			if d.i >= len(d.s) || d.s[d.i] != '"' {
				return d.syntax("expected a member name")
			}
			if _, err := d.str(); err != nil {
				return err
			}
			if err := d.expect(':'); err != nil {
				return err
			}
		}
		d.ws()
		if d.i < len(d.s) && (d.s[d.i] == '{' || d.s[d.i] == '[') {
			opening = true // descend
			continue
		}
		opening = false
		if _, err := d.value(); err != nil {
			return err
		}
		done, err := d.afterValue(&stack)
		if done || err != nil {
			return err
		}
	}
}

// afterValue consumes ',' (returning to the caller's loop to read the next
// element) or closing brackets. done is true when the outermost container
// has closed.
func (d *decoder) afterValue(stack *[]byte) (done bool, err error) {
	for {
		if len(*stack) == 0 {
			return true, nil
		}
		open := (*stack)[len(*stack)-1]
		closing := byte('}')
		if open == '[' {
			closing = ']'
		}
		d.ws()
		if d.i >= len(d.s) {
			return false, d.syntax("unexpected end of input, expected ',' or %q", closing)
		}
		switch d.s[d.i] {
		case ',':
			d.i++
			return false, nil
		case closing:
			d.i++
			*stack = (*stack)[:len(*stack)-1]
		default:
			return false, d.syntax("expected ',' or %q, found %q", closing, d.s[d.i])
		}
	}
}

// unquote returns the content of a validated string span.
func (d *decoder) unquote(sp span) (string, error) {
	if !sp.escaped {
		return d.s[sp.start+1 : sp.end-1], nil
	}
	b, err := appendUnquoted(make([]byte, 0, sp.end-sp.start), d.s[sp.start+1:sp.end-1])
	if err != nil {
		return "", &SyntaxError{Offset: int64(sp.start), msg: err.Error()}
	}
	return string(b), nil
}

// unquoteBytes returns the content of a validated string span as bytes.
func (d *decoder) unquoteBytes(sp span) ([]byte, error) {
	if !sp.escaped {
		return d.b[sp.start+1 : sp.end-1 : sp.end-1], nil
	}
	b, err := appendUnquoted(make([]byte, 0, sp.end-sp.start), d.s[sp.start+1:sp.end-1])
	if err != nil {
		return nil, &SyntaxError{Offset: int64(sp.start), msg: err.Error()}
	}
	return b, nil
}

// appendUnquoted decodes the escapes of a validated JSON string body. A lone
// UTF-16 surrogate is an error: it cannot be represented in UTF-8.
func appendUnquoted(dst []byte, s string) ([]byte, error) {
	for i := 0; i < len(s); {
		c := s[i]
		if c != '\\' {
			dst = append(dst, c)
			i++
			continue
		}
		switch s[i+1] {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r := hex4(s[i+2 : i+6])
			i += 6
			if utf16.IsSurrogate(r) {
				if r >= 0xDC00 || i+6 > len(s) || s[i] != '\\' || s[i+1] != 'u' {
					return nil, fmt.Errorf(`lone UTF-16 surrogate \u%04X in string`, r)
				}
				r2 := hex4(s[i+2 : i+6])
				r = utf16.DecodeRune(r, r2)
				if r == utf8.RuneError {
					return nil, fmt.Errorf(`invalid UTF-16 surrogate pair in string`)
				}
				i += 6
			}
			dst = utf8.AppendRune(dst, r)
			continue
		default: // '"', '\\', '/'
			dst = append(dst, s[i+1])
		}
		i += 2
	}
	return dst, nil
}

func hex4(s string) rune {
	var r rune
	for i := 0; i < 4; i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		default:
			c -= 'A' - 10
		}
		r = r<<4 | rune(c)
	}
	return r
}

// Member bits, to detect duplicate core members.
const (
	seenSpecVersion = 1 << iota
	seenID
	seenSource
	seenType
	seenSubject
	seenDataContentType
	seenDataSchema
	seenTime
	seenData
	seenDataBase64
)

// coreBit returns the member bit of a core attribute name, 0 for others.
func coreBit(name string) int {
	switch name {
	case "specversion":
		return seenSpecVersion
	case "id":
		return seenID
	case "source":
		return seenSource
	case "type":
		return seenType
	case "subject":
		return seenSubject
	case "datacontenttype":
		return seenDataContentType
	case "dataschema":
		return seenDataSchema
	case "time":
		return seenTime
	case "data":
		return seenData
	case "data_base64":
		return seenDataBase64
	}
	return 0
}

// event reads one event object at d.i and validates it.
func (d *decoder) event(e *Event) error {
	*e = Event{}
	if err := d.expect('{'); err != nil {
		if d.i < len(d.s) {
			return d.syntax("an event must be a JSON object")
		}
		return err
	}
	var seen int
	var data, data64 span
	d.ws()
	if d.i < len(d.s) && d.s[d.i] == '}' {
		d.i++
		if err := e.validate(); err != nil {
			return err
		}
		return nil
	}
	for {
		d.ws()
		if d.i >= len(d.s) || d.s[d.i] != '"' {
			return d.syntax("expected a member name")
		}
		nameSpan, err := d.value()
		if err != nil {
			return err
		}
		name, err := d.unquote(nameSpan)
		if err != nil {
			return err
		}
		if err := d.expect(':'); err != nil {
			return err
		}
		v, err := d.value()
		if err != nil {
			return err
		}
		bit := coreBit(name)
		if bit != 0 {
			if seen&bit != 0 {
				return attrErr(name, "appears more than once; give each attribute once")
			}
			seen |= bit
		}
		switch name {
		case "data":
			data = v
		case "data_base64":
			data64 = v
		case "specversion", "id", "source", "type", "subject", "datacontenttype", "dataschema", "time":
			if err := d.coreAttribute(e, name, v); err != nil {
				return err
			}
		default:
			if err := d.extension(e, name, v); err != nil {
				return err
			}
		}
		d.ws()
		if d.i >= len(d.s) {
			return d.syntax("unexpected end of input, expected ',' or '}'")
		}
		if d.s[d.i] == '}' {
			d.i++
			break
		}
		if d.s[d.i] != ',' {
			return d.syntax("expected ',' or '}', found %q", d.s[d.i])
		}
		d.i++
	}
	if err := d.eventData(e, data, data64); err != nil {
		return err
	}
	if err := e.validate(); err != nil {
		return err // not "return e.validate()": a nil *AttributeError is a non-nil error
	}
	return nil
}

func (d *decoder) coreAttribute(e *Event, name string, v span) error {
	if v.kind == kindNull {
		return nil // null means absent
	}
	if v.kind != kindString {
		return attrErr(name, "must be a JSON string, not %s", v.kind)
	}
	s, err := d.unquote(v)
	if err != nil {
		return err
	}
	switch name {
	case "specversion":
		e.SpecVersion = s
		return nil
	case "id":
		e.ID = s
		return nil
	case "source":
		e.Source = s
		return nil
	case "type":
		e.Type = s
		return nil
	}
	if s == "" {
		return attrErr(name, "is empty: when present it must not be empty; leave it out instead")
	}
	switch name {
	case "subject":
		e.Subject = s
	case "datacontenttype":
		e.DataContentType = s
	case "dataschema":
		e.DataSchema = s
	case "time":
		t, err := parseTime(s)
		if err != nil {
			return err
		}
		e.Time = t
	}
	return nil
}

func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil || t.IsZero() {
		// The zero time is how Event says "absent", so it cannot be a value.
		return time.Time{}, attrErr("time", "invalid timestamp %q: use RFC 3339, such as \"2026-11-23T12:00:00Z\"", s)
	}
	return t, nil
}

func (d *decoder) extension(e *Event, name string, v span) error {
	if err := checkExtensionName(name); err != nil {
		return err
	}
	if v.kind == kindNull {
		return nil
	}
	if _, dup := e.Extensions[name]; dup {
		return attrErr(name, "appears more than once; give each attribute once")
	}
	var s string
	switch v.kind {
	case kindString:
		var err error
		if s, err = d.unquote(v); err != nil {
			return err
		}
	case kindBool:
		s = d.s[v.start:v.end]
	case kindNumber:
		raw := d.s[v.start:v.end]
		if _, err := strconv.ParseInt(raw, 10, 32); err != nil {
			return attrErr(name, "number %s is not a CloudEvents Integer (a whole number between -2147483648 and 2147483647); send other values as strings", raw)
		}
		if raw == "-0" {
			s = "0"
		} else {
			s = raw
		}
	default:
		return attrErr(name, "extension values are strings, booleans or integers, not %s", v.kind)
	}
	if e.Extensions == nil {
		e.Extensions = make(map[string]string, 4)
	}
	if len(e.Extensions) >= d.maxExt {
		return attrErr(name, "too many extensions: at most %d per event", d.maxExt)
	}
	e.Extensions[name] = s
	return nil
}

func (d *decoder) eventData(e *Event, data, data64 span) error {
	hasData, has64 := data.kind != 0, data64.kind != 0 && data64.kind != kindNull
	if hasData && has64 {
		return attrErr("data_base64", "an event has data or data_base64, not both: use data_base64 for binary data, data otherwise")
	}
	if has64 {
		if data64.kind != kindString {
			return attrErr("data_base64", "must be a JSON string holding base64, not %s", data64.kind)
		}
		enc, err := d.unquote(data64)
		if err != nil {
			return err
		}
		buf := make([]byte, base64.StdEncoding.DecodedLen(len(enc)))
		n, err := base64.StdEncoding.Decode(buf, []byte(enc))
		if err != nil {
			var ce base64.CorruptInputError
			errors.As(err, &ce)
			return attrErr("data_base64", "not valid base64 at byte %d: use standard base64 (RFC 4648, alphabet A-Z a-z 0-9 + /, padded with =)", int64(ce))
		}
		e.Data = buf[:n:n]
		return nil
	}
	if !hasData {
		return nil
	}
	if e.DataContentType == "" {
		// json-format.md 3.1.2: data without datacontenttype is JSON, and an
		// event re-serialized in another binding should say so explicitly.
		e.DataContentType = "application/json"
	}
	if IsJSONContentType(e.DataContentType) {
		e.Data = d.b[data.start:data.end:data.end]
		return nil
	}
	switch data.kind {
	case kindNull:
		return nil
	case kindString:
		b, err := d.unquoteBytes(data)
		if err != nil {
			return err
		}
		e.Data = b
		return nil
	}
	return attrErr("data", "datacontenttype %q is not JSON, so data must be a JSON string, not %s; send binary data as data_base64", e.DataContentType, data.kind)
}

// UnmarshalJSON reads e from the CloudEvents JSON event format and
// validates it, allowing up to DefaultMaxExtensions extensions. Errors are
// *SyntaxError or *AttributeError.
func (e *Event) UnmarshalJSON(b []byte) error {
	b = append([]byte(nil), b...) // Data may point into it; b is the caller's
	d := &decoder{s: string(b), b: b, maxExt: DefaultMaxExtensions}
	if err := d.event(e); err != nil {
		*e = Event{}
		return err
	}
	d.ws()
	if d.i != len(d.s) {
		*e = Event{}
		return d.syntax("unexpected %q after the event object", d.s[d.i])
	}
	return nil
}

// MarshalJSON writes e in the CloudEvents JSON event format (see
// AppendJSON). It does not validate e; call Validate first for events that
// did not come from this package. Note that json.Marshal compacts a
// Marshaler's output, so through it JSON data keeps its value but not its
// white space.
func (e *Event) MarshalJSON() ([]byte, error) {
	return e.AppendJSON(make([]byte, 0, 256+len(e.Data)+len(e.Data)/3)), nil
}

// AppendJSON appends e in the CloudEvents JSON event format to dst.
// Data is written as a JSON value when DataContentType is JSON (or absent)
// and Data is valid JSON; as a JSON string when DataContentType is text
// (text/*, */xml, */*+xml) and Data valid UTF-8; as data_base64 otherwise.
// An absent DataContentType with JSON data is written as the implied
// "application/json". Extensions are written as JSON strings, in sorted
// order.
func (e *Event) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"specversion":`...)
	dst = appendJSONString(dst, e.SpecVersion)
	dst = appendMember(dst, "id", e.ID)
	dst = appendMember(dst, "source", e.Source)
	dst = appendMember(dst, "type", e.Type)
	if e.Subject != "" {
		dst = appendMember(dst, "subject", e.Subject)
	}
	jsonData := e.Data != nil && IsJSONContentType(e.DataContentType) && validJSON(e.Data)
	switch {
	case e.DataContentType != "":
		dst = appendMember(dst, "datacontenttype", e.DataContentType)
	case jsonData:
		// The implied type, made explicit so that reading this back gives
		// the same bytes when written again (json-format.md 3.1.2).
		dst = appendMember(dst, "datacontenttype", "application/json")
	}
	if e.DataSchema != "" {
		dst = appendMember(dst, "dataschema", e.DataSchema)
	}
	if !e.Time.IsZero() {
		dst = append(dst, `,"time":"`...)
		dst = e.Time.AppendFormat(dst, time.RFC3339Nano)
		dst = append(dst, '"')
	}
	for _, name := range sortedKeys(e.Extensions) {
		dst = appendMember(dst, name, e.Extensions[name])
	}
	if e.Data != nil {
		switch {
		case jsonData:
			dst = append(dst, `,"data":`...)
			dst = append(dst, trimJSONSpace(e.Data)...)
		case isTextContentType(e.DataContentType) && utf8.Valid(e.Data):
			dst = append(dst, `,"data":`...)
			dst = appendJSONString(dst, string(e.Data))
		default:
			dst = append(dst, `,"data_base64":"`...)
			dst = base64.StdEncoding.AppendEncode(dst, e.Data)
			dst = append(dst, '"')
		}
	}
	return append(dst, '}')
}

func appendMember(dst []byte, name, v string) []byte {
	dst = append(dst, ',', '"')
	dst = append(dst, name...)
	dst = append(dst, '"', ':')
	return appendJSONString(dst, v)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string, escaping only what JSON
// requires (and invalid UTF-8 as U+FFFD, as encoding/json does).
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += n
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

func sortedKeys(m map[string]string) []string {
	if len(m) == 0 {
		return nil
	}
	return slices.Sorted(maps.Keys(m))
}

func validJSON(b []byte) bool {
	d := decoder{s: string(b)}
	if _, err := d.value(); err != nil {
		return false
	}
	d.ws()
	return d.i == len(d.s)
}

func trimJSONSpace(b []byte) []byte {
	isSpace := func(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }
	for len(b) > 0 && isSpace(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && isSpace(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}
