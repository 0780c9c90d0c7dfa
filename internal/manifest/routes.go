package manifest

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"

	"github.com/nimbus-dev/nimbus/internal/model"
	"gopkg.in/yaml.v3"
)

// HTTPMethods are the methods a route may name (model.HTTPMethods: the
// API refuses others too).
var HTTPMethods = model.HTTPMethods

// ReservedPrefixes are path prefixes the platform serves itself; app routes
// may not use them (model.ReservedPrefixes: the API refuses them too).
var ReservedPrefixes = model.ReservedPrefixes

// maxRoutes bounds the routes of one app. Conflict checking is quadratic in
// the worst case; no real app comes near this.
const maxRoutes = 1000

// route is a parsed route and where it came from, for conflict messages.
type route struct {
	r        model.Route
	function string
	field    string
	node     *yaml.Node
}

func (r route) pattern() string {
	if r.r.Method == "" {
		return r.r.Path
	}
	return r.r.Method + " " + r.r.Path
}

func (p *parser) routes(key, n *yaml.Node, path string, f *Function) []model.Route {
	if n.Kind != yaml.SequenceNode {
		if isNull(n) {
			return nil
		}
		p.errorf(valueOrKey(n, key), path, `must be a list of routes, such as ["GET /hello/{name}"], not %s`, describe(n))
		return nil
	}
	var out []model.Route
	for i, item := range n.Content {
		item = deref(item)
		field := fmt.Sprintf("%s[%d]", path, i)
		var r model.Route
		var ok bool
		switch item.Kind {
		case yaml.ScalarNode:
			r, ok = p.routeString(item, field)
		case yaml.MappingNode:
			r, ok = p.routeMap(item, field)
		default:
			p.errorf(item, field, `a route is a string such as "GET /hello/{name}" or a map with method and path, not %s`, describe(item))
		}
		if ok {
			out = append(out, r)
			p.routeNodes = append(p.routeNodes, route{r: r, function: f.Name, field: field, node: item})
		}
	}
	return out
}

func (p *parser) routeString(n *yaml.Node, field string) (model.Route, bool) {
	s, ok := p.str(n, field)
	if !ok {
		return model.Route{}, false
	}
	parts := strings.Fields(s)
	var r model.Route
	switch len(parts) {
	case 1:
		r.Path = parts[0]
	case 2:
		r.Method, r.Path = parts[0], parts[1]
	default:
		p.errorf(n, field, `%q is not a route: write "PATH" or "METHOD PATH", such as "GET /hello/{name}"`, s)
		return r, false
	}
	if len(parts) == 1 && !strings.HasPrefix(r.Path, "/") && slices.Contains(HTTPMethods, strings.ToUpper(r.Path)) {
		p.errorf(n, field, `%q has no path: write "METHOD PATH", such as "%s /hello"`, s, strings.ToUpper(r.Path))
		return r, false
	}
	return r, p.checkRoute(n, field, r)
}

func (p *parser) routeMap(n *yaml.Node, field string) (model.Route, bool) {
	var r model.Route
	before := len(p.errs)
	fields := p.mapping(n, field, routeFields)
	if kv, ok := fields.get("method"); ok {
		r.Method, _ = p.str(kv.value, field+".method")
	}
	if kv, ok := fields.get("path"); ok {
		r.Path, _ = p.str(kv.value, field+".path")
	} else {
		p.missing(fields, n, field, "path", "required field is missing: give the route's path, such as /hello/{name}")
	}
	if kv, ok := fields.get("auth"); ok {
		r.Auth, _ = p.auth(kv.value, field+".auth")
	}
	if len(p.errs) > before {
		return r, false
	}
	return r, p.checkRoute(n, field, r)
}

var likeRe = regexp.MustCompile(`like "([^"]*)"`)

// checkRoute validates one route on its own: method, path shape, reserved
// prefixes and ServeMux pattern syntax.
func (p *parser) checkRoute(n *yaml.Node, field string, r model.Route) bool {
	if err := model.CheckMethod(r.Method); err != nil {
		p.errorf(n, field, "%v", err)
		return false
	}
	if !strings.HasPrefix(r.Path, "/") {
		p.errorf(n, field, "path %q must start with '/'", r.Path)
		return false
	}
	if strings.ContainsFunc(r.Path, func(c rune) bool { return c <= ' ' || c == 0x7f }) {
		p.errorf(n, field, "path %q must not contain spaces or control characters", r.Path)
		return false
	}
	if pre, ok := model.ReservedPrefix(r.Path); ok {
		p.errorf(n, field, "path %q is reserved: Nimbus serves %s itself; choose another prefix", r.Path, pre)
		return false
	}
	if err := register(http.NewServeMux(), route{r: r}.pattern()); err != nil {
		msg := err.Error()
		if inner := errors.Unwrap(err); inner != nil {
			msg = inner.Error()
		}
		p.errorf(n, field, "path %q is not a valid pattern: %s (see https://pkg.go.dev/net/http#hdr-Patterns)", r.Path, msg)
		return false
	}
	return true
}

// checkRoutes reports routes of the app that are declared twice or conflict
// (both match some request and neither is more specific), as ServeMux sees it.
func (p *parser) checkRoutes() {
	if len(p.routeNodes) > maxRoutes {
		r := p.routeNodes[maxRoutes]
		p.errorf(r.node, r.field, "too many routes: an app may declare at most %d", maxRoutes)
		return
	}
	mux := http.NewServeMux()
	var ok []route
	for _, r := range p.routeNodes {
		if register(mux, r.pattern()) == nil {
			ok = append(ok, r)
			continue
		}
		// Find which earlier route it conflicts with, to name both.
		for _, q := range ok {
			if q.pattern() == r.pattern() {
				p.errorf(r.node, r.field, "route %q is declared twice: also by function %s at %s", r.pattern(), q.function, p.pos(q.node))
				break
			}
			m := http.NewServeMux()
			_ = register(m, q.pattern())
			if err := register(m, r.pattern()); err != nil {
				why := "both match the same requests"
				if like := likeRe.FindStringSubmatch(err.Error()); like != nil {
					why = fmt.Sprintf("both match some paths, like %q, and neither is more specific", like[1])
				}
				p.errorf(r.node, r.field, "route %q conflicts with route %q of function %s at %s: %s", r.pattern(), q.pattern(), q.function, p.pos(q.node), why)
				break
			}
		}
	}
}

// register adds pattern to mux, turning ServeMux's panic on an invalid or
// conflicting pattern into an error.
func register(mux *http.ServeMux, pattern string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if e, ok := r.(error); ok {
				err = e
			} else {
				err = fmt.Errorf("%v", r)
			}
		}
	}()
	mux.Handle(pattern, http.NotFoundHandler())
	return nil
}
