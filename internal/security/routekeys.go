package security

import (
	"context"
	"errors"
	"fmt"

	"github.com/nimbus-dev/nimbus/internal/model"
)

// ErrForbidden means a valid key that may not do what was asked: it lacks
// the scope, or belongs to another tenant.
var ErrForbidden = errors.New("forbidden")

// CheckInvoke is the check of a route with auth type key: token must be a
// live key that holds the invoke scope (or admin) and reaches tenant, the
// owner of the route's app (a node-wide key reaches every tenant). It
// returns the key's identity, or an error wrapping ErrUnauthorized (no such
// key, expired) or ErrForbidden (another tenant's key, no invoke scope).
// Messages name the key, never its secret.
func (t *Tokens) CheckInvoke(ctx context.Context, token, tenant string) (*Identity, error) {
	id, err := t.Verify(ctx, token)
	if err != nil {
		return nil, err
	}
	if !id.Reaches(tenant) {
		return nil, fmt.Errorf("%w: key %q belongs to tenant %s; this route's app belongs to another tenant: use one of its keys", ErrForbidden, id.Name, id.Tenant)
	}
	if !id.Allows(ScopeInvoke) {
		return nil, fmt.Errorf("%w: key %q lacks the %s scope this route needs (create one: `nimbus key create NAME --tenant %s --scope invoke`)", ErrForbidden, id.Name, ScopeInvoke, model.TenantOr(tenant))
	}
	return id, nil
}
