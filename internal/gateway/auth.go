package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/nimbus-dev/nimbus/internal/apierror"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/security/jwtauth"
)

// Headers the gateway sets on a request that a route's auth admitted, for
// the function to read. Every request loses the incoming headers of these
// names first, on every route, public ones included: a client cannot
// forge them, so a function may trust them.
const (
	// HeaderAuth is the auth type that admitted the request: "key" or "jwt".
	HeaderAuth = "X-Nimbus-Auth"
	// HeaderAuthSubject is the JWT's sub claim, or the public id of the
	// API key (`nimbus key ls`), never the key itself.
	HeaderAuthSubject = "X-Nimbus-Auth-Subject"
	// HeaderAuthTenant is the tenant of the key (auth type key; "" for a
	// node-wide key: the header is then absent).
	HeaderAuthTenant = "X-Nimbus-Auth-Tenant"
	// HeaderAuthClaimPrefix starts the header of each forwarded claim:
	// X-Nimbus-Auth-Claim-Email. Strings as they are, other values as JSON.
	HeaderAuthClaimPrefix = "X-Nimbus-Auth-Claim-"
)

// KeyIdentity is who an API key is, as a route's function may learn it.
type KeyIdentity struct {
	// ID is the key's public id; Tenant its tenant ("" for node-wide).
	ID, Tenant string
}

// Keys checks the API keys presented to routes with auth type key. The
// server wires one over security.Tokens and the registry (the app's
// tenant).
type Keys interface {
	// CheckRouteKey returns who key is when it may invoke app's functions;
	// otherwise an error that apierror maps (security.ErrUnauthorized:
	// 401, security.ErrForbidden: 403).
	CheckRouteKey(ctx context.Context, key, app string) (KeyIdentity, error)
}

// routeAuth is what a route checks before it invokes: nil for a public
// route.
type routeAuth struct {
	spec *model.RouteAuth
	jwt  *jwtauth.Verifier // type jwt
	keys Keys              // type key
}

// authConfig is how the gateway checks route auth (SetAuth).
type authConfig struct {
	keys Keys
	jwt  jwtauth.Options
}

// SetAuth sets how routes with auth are checked: keys checks API keys (nil:
// routes with auth type key are refused at Validate), and jwt tunes the
// JWT verifiers (its Client should dial through the node's egress guard,
// so a manifest's jwks_url cannot reach what functions may not). Call it
// before the first Provision: routes already served keep what they had.
func (g *Gateway) SetAuth(keys Keys, jwt jwtauth.Options) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.auth = authConfig{keys: keys, jwt: jwt}
	g.verifiers = map[string]*jwtauth.Verifier{} // built again with the new options on the next swap
}

// authKey identifies a route auth configuration, so routes (and
// revisions) with the same one share a verifier and its cached keys.
func authKey(a *model.RouteAuth) string {
	b, _ := json.Marshal(a)
	return string(b)
}

// checkAuth refuses a revision whose route auth this gateway cannot
// enforce; g.mu is held.
func (g *Gateway) checkAuth(rev *model.Revision) error {
	for _, fn := range rev.Functions {
		for _, rt := range fn.Routes {
			if rt.Auth == nil {
				continue
			}
			switch rt.Auth.Type {
			case model.AuthKey:
				if g.auth.keys == nil {
					return fmt.Errorf("%w: route %q of function %s requires an API key, and this gateway has no key store to check one", model.ErrInvalid, rt.Pattern(), fn.Name)
				}
			case model.AuthJWT:
				if _, err := g.verifier(rt.Auth, nil); err != nil {
					return fmt.Errorf("route %q of function %s: %w", rt.Pattern(), fn.Name, err)
				}
			default:
				return fmt.Errorf("%w: route %q of function %s: auth type %q is not known to this gateway", model.ErrInvalid, rt.Pattern(), fn.Name, rt.Auth.Type)
			}
		}
	}
	return nil
}

// verifier returns the verifier of a, reusing one of g.verifiers; a new
// one is recorded in next when next is not nil. g.mu is held.
func (g *Gateway) verifier(a *model.RouteAuth, next map[string]*jwtauth.Verifier) (*jwtauth.Verifier, error) {
	k := authKey(a)
	if v := g.verifiers[k]; v != nil {
		if next != nil {
			next[k] = v
		}
		return v, nil
	}
	if v := next[k]; v != nil {
		return v, nil
	}
	v, err := jwtauth.New(a, g.auth.jwt)
	if err != nil {
		return nil, err
	}
	if next != nil {
		next[k] = v
	}
	return v, nil
}

// stripAuthHeaders removes every incoming header the gateway reserves for
// what it verified.
func stripAuthHeaders(h http.Header) {
	for name := range h {
		if strings.HasPrefix(name, HeaderAuth) { // canonical names: X-Nimbus-Auth, X-Nimbus-Auth-...
			delete(h, name)
		}
	}
}

