package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/nimbus-dev/nimbus/internal/apierror"
	"github.com/nimbus-dev/nimbus/internal/audit"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/policy"
	"github.com/nimbus-dev/nimbus/internal/registry"
	"github.com/nimbus-dev/nimbus/internal/security"
)

// Tenancy says how a route keeps tenants apart. Every route has one: a
// route whose pattern has {app} is TenancyApp; any other must be listed in
// routeTenancy, or Handler panics when it registers it, so a new route
// cannot forget the question.
type Tenancy string

// Tenancies.
const (
	// TenancyApp: the route acts on the app of its {app} path value; a
	// tenant's key gets 403 wrong_tenant on another tenant's app (the
	// guard checks before the handler runs).
	TenancyApp Tenancy = "app"
	// TenancyInvocation: the route acts on an async invocation; the
	// guard checks its app's tenant.
	TenancyInvocation Tenancy = "invocation"
	// TenancyFiltered: the route lists or creates things of several
	// tenants; its handler shows a tenant's key only its own tenant's.
	TenancyFiltered Tenancy = "filtered"
	// TenancyShared: the route holds no tenant's data (artifacts are
	// named by their sha256: asking for one proves knowing its bytes).
	TenancyShared Tenancy = "shared"
	// TenancyNode: for node-wide keys only (a tenant's key gets 403).
	TenancyNode Tenancy = "node"
	// TenancyPublic: no token at all (metrics, scraped by Prometheus).
	TenancyPublic Tenancy = "public"
)

// routeTenancy is the tenancy of every route without {app}.
var routeTenancy = map[string]Tenancy{
	"GET /api/v1/status":           TenancyFiltered,
	"HEAD /api/v1/artifacts/{sha}": TenancyShared,
	"PUT /api/v1/artifacts/{sha}":  TenancyShared,
	"GET /api/v1/apps":             TenancyFiltered,
	"GET /api/v1/invocations/{id}": TenancyInvocation,
	"POST /api/v1/tokens":          TenancyFiltered,
	"GET /api/v1/tokens":           TenancyFiltered,
	"DELETE /api/v1/tokens/{ref}":  TenancyFiltered,
	"GET /api/v1/audit":            TenancyFiltered,
	"GET /api/v1/audit/verify":     TenancyNode,
	"GET /metrics":                 TenancyPublic,
}

// auditActions names the action recorded in the audit log for each call
// of a control-plane route, allowed or not.
var auditActions = map[string]string{
	"POST /api/v1/apps/{app}/deploy":           "deploy",
	"POST /api/v1/apps/{app}/rollback":         "rollback",
	"DELETE /api/v1/apps/{app}":                "delete",
	"POST /api/v1/tokens":                      "key.create",
	"DELETE /api/v1/tokens/{ref}":              "key.revoke",
	"PUT /api/v1/apps/{app}/secrets/{name}":    "secret.set",
	"DELETE /api/v1/apps/{app}/secrets/{name}": "secret.rm",
}

// Route is one endpoint of the API as Handler registered it.
type Route struct {
	Pattern string
	// Scope a token needs ("" for TenancyPublic).
	Scope   security.Scope
	Tenancy Tenancy
	// Audit is the action each call records in the audit log; "" for
	// none.
	Audit string
}

// Mux is the API's handler: a ServeMux that knows its routes.
type Mux struct {
	mux    *http.ServeMux
	routes []Route
}

func (m *Mux) ServeHTTP(w http.ResponseWriter, r *http.Request) { m.mux.ServeHTTP(w, r) }

// Routes lists every route, in the order registered.
func (m *Mux) Routes() []Route { return append([]Route(nil), m.routes...) }

// routeOf describes pattern; it panics for a route that does not say how
// it keeps tenants apart (a programming error, caught by any test).
func routeOf(pattern string, scope security.Scope) Route {
	rt := Route{Pattern: pattern, Scope: scope, Tenancy: routeTenancy[pattern], Audit: auditActions[pattern]}
	if strings.Contains(pattern, "{app}") {
		rt.Tenancy = TenancyApp
	}
	if rt.Tenancy == "" {
		panic(fmt.Sprintf("api: route %q has no {app} and no entry in routeTenancy: say how it keeps tenants apart", pattern))
	}
	return rt
}

// AuditLog is the node's audit log; *audit.Log implements it.
type AuditLog interface {
	Append(ctx context.Context, e audit.Entry) (audit.Entry, error)
	List(ctx context.Context, f audit.Filter) ([]audit.Entry, error)
	Verify(ctx context.Context) (*audit.Report, error)
}

