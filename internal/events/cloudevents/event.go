package cloudevents

import (
	"fmt"
	"strings"
	"time"
)

// SpecVersion is the only CloudEvents specversion this package reads and
// writes.
const SpecVersion = "1.0"

// Event is a CloudEvents 1.0 event. The zero value of an optional attribute
// means "absent"; CloudEvents forbids empty values for the optional core
// attributes, so nothing is lost.
type Event struct {
	// Required attributes.
	SpecVersion string // always "1.0"
	ID          string // unique within Source
	Source      string // a URI-reference, such as "/orders" or "https://shop.example.com"
	Type        string // such as "com.example.order.created"

	// Optional attributes.
	Subject         string
	DataContentType string // a media type (RFC 2046), such as "application/json"
	DataSchema      string // an absolute URI
	Time            time.Time

	// Extensions holds extension attributes by name, each value in the
	// canonical string form of its CloudEvents type (a Boolean is "true" or
	// "false", an Integer is its decimal form). Names are lower-case ASCII
	// letters and digits; the spec recommends at most 20 characters.
	Extensions map[string]string

	// Data is the event payload, nil when absent. When DataContentType is
	// JSON (application/json or any */json, */*+json), Data is the JSON text
	// (so a JSON string payload keeps its quotes). Events read by this
	// package may share Data's backing array with the request body they came
	// from; each Data is capacity-limited, so appending to it copies.
	Data []byte
}

// Mode is an HTTP content mode of the CloudEvents HTTP protocol binding.
type Mode int

// The content modes.
const (
	// Binary: attributes in ce-* headers, datacontenttype in Content-Type,
	// data as the body.
	Binary Mode = iota + 1
	// Structured: the whole event as one JSON object,
	// Content-Type: application/cloudevents+json.
	Structured
	// Batched: a JSON array of events,
	// Content-Type: application/cloudevents-batch+json.
	Batched
)