// bearer returns the credential of an "Authorization: Bearer ..." header.
func bearer(r *http.Request) (string, bool) {
	v := r.Header.Get("Authorization")
	scheme, cred, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(cred) == "" {
		return "", false
	}
	return strings.TrimSpace(cred), true
}

// authorize checks r against the route's auth. On success it replaces the
// credential with what was verified (the function never sees the key or
// token) and returns true; otherwise it has answered.
func (rt *route) authorize(w http.ResponseWriter, r *http.Request) bool {
	a := rt.auth.spec
	cred, ok := bearer(r)
	if !ok {
		var msg string
		if a.Type == model.AuthKey {
			msg = fmt.Sprintf("%s %s requires an API key of app %s's tenant with the invoke scope: send Authorization: Bearer nmb_... (`nimbus key create NAME --scope invoke`)", r.Method, r.URL.Path, rt.app)
		} else {
			msg = fmt.Sprintf("%s %s requires a JWT from %s for audience %s: send Authorization: Bearer <token>", r.Method, r.URL.Path, a.Issuer, a.Audience)
		}
		rt.deny(w, apierror.New(http.StatusUnauthorized, "unauthorized", msg))
		return false
	}
	h := r.Header
	switch a.Type {
	case model.AuthKey:
		id, err := rt.auth.keys.CheckRouteKey(r.Context(), cred, rt.app)
		if err != nil {
			rt.deny(w, err)
			return false
		}
		h.Del("Authorization")
		h.Set(HeaderAuth, model.AuthKey)
		h.Set(HeaderAuthSubject, id.ID)
		if id.Tenant != "" {
			h.Set(HeaderAuthTenant, id.Tenant)
		}
	case model.AuthJWT:
		c, err := rt.auth.jwt.Verify(r.Context(), cred)
		switch {
		case errors.Is(err, jwtauth.ErrKeysUnavailable):
			rt.deny(w, apierror.Wrap(http.StatusServiceUnavailable, "auth_unavailable", err))
			return false
		case err != nil:
			rt.deny(w, apierror.Wrap(http.StatusUnauthorized, "invalid_token", err))
			return false
		}
		h.Del("Authorization")
		h.Set(HeaderAuth, model.AuthJWT)
		if c.Subject != "" {
			h.Set(HeaderAuthSubject, c.Subject)
		}
		for name, v := range c.Forward {
			h.Set(HeaderAuthClaimPrefix+name, v)
		}
	}
	return true
}

// AuthDenial is one request that a route's auth refused.
type AuthDenial struct {
	// App, Function and Route (its pattern, "GET /orders") say where.
	App, Function, Route string
	// Status and Code are what the client was answered: 401
	// unauthorized or invalid_token, 403 forbidden, 503 auth_unavailable.
	Status int
	Code   string
}

// SetAuthDenials makes the gateway report every request that route auth
// refuses to f, from the request's goroutine: f must not block (the
// server counts them and writes a summary to the audit log per window, so
// a flood of bad credentials cannot fill it). nil stops the reports.
func (g *Gateway) SetAuthDenials(f func(AuthDenial)) {
	if f == nil {
		g.onAuthDenied.Store(nil)
		return
	}
	g.onAuthDenied.Store(&f)
}

// deny answers a refused request; a 401 says how to authenticate
// (RFC 6750). The refusal counts in the request metrics (reason: its
// error code) and goes to the auth-denial sink.
func (rt *route) deny(w http.ResponseWriter, err error) {
	e := apierror.From(err)
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="nimbus"`)
	}
	rt.g.logger().Debug("route auth refused a request", "app", rt.app, "function", rt.fn.Name, "route", rt.pattern, "code", e.Code, "error", err)
	if m := rt.g.calls.Load().Metrics; m != nil {
		m.Refused(rt.app, rt.fn.Name, e.Status, e.Code)
	}
	if f := rt.g.onAuthDenied.Load(); f != nil {
		(*f)(AuthDenial{App: rt.app, Function: rt.fn.Name, Route: rt.pattern, Status: e.Status, Code: e.Code})
	}
	apierror.Write(w, e)
}

// checkAuthKeys refuses to serve routes with auth type key without a key
// store: they would answer 500 to everyone. g.mu is held.
func (g *Gateway) checkAuthKeys(revs map[string]*model.Revision) error {
	if g.auth.keys != nil {
		return nil
	}
	for _, rev := range revs {
		for _, fn := range rev.Functions {
			for _, rt := range fn.Routes {
				if rt.Auth != nil && rt.Auth.Type == model.AuthKey {
					return fmt.Errorf("%w: app %s: route %q requires an API key, and this gateway has no key store to check one", model.ErrInvalid, rev.App, rt.Pattern())
				}
			}
		}
	}
	return nil
}
