package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nimbus-dev/nimbus/internal/apierror"
	"github.com/nimbus-dev/nimbus/internal/audit"
	"github.com/nimbus-dev/nimbus/internal/security"
)

// TokenManager issues, lists and revokes tokens; *security.Tokens
// implements it. Handler serves the /api/v1/tokens endpoints when its
// Authenticator is one.
type TokenManager interface {
	Authenticator
	Issue(ctx context.Context, spec security.TokenSpec) (string, security.TokenInfo, error)
	List(ctx context.Context) ([]security.TokenInfo, error)
	RevokeIn(ctx context.Context, tenant, ref string) (security.TokenInfo, error)
}

var _ TokenManager = (*security.Tokens)(nil)

// HeaderRequiredScope names, on a 403 answer, the scope the call needed.
// HEAD answers have no body, so clients read the missing scope here.
const HeaderRequiredScope = "X-Nimbus-Required-Scope"

// CreateTokenRequest is the body of POST /api/v1/tokens.
type CreateTokenRequest struct {
	Name   string   `json:"name"`
	Scopes []string `json:"scopes"`
	// ExpiresIn is the token's lifetime: a Go duration (720h, 90m) or a
	// number of days (30d); empty: it never expires.
	ExpiresIn string `json:"expires_in,omitempty"`
	// Tenant binds the token to one tenant's apps (a key of that
	// tenant); empty: node-wide, or the caller's tenant when the caller's
	// own key is bound to one (it can make keys of its tenant only).
	Tenant string `json:"tenant,omitempty"`
}

// CreatedToken is the answer of POST /api/v1/tokens: the only time the
// token's secret is shown.
type CreatedToken struct {
	Token string `json:"token"`
	TokenInfo
}

// TokenInfo is a token as GET /api/v1/tokens lists it: never the secret.
type TokenInfo struct {
	security.TokenInfo
	Expired bool `json:"expired,omitempty"`
}

// LocalInfo is the answer of GET /local/v1/info on the local socket: where
// the node's API listens, for a CLI that reached it through its data
// directory.
type LocalInfo struct {
	APIURL  string `json:"api_url"`
	Version string `json:"version"`
}

// LocalIdentity is the identity of calls made over the data directory's
// local socket: whoever can open it owns the data anyway.
var LocalIdentity = security.Identity{Name: "local", Scopes: []security.Scope{security.ScopeAdmin}}

type identityKey struct{}

// withIdentity records who made the call, for handlers that need it.
func withIdentity(ctx context.Context, id *security.Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

func identityOf(ctx context.Context) string {
	if id := identity(ctx); id != nil {
		return id.Name
	}
	return ""
}

// identity is who made the call; nil outside the guard.
func identity(ctx context.Context) *security.Identity {
	id, _ := ctx.Value(identityKey{}).(*security.Identity)
	return id
}

// bearerToken reads "Authorization: Bearer <token>"; the scheme is
// case-insensitive (RFC 9110 section 11.1).
func bearerToken(header string) (string, bool) {
	scheme, rest, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token := strings.TrimSpace(rest)
	return token, token != ""
}

type handleFunc = func(string, security.Scope, func(http.ResponseWriter, *http.Request) error)

func tokenRoutes(handle handleFunc, tm TokenManager) {
	t := tokenAPI{tm}
	handle("POST /api/v1/tokens", security.ScopeAdmin, t.create)
	handle("GET /api/v1/tokens", security.ScopeAdmin, t.list)
	handle("DELETE /api/v1/tokens/{ref}", security.ScopeAdmin, t.revoke)
}

type tokenAPI struct{ tm TokenManager }

func (t tokenAPI) create(w http.ResponseWriter, r *http.Request) error {
	var req CreateTokenRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	scopes, err := security.ParseScopes(req.Scopes)
	if err != nil {
		return tokenError(err)
	}
	ttl, err := ParseTTL(req.ExpiresIn)
	if err != nil {
		return apierror.New(http.StatusBadRequest, "invalid_token_request", err.Error())
	}
	tenant := req.Tenant
	if caller := identity(r.Context()); caller != nil && !caller.NodeWide() {
		if tenant != "" && tenant != caller.Tenant {
			return apierror.New(http.StatusForbidden, "wrong_tenant",
				fmt.Sprintf("key %q of tenant %s can make keys of its own tenant only, not of %s; a node-wide admin key can", caller.Name, caller.Tenant, tenant))
		}
		tenant = caller.Tenant
	}
	tok, info, err := t.tm.Issue(r.Context(), security.TokenSpec{Name: req.Name, Scopes: scopes, TTL: ttl, CreatedBy: identityOf(r.Context()), Tenant: tenant})
	if err != nil {
		return tokenError(err)
	}
	noteAudit(r.Context(), info.ID, "name "+info.Name+", scopes "+scopeList(info.Scopes), tenant)
	return writeJSON(w, http.StatusCreated, CreatedToken{Token: tok, TokenInfo: TokenInfo{TokenInfo: info}})
}

func (t tokenAPI) list(w http.ResponseWriter, r *http.Request) error {
	all, err := t.tm.List(r.Context())
	if err != nil {
		return err
	}
	now := time.Now()
	out := make([]TokenInfo, 0, len(all))
	caller := identity(r.Context())
	for _, info := range all {
		if caller != nil && !caller.NodeWide() && info.Tenant != caller.Tenant {
			continue
		}
		out = append(out, TokenInfo{TokenInfo: info, Expired: info.Expired(now)})
	}
	return writeJSON(w, http.StatusOK, out)
}

func (t tokenAPI) revoke(w http.ResponseWriter, r *http.Request) error {
	tenant := ""
	if caller := identity(r.Context()); caller != nil {
		tenant = caller.Tenant
	}
	info, err := t.tm.RevokeIn(r.Context(), tenant, r.PathValue("ref"))
	if err != nil {
		return tokenError(err)
	}
	noteAudit(r.Context(), info.ID, "name "+info.Name, info.Tenant)
	return writeJSON(w, http.StatusOK, TokenInfo{TokenInfo: info, Expired: info.Expired(time.Now())})
}

func scopeList(s []security.Scope) string {
	return strings.Join(scopeStrings(s), ",")
}

func scopeStrings(s []security.Scope) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = string(v)
	}
	return out
}

