package model

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// Routes belong to one app. Two apps' routes overlap when some request
// could reach both, whichever pattern is more specific: net/http's
// ServeMux accepts "GET /probe" beside "/{x}" and sends /probe to the
// more specific one, so without this rule a second app could take the
// first one's traffic with a more specific (or more general) pattern.
// Within one app ServeMux's precedence applies as usual ("/" and
// "/static/" may live side by side); across apps an overlap refuses the
// later deploy (see the gateway's Validate), naming the owner.
//
// A request is a method and a clean path (ServeMux redirects unclean
// paths before matching). Routes have no host part (checkRoute refuses
// one), so hosts never tell two routes apart.

// segment is one piece of a parsed path pattern, as ServeMux reads it: a
// literal (s, unescaped), "/" for a trailing {$}, a single wildcard
// {name} (wild) or a wildcard matching the rest of the path, "{name...}"
// or a trailing slash (wild and multi, s empty for a trailing slash).
type segment struct {
	s     string
	wild  bool
	multi bool
}

// pattern is a parsed route.
type pattern struct {
	method string
	segs   []segment
}

// parsePattern parses rt's path the way ServeMux does. rt has passed
// checkRoute; a path it could not have passed parses as well as it can.
func parsePattern(rt Route) pattern {
	p := pattern{method: rt.Method}
	rest := rt.Path
	for len(rest) > 0 {
		rest = rest[1:] // rest[0] is '/'
		if rest == "" {
			p.segs = append(p.segs, segment{wild: true, multi: true})
			break
		}
		seg := rest
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			seg, rest = rest[:i], rest[i:]
		} else {
			rest = ""
		}
		switch {
		case seg == "{$}":
			p.segs = append(p.segs, segment{s: "/"})
		case strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "...}"):
			p.segs = append(p.segs, segment{s: seg[1 : len(seg)-4], wild: true, multi: true})
		case strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}"):
			p.segs = append(p.segs, segment{s: seg[1 : len(seg)-1], wild: true})
		default:
			if u, err := url.PathUnescape(seg); err == nil {
				seg = u
			}
			p.segs = append(p.segs, segment{s: seg})
		}
	}
	return p
}

// redirectRoot is the path that ServeMux redirects to p: a pattern that
// matches a path ending in '/' ("/docs/", "/docs/{rest...}",
// "/docs/{$}") also answers the path without it ("/docs", with a
// redirect) unless another pattern matches it exactly. So that path is
// p's as well. ok is false for patterns without a trailing slash, and for
// "/" and "/{$}".
func (p pattern) redirectRoot() (pattern, bool) {
	n := len(p.segs)
	if n < 2 {
		return pattern{}, false
	}
	if last := p.segs[n-1]; !last.multi && (last.wild || last.s != "/") {
		return pattern{}, false
	}
	return pattern{method: p.method, segs: p.segs[:n-1]}, true
}

// commonMethod is a method both a and b match ("" for any), and whether
// there is one. "" matches every method; GET matches HEAD too.
func commonMethod(a, b string) (string, bool) {
	switch {
	case a == b:
		return a, true
	case a == "":
		return b, true
	case b == "":
		return a, true
	case a == http.MethodGet && b == http.MethodHead, a == http.MethodHead && b == http.MethodGet:
		return http.MethodHead, true
	}
	return "", false
}

// commonPath is a clean path that both a and b match, and whether there
// is one.
func commonPath(a, b []segment) (string, bool) {
	var path strings.Builder
	for i := 0; ; i++ {
		if i == len(a) || i == len(b) {
			// One ran out without a multi wildcard before: it matches
			// only paths of exactly this many segments, the other only
			// longer ones (or, if both ran out, the same ones).
			return path.String(), i == len(a) && i == len(b)
		}
		x, y := a[i], b[i]
		switch {
		case x.multi || y.multi:
			// A multi wildcard matches whatever the other matches from
			// here on, including nothing more (a trailing slash).
			rest := a[i:]
			if x.multi {
				rest = b[i:]
			}
			if x.multi && y.multi {
				rest = nil
				path.WriteByte('/')
			}
			for _, s := range rest {
				writeSegment(&path, s)
			}
			return path.String(), true
		case x.wild && y.wild:
			writeSegment(&path, x)
		case x.wild || y.wild:
			lit := x
			if x.wild {
				lit = y
			}
			if lit.s == "/" { // a single wildcard never matches a trailing slash
				return "", false
			}
			writeSegment(&path, lit)
		case x.s == y.s:
			writeSegment(&path, x)
		default:
			return "", false
		}
	}
}

// writeSegment writes a path that s matches: a literal as itself (with
// '/' and '%' escaped, as the request would have them), a wildcard as its
// name, a trailing slash or {$} as "/".
func writeSegment(b *strings.Builder, s segment) {
	b.WriteByte('/')
	if !s.multi && s.s != "/" {
		b.WriteString(segmentEscaper.Replace(s.s))
	}
}

var segmentEscaper = strings.NewReplacer("%", "%25", "/", "%2F")

// Overlap reports whether some request reaches both a and b when they
// are served by one ServeMux, whichever of them is more specific, and
// returns such a request ("GET /probe", or the path alone when any method
// does). A pattern ending in a slash also counts the path without it,
// which ServeMux redirects to it (redirectRoot). Both routes must be
// valid (they passed Plan).
func Overlap(a, b Route) (string, bool) {
	return overlap(parsePattern(a), parsePattern(b))
}

func overlap(a, b pattern) (string, bool) {
	method, ok := commonMethod(a.method, b.method)
	if !ok {
		return "", false
	}
	path, ok := commonPath(a.segs, b.segs)
	if !ok {
		if ra, has := a.redirectRoot(); has {
			path, ok = commonPath(ra.segs, b.segs)
		}
	}
	if !ok {
		if rb, has := b.redirectRoot(); has {
			path, ok = commonPath(a.segs, rb.segs)
		}
	}
	if !ok {
		return "", false
	}
	return Route{Method: method, Path: path}.Pattern(), true
}

// FindOverlap returns a *ConflictError for the first route of candidates
// (routes of the app being deployed) that overlaps a route of owned
// (routes other apps serve), naming the owner, or nil. Unlike
// FindConflict it refuses an overlap even where one pattern is more
// specific than the other: a route belongs to the app that deployed it
// first until that app drops it (a deploy without it, or a delete).
func FindOverlap(candidates, owned []OwnedRoute) error {
	if len(candidates) == 0 || len(owned) == 0 {
		return nil
	}
	parsed := make([]pattern, len(owned))
	for i, o := range owned {
		parsed[i] = parsePattern(o.Route)
	}
	for _, c := range candidates {
		pc := parsePattern(c.Route)
		for i, o := range owned {
			if req, ok := overlap(pc, parsed[i]); ok {
				return overlapError(c, o, req)
			}
		}
	}
	return nil
}

// overlapError is the *ConflictError of candidate c meeting o, which
// another app owns, on request req.
func overlapError(c, o OwnedRoute, req string) *ConflictError {
	return &ConflictError{
		App: c.App, Function: c.Function, Route: c.Route,
		OtherApp: o.App, OtherFunction: o.Function, OtherRoute: o.Route,
		Reason: fmt.Sprintf("both match %s, and a path belongs to one app: app %s serves it until it deploys without that route or is deleted (nimbus delete %s)",
			req, o.App, o.App),
	}
}