var _ AuditLog = (*audit.Log)(nil)

// AuditPlatform is a Platform with an audit log: Handler records the
// control-plane calls in it and serves /api/v1/audit when the Platform is
// one.
type AuditPlatform interface {
	Audit() AuditLog
}

// Actor names an identity in the audit log: its key id and name.
func Actor(id *security.Identity) string {
	if id.ID == "" {
		return id.Name
	}
	return id.ID + " " + id.Name
}

// tenantOfTarget finds the tenant owning what rt acts on, and refuses a
// key of another tenant: 403 wrong_tenant. It returns "" when the route
// acts on no tenant's thing, or on an app not created yet.
func (a *api) tenantOfTarget(ctx context.Context, rt Route, id *security.Identity, r *http.Request) (string, error) {
	var app string
	audited := rt.Audit != "" && a.audit != nil
	switch rt.Tenancy {
	case TenancyNode:
		if !id.NodeWide() {
			return "", apierror.New(http.StatusForbidden, "node_key_required",
				fmt.Sprintf("%s needs a node-wide key; key %q is bound to tenant %s", rt.Pattern, id.Name, id.Tenant))
		}
		return "", nil
	case TenancyApp:
		app = r.PathValue("app")
	case TenancyInvocation:
		if id.NodeWide() && !audited {
			return "", nil
		}
		inv, err := a.p.Invocation(ctx, r.PathValue("id"))
		if err != nil {
			return "", err
		}
		app = inv.App
	default:
		return id.Tenant, nil
	}
	if id.NodeWide() && !audited {
		return "", nil // nothing to check, nothing to record
	}
	head, err := a.p.Registry().App(ctx, app)
	if errors.Is(err, registry.ErrAppNotFound) {
		if rt.Audit == "deploy" || id.NodeWide() {
			// Created by this deploy, in the caller's tenant (the
			// registry checks again as it creates it).
			return model.TenantOr(id.Tenant), nil
		}
		return "", fmt.Errorf("%w: no app %q in tenant %s (a tenant's key reaches only the apps its tenant deployed)", registry.ErrAppNotFound, app, id.Tenant)
	}
	if err != nil {
		return "", err
	}
	if !id.Reaches(head.Tenant) {
		return head.TenantName(), &model.TenantError{App: app, Tenant: head.TenantName(), Caller: id.Tenant}
	}
	return head.TenantName(), nil
}

// auditTarget is what a call acts on, from its path: the app (and the
// secret's name), or the key referred to. A handler may say better with
// noteAudit.
func auditTarget(r *http.Request) string {
	t := r.PathValue("app")
	if n := r.PathValue("name"); n != "" {
		t += "/" + n
	}
	if ref := r.PathValue("ref"); ref != "" {
		t = ref
	}
	return t
}

// auditNote is what a handler adds to its call's audit entry.
type auditNote struct {
	target, detail, tenant, outcome string
}

type auditNoteKey struct{}

// noteAudit sets the target (if not empty), detail and tenant (if not
// empty) of the call's audit entry, when the call is audited.
func noteAudit(ctx context.Context, target, detail, tenant string) {
	if n, ok := ctx.Value(auditNoteKey{}).(*auditNote); ok {
		if target != "" {
			n.target = target
		}
		if tenant != "" {
			n.tenant = tenant
		}
		n.detail = detail
	}
}

// record appends the audit entry of a call; a failure to do so is logged
// (the action already happened: refusing to answer would not undo it).
func (a *api) record(ctx context.Context, e audit.Entry) {
	if a.audit == nil {
		return
	}
	if _, err := a.audit.Append(context.WithoutCancel(ctx), e); err != nil {
		a.logger.Error("audit entry not recorded", "action", e.Action, "target", e.Target, "outcome", e.Outcome, "error", err)
	}
}

// auditDetail is the detail of a refused call's audit entry: the error
// code, and for the operator's policy the rules broken or the quota hit,
// so `nimbus audit ls` says why without the full message.
func auditDetail(err error) string {
	code := apierror.From(err).Code
	var de *policy.DeniedError
	var qe *policy.QuotaError
	switch {
	case errors.As(err, &de):
		return code + ": rules " + de.Rules()
	case errors.As(err, &qe):
		return code + ": " + qe.Quota
	}
	return code
}

// outcomeOf reads a call's audit outcome from its answer.
func outcomeOf(status int) string {
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return audit.OutcomeDenied
	case status >= 400:
		return audit.OutcomeFailed
	}
	return audit.OutcomeOK
}

// statusWriter remembers the status a handler answered.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush lets streaming answers (logs --follow) through.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