// tokenError maps token management errors to API errors.
func tokenError(err error) error {
	switch {
	case errors.Is(err, security.ErrInvalid):
		return apierror.Wrap(http.StatusBadRequest, "invalid_token_request", err)
	case errors.Is(err, security.ErrTokenNotFound):
		return apierror.Wrap(http.StatusNotFound, "token_not_found", err)
	case errors.Is(err, security.ErrAmbiguous):
		return apierror.Wrap(http.StatusConflict, "ambiguous_token", err)
	}
	return err
}

// ParseTTL reads a token lifetime (CreateTokenRequest.ExpiresIn): ""
// (none), a Go duration, or whole days ("30d").
func ParseTTL(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err == nil && n > 0 {
			return time.Duration(n) * 24 * time.Hour, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("expires_in %q: use a positive duration (90m, 12h) or a number of days (30d)", s)
	}
	return d, nil
}

// LocalHandler serves the token endpoints on a node's local socket (a Unix
// socket in its data directory, reachable only by the user who runs the
// node), as LocalIdentity and without a bearer token: it is how an operator
// who lost the admin token mints a new one (`nimbus token create --data
// DIR`). GET /local/v1/info says where the node's API listens.
//
// Calls of audited routes (key.create, key.revoke) are recorded in log,
// when not nil, with the actor "local".
func LocalHandler(tm TokenManager, info LocalInfo, log AuditLog) http.Handler {
	mux := http.NewServeMux()
	a := &api{audit: log, logger: slog.Default()}
	local := func(pattern string, _ security.Scope, h func(http.ResponseWriter, *http.Request) error) {
		action := auditActions[pattern]
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			id := LocalIdentity
			ctx := withIdentity(r.Context(), &id)
			note := &auditNote{target: auditTarget(r)}
			if action != "" {
				ctx = context.WithValue(ctx, auditNoteKey{}, note)
			}
			sw := &statusWriter{ResponseWriter: w}
			err := h(sw, r.WithContext(ctx))
			if err != nil {
				apierror.Write(sw, err)
				note.detail = apierror.From(err).Code
			}
			if action != "" {
				a.record(ctx, audit.Entry{Actor: Actor(&id), Tenant: note.tenant, Action: action,
					Target: note.target, Outcome: outcomeOf(sw.status), Detail: note.detail})
			}
		})
	}
	tokenRoutes(local, tm)
	local("GET /local/v1/info", security.ScopeAdmin, func(w http.ResponseWriter, r *http.Request) error {
		return writeJSON(w, http.StatusOK, info)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		apierror.Write(w, apierror.New(http.StatusNotFound, "not_found",
			fmt.Sprintf("the local socket serves only the token endpoints, not %s %s", r.Method, r.URL.Path)))
	})
	return mux
}
