package security_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/security"
)

// TestCheckInvoke: a route with auth type key admits a key of the app's
// tenant with invoke (or admin) and a node-wide one; another tenant's key
// and a key without invoke are forbidden; unknown and expired keys are
// unauthorized. Messages never carry the key.
func TestCheckInvoke(t *testing.T) {
	ctx := context.Background()
	tokens := security.NewTokens(openStore(t, t.TempDir()).Security())
	issue := func(name, tenant string, ttl time.Duration, scopes ...security.Scope) string {
		t.Helper()
		tok, _, err := tokens.Issue(ctx, security.TokenSpec{Name: name, Tenant: tenant, Scopes: scopes, TTL: ttl})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	invokeA := issue("a-invoke", "team-a", 0, security.ScopeInvoke)
	adminA := issue("a-admin", "team-a", 0, security.ScopeAdmin)
	readA := issue("a-read", "team-a", 0, security.ScopeRead)
	invokeB := issue("b-invoke", "team-b", 0, security.ScopeInvoke)
	nodeWide := issue("ops", "", 0, security.ScopeInvoke)
	expired := issue("old", "team-a", time.Millisecond, security.ScopeInvoke)
	for deadline := time.Now().Add(5 * time.Second); ; { // the 1ms lifetime passes on the wall clock
		if _, err := tokens.Verify(ctx, expired); err != nil || time.Now().After(deadline) {
			break
		}
	}
	for _, c := range []struct {
		name, token, tenant string
		want                error
		msg                 string
	}{
		{"own tenant", invokeA, "team-a", nil, ""},
		{"admin implies invoke", adminA, "team-a", nil, ""},
		{"node-wide", nodeWide, "team-a", nil, ""},
		{"default tenant by empty name", nodeWide, "", nil, ""},
		{"other tenant", invokeB, "team-a", security.ErrForbidden, `key "b-invoke" belongs to tenant team-b`},
		{"no invoke scope", readA, "team-a", security.ErrForbidden, `key "a-read" lacks the invoke scope`},
		{"tenant key on default app", invokeA, "", security.ErrForbidden, "belongs to tenant team-a"},
		{"unknown", security.TokenPrefix + strings.Repeat("x", 43), "team-a", security.ErrUnauthorized, "unknown token"},
		{"not a key", "Basic abc", "team-a", security.ErrUnauthorized, "not a Nimbus token"},
		{"expired", expired, "team-a", security.ErrUnauthorized, "expired"},
	} {
		id, err := tokens.CheckInvoke(ctx, c.token, c.tenant)
		if c.want == nil {
			if err != nil || id == nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: %v, want %v with %q", c.name, err, c.want, c.msg)
		}
		if strings.Contains(err.Error(), strings.TrimPrefix(c.token, security.TokenPrefix)) {
			t.Errorf("%s: the error shows the key", c.name)
		}
	}
}
