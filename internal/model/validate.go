package model

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
)

const (
	maxPathLen  = 1024
	maxFuncs    = 1000
	maxRoutes   = 1000
	maxEnvBytes = 64 << 10
)

// MaxNameLen is the longest name of an app, function, topic, bucket or
// trigger.
const MaxNameLen = 63

// ValidName reports whether s is a valid name of an app, function, topic,
// bucket or trigger: a DNS label (RFC 1123) of at most MaxNameLen bytes,
// lowercase letters, digits and '-', starting with a letter and not ending
// with '-'. Names become KV keys, NATS subject tokens and URL path segments,
// so '.', '*', '>', '_', spaces and upper case never get in. This is the one
// name rule: the manifest, the API and storage all apply it.
func ValidName(s string) bool {
	if len(s) == 0 || len(s) > MaxNameLen || s[0] < 'a' || s[0] > 'z' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// NameRule says in words what ValidName accepts, for error messages; the
// manifest's say it the same way.
const NameRule = "1 to 63 lowercase letters, digits and '-', starting with a letter and not ending with '-'"

// CheckName is ValidName as an error wrapping ErrInvalid that names the
// kind of thing named ("app", "function", ...).
func CheckName(kind, name string) error {
	if name == "" {
		return fmt.Errorf("%w: %s name is empty", ErrInvalid, kind)
	}
	if !ValidName(name) {
		if len(name) > MaxNameLen {
			return fmt.Errorf("%w: %s name %.20q... is longer than %d characters", ErrInvalid, kind, name, MaxNameLen)
		}
		return fmt.Errorf("%w: %q is not a valid %s name: use %s", ErrInvalid, name, kind, NameRule)
	}
	return nil
}

// canonical validates f and returns a deep copy in canonical form:
// capabilities and routes sorted and deduplicated, Revision empty. Two
// manifests that differ only in the order of these lists give one revision.
func canonical(f Function) (Function, error) {
	if err := CheckName("function", f.Name); err != nil {
		return Function{}, err
	}
	bad := func(format string, args ...any) (Function, error) {
		return Function{}, fmt.Errorf("%w: function %s: %s", ErrInvalid, f.Name, fmt.Sprintf(format, args...))
	}
	if err := CheckRuntime(f.Runtime); err != nil {
		return bad("%v", err)
	}
	if err := checkKind(f); err != nil {
		return bad("%v", err)
	}
	if len(f.Module) != 64 || !IsHex(f.Module) {
		return bad("module %q is not a sha256 hex digest", f.Module)
	}
	proc, err := checkProcess(f)
	if err != nil {
		return bad("%v", err)
	}
	f.Process = proc
	f, err = withLimits(f)
	if err != nil {
		return bad("%v", err)
	}
	if f.Runtime == RuntimeWasm && f.Concurrency != 1 {
		return bad("concurrency %d must be 1 for runtime wasm: %s", f.Concurrency, wasmConcurrency)
	}
	envBytes := 0
	for _, k := range slices.Sorted(maps.Keys(f.Env)) {
		if err := CheckEnvName(k); err != nil {
			return bad("environment: %v", err)
		}
		if v := f.Env[k]; strings.ContainsRune(v, 0) {
			return bad("environment variable %s: values must not contain NUL", k)
		}
		envBytes += len(k) + len(f.Env[k])
	}
	if envBytes > maxEnvBytes {
		return bad("environment is %d bytes, over the limit of %d", envBytes, maxEnvBytes)
	}
	for _, c := range f.Capabilities {
		if strings.TrimSpace(c) == "" {
			return bad("empty capability")
		}
	}
	if len(f.Routes) > maxRoutes {
		return bad("%d routes, over the limit of %d", len(f.Routes), maxRoutes)
	}
	routes := make([]Route, len(f.Routes))
	for i, rt := range f.Routes {
		if err := checkRoute(rt); err != nil {
			return bad("%v", err)
		}
		auth, err := CheckRouteAuth(rt.Auth)
		if err != nil {
			return bad("route %q: %v", rt.Pattern(), err)
		}
		rt.Auth = auth
		routes[i] = rt
	}

	c := f
	c.Revision = ""
	if c.Kind == KindFunction {
		c.Kind = "" // the default, written as nothing (same id as before kinds)
	}
	c.Env = nil
	if len(f.Env) > 0 {
		c.Env = maps.Clone(f.Env)
	}
	c.Capabilities = nil
	if len(f.Capabilities) > 0 {
		c.Capabilities = slices.Compact(slices.Sorted(slices.Values(f.Capabilities)))
	}
	c.Routes = nil
	if len(f.Routes) > 0 {
		c.Routes = routes
		slices.SortStableFunc(c.Routes, func(a, b Route) int {
			if c := strings.Compare(a.Path, b.Path); c != 0 {
				return c
			}
			return strings.Compare(a.Method, b.Method)
		})
		// A route declared twice alike is one route; declared twice with
		// different auth, both stay and checkOwnRoutes refuses the pair.
		c.Routes = slices.CompactFunc(c.Routes, func(a, b Route) bool {
			return a.Method == b.Method && a.Path == b.Path && a.Auth.Equal(b.Auth)
		})
	}
	return c, nil
}

// wasmConcurrency says why a wasm function takes one request at a time.
const wasmConcurrency = "a wasm instance is single-threaded and serves one request at a time; to serve more at once, raise max_instances"

// CheckEnvName fails when name is not a valid environment variable name:
// letters, digits and '_', not starting with a digit.
func CheckEnvName(name string) error {
	ok := name != "" && !('0' <= name[0] && name[0] <= '9')
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
	}
	if !ok {
		return fmt.Errorf("%q is not a valid variable name: use letters, digits and '_', not starting with a digit", name)
	}
	return nil
}

