package server

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/nimbus-dev/nimbus/internal/capability"
	"github.com/nimbus-dev/nimbus/internal/gateway"
	"github.com/nimbus-dev/nimbus/internal/registry"
	"github.com/nimbus-dev/nimbus/internal/security"
	"github.com/nimbus-dev/nimbus/internal/security/jwtauth"
)

// routeKeys checks the API keys of routes with auth type key: a key of
// the app's tenant (or node-wide) with the invoke scope.
type routeKeys struct {
	tokens *security.Tokens
	reg    *registry.Registry
	// tenants caches each app's tenant: it is set when the app is created
	// and never changes (a deleted app's name stays with its tenant), so
	// a cached answer cannot go stale, and a request costs no registry read.
	tenants sync.Map // app -> tenant
}

var _ gateway.Keys = (*routeKeys)(nil)

func (k *routeKeys) CheckRouteKey(ctx context.Context, key, app string) (gateway.KeyIdentity, error) {
	tenant, ok := k.tenants.Load(app)
	if !ok {
		a, err := k.reg.App(ctx, app)
		if err != nil {
			return gateway.KeyIdentity{}, fmt.Errorf("route auth: tenant of app %s: %w", app, err)
		}
		tenant, _ = k.tenants.LoadOrStore(app, a.TenantName())
	}
	id, err := k.tokens.CheckInvoke(ctx, key, tenant.(string))
	if err != nil {
		return gateway.KeyIdentity{}, err
	}
	return gateway.KeyIdentity{ID: id.ID, Tenant: id.Tenant}, nil
}

// jwksClient fetches the JWKS of routes through the egress guard: a
// manifest's jwks_url reaches only what a function's fetch could (public
// addresses, and ranges the operator allowed), never the node itself.
func jwksClient(guard *capability.NetGuard) *http.Client {
	return &http.Client{
		Timeout:   jwtauth.DefaultFetchTimeout,
		Transport: &http.Transport{DialContext: guard.DialContext, Proxy: nil, MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute},
	}
}