func (m Mode) String() string {
	switch m {
	case Binary:
		return "binary"
	case Structured:
		return "structured"
	case Batched:
		return "batched"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// AttributeError says which attribute of an event is missing or wrong, and
// how to fix it.
type AttributeError struct {
	Attribute string // the attribute name, such as "type" or "data_base64"
	Problem   string // what is wrong and how to fix it
}

func (e *AttributeError) Error() string { return "cloudevents: " + e.text() }

func (e *AttributeError) text() string {
	return fmt.Sprintf("attribute %q: %s", e.Attribute, e.Problem)
}

func attrErr(name, format string, args ...any) *AttributeError {
	return &AttributeError{Attribute: name, Problem: fmt.Sprintf(format, args...)}
}

// Validate checks e against CloudEvents 1.0: specversion is "1.0"; id,
// source and type are present; source is a URI-reference; dataschema, when
// present, an absolute URI; datacontenttype a media type; time, when set,
// representable in RFC 3339 (years 0000-9999, a zone offset in whole
// minutes); extension names lower-case
// letters and digits, not a core attribute name. The error is an
// *AttributeError naming the first offending attribute.
func (e *Event) Validate() error {
	if err := e.validate(); err != nil {
		return err
	}
	return nil
}

// validate returns a typed nil-able pointer so callers inside the package
// avoid the interface conversion.
func (e *Event) validate() *AttributeError {
	switch {
	case e.SpecVersion == "":
		return attrErr("specversion", `missing: every event needs specversion "1.0"`)
	case e.SpecVersion != SpecVersion:
		return attrErr("specversion", `unsupported version %q: this server speaks CloudEvents 1.0, set specversion to "1.0"`, e.SpecVersion)
	case e.ID == "":
		return attrErr("id", `missing: every event needs an id, unique within its source, such as a UUID`)
	case e.Source == "":
		return attrErr("source", `missing: every event needs a source, a URI-reference such as "/orders" or "https://shop.example.com"`)
	case e.Type == "":
		return attrErr("type", `missing: every event needs a type, such as "com.example.order.created"`)
	}
	if problem := checkURIReference(e.Source); problem != "" {
		return attrErr("source", `invalid URI-reference %q: %s; use a URI-reference such as "/orders" or "https://shop.example.com"`, e.Source, problem)
	}
	if e.DataSchema != "" {
		if problem := checkURIReference(e.DataSchema); problem != "" {
			return attrErr("dataschema", `invalid URI %q: %s; use an absolute URI such as "https://example.com/schemas/order.json"`, e.DataSchema, problem)
		}
		if !hasScheme(e.DataSchema) {
			return attrErr("dataschema", `%q is not an absolute URI: use an absolute URI such as "https://example.com/schemas/order.json"`, e.DataSchema)
		}
	}
	if e.DataContentType != "" {
		if problem := checkMediaType(e.DataContentType); problem != "" {
			return attrErr("datacontenttype", `invalid media type %q: %s; use a media type such as "application/json" or "text/plain; charset=utf-8"`, e.DataContentType, problem)
		}
	}
	if !e.Time.IsZero() {
		if y := e.Time.Year(); y < 0 || y > 9999 {
			return attrErr("time", "year %d cannot be written in RFC 3339; use a year between 0000 and 9999", y)
		}
		if _, off := e.Time.Zone(); off%60 != 0 {
			return attrErr("time", "zone offset of %d seconds cannot be written in RFC 3339 (whole minutes only); convert the time to UTC", off)
		}
	}
	for _, s := range []struct{ name, v string }{
		{"specversion", e.SpecVersion}, {"id", e.ID}, {"source", e.Source}, {"type", e.Type},
		{"subject", e.Subject}, {"datacontenttype", e.DataContentType}, {"dataschema", e.DataSchema},
	} {
		if problem := checkString(s.v); problem != "" {
			return attrErr(s.name, "%s", problem)
		}
	}
	for name, v := range e.Extensions {
		if err := checkExtensionName(name); err != nil {
			return err
		}
		if problem := checkString(v); problem != "" {
			return attrErr(name, "%s", problem)
		}
	}
	return nil
}

// coreAttribute reports whether name is a core attribute or a member name
// the JSON format reserves, so it cannot be an extension.
func coreAttribute(name string) bool {
	switch name {
	case "specversion", "id", "source", "type", "subject", "datacontenttype", "dataschema", "time", "data", "data_base64":
		return true
	}
	return false
}

func checkExtensionName(name string) *AttributeError {
	if name == "" {
		return attrErr(name, "empty extension name: names are lower-case letters a-z and digits 0-9")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return attrErr(name, "invalid extension name: names are lower-case letters a-z and digits 0-9 (at most 20 recommended), such as \"traceparent\" or \"tenantid\"")
		}
	}
	if coreAttribute(name) {
		return attrErr(name, "is a core attribute, not an extension: set it through its own field")
	}
	return nil
}

// checkString enforces the CloudEvents String type: Unicode without control
// characters (U+0000-U+001F, U+007F-U+009F) and without noncharacters or
// surrogates (Go strings cannot hold surrogates; invalid UTF-8 is refused).
func checkString(s string) string {
	ascii := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7F {
			ascii = false
			break
		}
	}
	if ascii {
		return ""
	}
	for i, r := range s {
		switch {
		case r == 0xFFFD && isInvalidUTF8At(s, i):
			return "not valid UTF-8"
		case r < 0x20, r >= 0x7F && r <= 0x9F:
			return fmt.Sprintf("contains control character %U at byte %d; strings may not contain control characters", r, i)
		case r >= 0xFDD0 && r <= 0xFDEF, r&0xFFFE == 0xFFFE:
			return fmt.Sprintf("contains Unicode noncharacter %U at byte %d", r, i)
		}
	}
	return ""
}

func isInvalidUTF8At(s string, i int) bool {
	// A real U+FFFD is the three bytes EF BF BD.
	return !strings.HasPrefix(s[i:], "\uFFFD")
}

// hasScheme reports whether s starts with a URI scheme followed by ':'.
func hasScheme(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case i > 0 && (c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.'):
		case i > 0 && c == ':':
			return true
		default:
			return false
		}
	}
	return false
}