// HTTPMethods are the methods a route may name; a route without one
// matches any method.
var HTTPMethods = []string{
	http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
	http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace,
}

// CheckMethod fails when method is neither empty nor one of HTTPMethods,
// saying what was meant where it can.
func CheckMethod(method string) error {
	if method == "" || slices.Contains(HTTPMethods, method) {
		return nil
	}
	if up := strings.ToUpper(method); slices.Contains(HTTPMethods, up) {
		return fmt.Errorf("method %q must be uppercase: %s", method, up)
	}
	return fmt.Errorf("unknown HTTP method %q (known: %s)", method, strings.Join(HTTPMethods, ", "))
}

// checkRoute validates one route as a net/http ServeMux pattern without a
// host.
func checkRoute(rt Route) error {
	if err := CheckMethod(rt.Method); err != nil {
		return fmt.Errorf("route %q: %w", rt.Pattern(), err)
	}
	if !strings.HasPrefix(rt.Path, "/") {
		return fmt.Errorf("route %q: path must start with '/'", rt.Pattern())
	}
	if len(rt.Path) > maxPathLen {
		return fmt.Errorf("route path is longer than %d bytes", maxPathLen)
	}
	if strings.ContainsFunc(rt.Path, func(c rune) bool { return c <= ' ' || c == 0x7f }) {
		return fmt.Errorf("route %q: path must not contain spaces or control characters", rt.Pattern())
	}
	if pre, ok := ReservedPrefix(rt.Path); ok {
		return fmt.Errorf("route %q: path is reserved: Nimbus serves %s itself; choose another prefix", rt.Pattern(), pre)
	}
	if err := register(http.NewServeMux(), rt.Pattern()); err != nil {
		return fmt.Errorf("route %q: %s", rt.Pattern(), err)
	}
	return nil
}

// ReservedPrefixes are path prefixes the platform serves itself (the
// control plane, the CloudEvents ingress); no app route may use them,
// whether it comes from a manifest or the API.
var ReservedPrefixes = []string{"/api/", "/_nimbus/"}

