package api

import (
	"net/http"
	"strconv"
	"time"

	"github.com/nimbus-dev/nimbus/internal/apierror"
	"github.com/nimbus-dev/nimbus/internal/audit"
	"github.com/nimbus-dev/nimbus/internal/security"
)

// auditRoutes serves the audit log: GET /api/v1/audit lists entries
// (filters: tenant, action, target, since, limit; a tenant's key sees its
// tenant's only) and GET /api/v1/audit/verify checks the chain (node-wide
// keys). Both need the admin scope.
func auditRoutes(handle handleFunc, log AuditLog) {
	handle("GET /api/v1/audit", security.ScopeAdmin, func(w http.ResponseWriter, r *http.Request) error {
		q := r.URL.Query()
		f := audit.Filter{Tenant: q.Get("tenant"), Action: q.Get("action"), Target: q.Get("target")}
		if caller := identity(r.Context()); caller != nil && !caller.NodeWide() {
			if f.Tenant != "" && f.Tenant != caller.Tenant {
				return apierror.New(http.StatusForbidden, "wrong_tenant", "a key of tenant "+caller.Tenant+" reads its tenant's audit entries only")
			}
			f.Tenant = caller.Tenant
		}
		if s := q.Get("since"); s != "" {
			t, err := parseSince(s, time.Now())
			if err != nil {
				return apierror.New(http.StatusBadRequest, "bad_since", err.Error())
			}
			f.Since = t
		}
		if s := q.Get("limit"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 0 {
				return apierror.New(http.StatusBadRequest, "bad_limit", "limit must be a non-negative integer")
			}
			f.Limit = n
		}
		entries, err := log.List(r.Context(), f)
		if err != nil {
			return err
		}
		if entries == nil {
			entries = []audit.Entry{}
		}
		return writeJSON(w, http.StatusOK, entries)
	})
	handle("GET /api/v1/audit/verify", security.ScopeAdmin, func(w http.ResponseWriter, r *http.Request) error {
		rep, err := log.Verify(r.Context())
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, rep)
	})
}