// checkURIReference checks s against the RFC 3986 URI-reference character
// set: unreserved, reserved and well-formed %XX escapes only, and a valid
// scheme when the first path segment has a ':'. It is a syntax check, not a
// full parse: it does not check the inner structure of the authority.
func checkURIReference(s string) string {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case uriPunct[c]:
		case c == '%':
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return fmt.Sprintf("'%%' at byte %d is not followed by two hex digits", i)
			}
			i += 2
		default:
			return fmt.Sprintf("character %q at byte %d is not allowed in a URI (percent-encode it)", rune(c), i)
		}
	}
	// A ':' before the first '/', '?' or '#' makes the prefix a scheme.
	end := strings.IndexAny(s, "/?#")
	if end < 0 {
		end = len(s)
	}
	if strings.IndexByte(s[:end], ':') >= 0 && !hasScheme(s) {
		return "the part before ':' is not a valid scheme (a letter, then letters, digits, '+', '-' or '.')"
	}
	return ""
}

// uriPunct holds the punctuation RFC 3986 allows unescaped in a URI.
var uriPunct = func() (t [256]bool) {
	for _, c := range []byte("-._~:/?#[]@!$&'()*+,;=") {
		t[c] = true
	}
	return t
}()

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// isTokenChar reports whether c may appear in an RFC 7230 token.
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// checkMediaType checks RFC 7231's media-type grammar:
// type "/" subtype *( OWS ";" OWS parameter ), parameter = token "=" ( token / quoted-string ).
func checkMediaType(s string) string {
	i := 0
	token := func() int {
		start := i
		for i < len(s) && isTokenChar(s[i]) {
			i++
		}
		return i - start
	}
	ows := func() {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
	}
	if token() == 0 || i >= len(s) || s[i] != '/' {
		return "expected type/subtype"
	}
	i++
	if token() == 0 {
		return "expected type/subtype"
	}
	for {
		ows()
		if i == len(s) {
			return ""
		}
		if s[i] != ';' {
			return fmt.Sprintf("unexpected %q at byte %d", s[i], i)
		}
		i++
		ows()
		if i == len(s) {
			return "" // a trailing ';' is tolerated, as by mime.ParseMediaType
		}
		if token() == 0 || i >= len(s) || s[i] != '=' {
			return fmt.Sprintf("parameter at byte %d is not name=value", i)
		}
		i++
		if i < len(s) && s[i] == '"' {
			i++
			for {
				if i >= len(s) {
					return "unterminated quoted parameter value"
				}
				if s[i] == '\\' {
					i += 2
					continue
				}
				if s[i] == '"' {
					i++
					break
				}
				i++
			}
		} else if token() == 0 {
			return fmt.Sprintf("parameter at byte %d has no value", i)
		}
	}
}

// mediaType returns the type/subtype of a Content-Type value, without
// parameters and surrounding space, and its parameters.
func mediaType(ct string) (mt, params string) {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		mt, params = ct[:i], ct[i+1:]
	} else {
		mt = ct
	}
	return strings.TrimSpace(mt), params
}

// IsJSONContentType reports whether a datacontenttype declares JSON data:
// its media type, without parameters, is */json or */*+json. An empty
// content type counts as JSON, as the JSON event format implies
// application/json when datacontenttype is absent.
func IsJSONContentType(ct string) bool {
	if ct == "" {
		return true
	}
	mt, _ := mediaType(ct)
	slash := strings.IndexByte(mt, '/')
	if slash < 0 {
		return false
	}
	sub := mt[slash+1:]
	return strings.EqualFold(sub, "json") || len(sub) > 5 && strings.EqualFold(sub[len(sub)-5:], "+json")
}

// isTextContentType reports whether data of this media type is text, so
// the JSON format can carry it as a JSON string rather than base64.
func isTextContentType(ct string) bool {
	mt, _ := mediaType(ct)
	if len(mt) > 5 && strings.EqualFold(mt[:5], "text/") {
		return true
	}
	slash := strings.IndexByte(mt, '/')
	if slash < 0 {
		return false
	}
	sub := mt[slash+1:]
	return strings.EqualFold(sub, "xml") || len(sub) > 4 && strings.EqualFold(sub[len(sub)-4:], "+xml")
}