// ReservedPrefix reports the reserved prefix path falls under, if any: the
// prefix itself, anything below it, or the prefix without its slash.
func ReservedPrefix(path string) (string, bool) {
	for _, pre := range ReservedPrefixes {
		if strings.HasPrefix(path, pre) || path == strings.TrimSuffix(pre, "/") {
			return pre, true
		}
	}
	return "", false
}

// Pattern is the net/http ServeMux pattern of the route: "GET /users/{id}",
// or the path alone when any method matches.
func (rt Route) Pattern() string {
	if rt.Method == "" {
		return rt.Path
	}
	return rt.Method + " " + rt.Path
}

// register adds pat to mux, turning ServeMux's panic on an invalid or
// conflicting pattern into an error.
func register(mux *http.ServeMux, pat string) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%v", p)
		}
	}()
	mux.Handle(pat, http.NotFoundHandler())
	return nil
}

// reason keeps ServeMux's explanation of a conflict and drops the
// "registered at file:line" preamble.
func reason(err error) string {
	msg := err.Error()
	if _, after, ok := strings.Cut(msg, ":\n"); ok {
		msg = after
	}
	return strings.ReplaceAll(msg, "\n", " ")
}

// OwnedRoute is a route and who serves it.
type OwnedRoute struct {
	App, Function string
	Route         Route
}

// checkOwnRoutes fails with a *ConflictError when two routes of one deploy
// overlap.
func checkOwnRoutes(app string, fns []Function) error {
	var own []OwnedRoute
	for _, f := range fns {
		for _, rt := range f.Routes {
			own = append(own, OwnedRoute{App: app, Function: f.Name, Route: rt})
		}
	}
	return FindConflict(own, own)
}

// findConflict registers every route of existing in one ServeMux, then each
// route of candidates; on the first that ServeMux rejects it finds which
// existing route it overlaps. When candidates and existing are the same
// slice, routes are checked against each other.
func FindConflict(candidates, existing []OwnedRoute) error {
	same := len(candidates) > 0 && len(existing) > 0 && &candidates[0] == &existing[0]
	mux := http.NewServeMux()
	if !same {
		for _, o := range existing {
			_ = register(mux, o.Route.Pattern()) // live routes conflicting among themselves are not this deploy's fault
		}
	}
	for i, c := range candidates {
		if register(mux, c.Route.Pattern()) == nil {
			continue
		}
		against := existing
		if same {
			against = existing[:i]
		}
		for _, o := range against {
			pair := http.NewServeMux()
			_ = register(pair, o.Route.Pattern())
			if err := register(pair, c.Route.Pattern()); err != nil {
				return &ConflictError{
					App: c.App, Function: c.Function, Route: c.Route,
					OtherApp: o.App, OtherFunction: o.Function, OtherRoute: o.Route,
					Reason: reason(err),
				}
			}
		}
		// The combination conflicts but no single route does; name the first.
		return fmt.Errorf("%w: route %q of function %s (app %s) conflicts with existing routes",
			ErrConflict, c.Route.Pattern(), c.Function, c.App)
	}
	return nil
}

// checkKind checks what a function's kind allows: a workflow is a wasm
// guest of the Go SDK (the workflow ABI is a wasm one), started by its
// routes, its triggers (one run per event) or the API, not by async
// invocations (its runs are durable already).
func checkKind(f Function) error {
	switch f.Kind {
	case "", KindFunction:
		return nil
	case KindWorkflow:
	default:
		return fmt.Errorf("kind %q is not known: use %s (the default) or %s", f.Kind, KindFunction, KindWorkflow)
	}
	switch {
	case f.Runtime != RuntimeWasm:
		return fmt.Errorf("a workflow must have runtime %s (runtime %s cannot run workflows yet)", RuntimeWasm, f.Runtime)
	case f.Async != nil:
		return errors.New("a workflow has no async policy: its runs are durable already; give its steps a retry policy instead")
	}
	return nil
}
