package throttle

import (
	"fmt"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
)

// KeySource says where an invocation's flow key comes from. Every trigger
// source extracts keys through it, so the same manifest key means the same
// thing for HTTP, events, cron and async invocations. The zero KeySource
// gives every invocation the key "".
type KeySource struct {
	kind   keyKind
	name   string // event attribute, canonical header name, or query name
	header string // for event keys: the CloudEvents binary-mode header, Ce-<Attr>
}

type keyKind uint8

const (
	keyNone keyKind = iota
	keyEvent
	keyHeader
	keyQuery
)

// ParseKey parses a flow key expression: "event.subject", "event.source",
// "event.type", "event.<extension>" (lowercase letters and digits),
// "header.<Name>" (canonicalized: header.x-tenant is header.X-Tenant) or
// "query.<name>" (case-sensitive). "" parses to the zero KeySource. The
// manifest validates keys with the same rules (manifest.FlowKey) and stores
// them canonical.
func ParseKey(expr string) (KeySource, error) {
	switch {
	case expr == "":
		return KeySource{}, nil
	case strings.HasPrefix(expr, "event."):
		attr := expr[len("event."):]
		if !isAttrName(attr) {
			return KeySource{}, fmt.Errorf("flow key %q: %q is not a CloudEvents attribute name (lowercase letters and digits, at most 64)", expr, attr)
		}
		switch attr {
		case "id", "specversion", "time", "datacontenttype", "dataschema", "data":
			return KeySource{}, fmt.Errorf("flow key %q: %s cannot group events; use event.subject, event.source, event.type or an extension", expr, attr)
		}
		return KeySource{kind: keyEvent, name: attr, header: "Ce-" + textproto.CanonicalMIMEHeaderKey(attr)}, nil
	case strings.HasPrefix(expr, "header."):
		name := expr[len("header."):]
		if !isToken(name) {
			return KeySource{}, fmt.Errorf("flow key %q: %q is not an HTTP header name (letters, digits and '-', such as header.X-Tenant)", expr, name)
		}
		return KeySource{kind: keyHeader, name: textproto.CanonicalMIMEHeaderKey(name)}, nil
	case strings.HasPrefix(expr, "query."):
		name := expr[len("query."):]
		if name == "" || len(name) > 256 || strings.ContainsAny(name, "&=#") || strings.IndexFunc(name, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
			return KeySource{}, fmt.Errorf("flow key %q: %q is not a query parameter name (no spaces, '&', '=' or '#')", expr, name)
		}
		return KeySource{kind: keyQuery, name: name}, nil
	}
	return KeySource{}, fmt.Errorf("flow key %q: use event.subject, event.source, event.type, event.<extension>, header.<Name> or query.<name>", expr)
}

// String returns the canonical expression of k ("" for the zero KeySource).
func (k KeySource) String() string {
	switch k.kind {
	case keyEvent:
		return "event." + k.name
	case keyHeader:
		return "header." + k.name
	case keyQuery:
		return "query." + k.name
	}
	return ""
}

// IsZero reports whether k is the zero KeySource (every key is "").
func (k KeySource) IsZero() bool { return k.kind == keyNone }

// FromRequest returns the key of an HTTP request (or of an async invocation,
// which keeps its request's headers and query). A header key takes the
// header's first value, a query key the parameter's first value (decoded).
// An event key reads the CloudEvents binary-mode header (event.subject is
// Ce-Subject), so an event POSTed to a function's route is keyed like the
// same event delivered by a trigger. A missing value is "". It does not
// allocate unless the query value needs decoding.
func (k KeySource) FromRequest(h http.Header, rawQuery string) string {
	switch k.kind {
	case keyHeader:
		return first(h[k.name])
	case keyEvent:
		return first(h[k.header])
	case keyQuery:
		return queryValue(rawQuery, k.name)
	}
	return ""
}

// FromEvent returns the key of an event, given a function that returns an
// attribute's value by name ("subject", "source", "type" or an extension
// name), "" when absent. Header and query keys give "" for events, as does
// the zero KeySource. Cron firings and bucket changes are events too.
func (k KeySource) FromEvent(attr func(name string) string) string {
	if k.kind != keyEvent || attr == nil {
		return ""
	}
	return attr(k.name)
}

func first(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}

// queryValue finds the first value of name in a raw query string, matching
// the name after decoding, as url.ParseQuery would.
func queryValue(raw, name string) string {
	for raw != "" {
		var part string
		part, raw, _ = strings.Cut(raw, "&")
		if part == "" {
			continue
		}
		n, v, _ := strings.Cut(part, "=")
		if n != name {
			if !strings.ContainsAny(n, "%+") {
				continue
			}
			dn, err := url.QueryUnescape(n)
			if err != nil || dn != name {
				continue
			}
		}
		if strings.ContainsAny(v, "%+") {
			dv, err := url.QueryUnescape(v)
			if err != nil {
				continue // url.ParseQuery skips malformed pairs too
			}
			return dv
		}
		return v
	}
	return ""
}

func isAttrName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

func isToken(s string) bool {
	if s == "" || len(s) > 256 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
