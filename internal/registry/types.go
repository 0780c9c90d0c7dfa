package registry

import (
	"time"

	"github.com/nimbus-dev/nimbus/internal/model"
)

// App is the mutable head of an app: which revision is active and which
// revisions it has had, newest last.
type App struct {
	Name string `json:"name"`
	// Tenant owns the app: set when the app is created, from the tenant
	// the deploy acts for (model.WithTenant), and never changed. Empty in
	// records written before tenants existed: read it with TenantName.
	Tenant    string        `json:"tenant,omitempty"`
	Active    string        `json:"active"` // revision id taking traffic
	History   []HistoryItem `json:"history"`
	UpdatedAt time.Time     `json:"updated_at"`
}

// TenantName is the app's owner, model.DefaultTenant for an app recorded
// before tenants existed.
func (a *App) TenantName() string { return model.TenantOr(a.Tenant) }

// HistoryItem records one activation of a revision.
type HistoryItem struct {
	Revision    string    `json:"revision"`
	ActivatedAt time.Time `json:"activated_at"`
	// Reason is "deploy" or "rollback".
	Reason string `json:"reason"`
}
