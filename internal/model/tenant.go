package model

import "context"

// DefaultTenant owns every app deployed before tenants existed and every
// app a node-wide key (one bound to no tenant) creates.
const DefaultTenant = "default"

// Tenant names follow the one name rule (ValidName): they become parts of
// keys and subjects like app names do.

// TenantOr returns t, or DefaultTenant when t is empty: how an app record
// written before tenants existed reads.
func TenantOr(t string) string {
	if t == "" {
		return DefaultTenant
	}
	return t
}

type tenantKey struct{}

// WithTenant returns ctx acting for tenant t: an app created under it
// belongs to t, and a change to an app of another tenant is refused by the
// registry (a *TenantError). The control-plane API sets it from the
// caller's key; an empty t (a node-wide key, the node itself) acts for
// every tenant and creates apps in DefaultTenant.
func WithTenant(ctx context.Context, t string) context.Context {
	return context.WithValue(ctx, tenantKey{}, t)
}

// TenantOf returns the tenant ctx acts for; "" means every tenant.
func TenantOf(ctx context.Context) string {
	t, _ := ctx.Value(tenantKey{}).(string)
	return t
}

// TenantError is a call for an app owned by another tenant than the
// caller's.
type TenantError struct {
	App    string
	Tenant string // the app's owner
	Caller string // the tenant the caller acts for
}

func (e *TenantError) Error() string {
	return "app " + e.App + " belongs to another tenant than " + e.Caller + "'s key; use a key of the app's tenant, or a node-wide key"
}
