package server

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/policy"
	"github.com/nimbus-dev/nimbus/internal/registry"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/state"
)

// admission is the operator's policy as a component, first in the list:
// its Validate evaluates the policy's rules on a deploy or rollback and
// checks the tenant's count quotas (apps, functions) before any other
// component does work; its Provision remembers each app's tenant, which
// the per-request quotas (requests/s, KV bytes) read without a registry
// lookup. Restarts provision without validating, so a policy tightened
// later never takes a running app down: it gates the next change.
type admission struct {
	s      *Server
	policy *policy.Policy
	rates  *policy.Rates

	mu      sync.RWMutex
	tenants map[string]string // app -> tenant, for provisioned apps
	kv      map[string]*kvUsage
}

// kvUsage is a tenant's key-value bytes as last counted, plus what was
// put since; counted again when older than kvRecount or after a delete.
type kvUsage struct {
	bytes   int64
	counted time.Time
}

// kvRecount is how stale a tenant's counted KV bytes may be; puts in
// between add their own size, so a burst cannot run far past the quota.
const kvRecount = time.Second

func newAdmission(s *Server, p *policy.Policy) *admission {
	return &admission{s: s, policy: p, rates: policy.NewRates(nil), tenants: map[string]string{}, kv: map[string]*kvUsage{}}
}

// tenantFor is the tenant that owns (or, deployed now, will own) app.
func (a *admission) tenantFor(ctx context.Context, app string) (string, error) {
	head, err := a.s.reg.App(ctx, app)
	if errors.Is(err, registry.ErrAppNotFound) {
		return model.TenantOr(model.TenantOf(ctx)), nil
	}
	if err != nil {
		return "", err
	}
	return head.TenantName(), nil
}

// Validate implements Component: the rules, then the count quotas.
func (a *admission) Validate(ctx context.Context, rev *model.Revision) error {
	if a.policy == nil {
		return nil
	}
	tenant, err := a.tenantFor(ctx, rev.App)
	if err != nil {
		return err
	}
	if err := a.policy.Check(rev, tenant); err != nil {
		return err
	}
	q := a.policy.QuotasOf(tenant)
	if q.Apps == 0 && q.Functions == 0 {
		return nil
	}
	apps, err := a.s.reg.Apps(ctx)
	if err != nil {
		return err
	}
	owned, fns, exists := 0, len(rev.Functions), false
	for _, app := range apps {
		if app.TenantName() != tenant {
			continue
		}
		if app.Name == rev.App {
			exists = true
			continue
		}
		owned++
		if q.Functions > 0 && app.Active != "" {
			other, err := a.s.reg.Revision(ctx, app.Name, app.Active)
			if err != nil {
				return err
			}
			fns += len(other.Functions)
		}
	}
	if q.Apps > 0 && !exists && int64(owned) >= q.Apps {
		return &policy.QuotaError{Tenant: tenant, Quota: policy.QuotaApps, Limit: float64(q.Apps), Used: float64(owned)}
	}
	if q.Functions > 0 && int64(fns) > q.Functions {
		return &policy.QuotaError{Tenant: tenant, Quota: policy.QuotaFunctions, Limit: float64(q.Functions), Used: float64(fns)}
	}
	return nil
}

// Provision implements Component: it records the app's tenant.
func (a *admission) Provision(ctx context.Context, rev *model.Revision) error {
	head, err := a.s.reg.App(ctx, rev.App)
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.tenants[rev.App] = head.TenantName()
	return nil
}

// Retire implements Component.
func (a *admission) Retire(_ context.Context, app string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if t, ok := a.tenants[app]; ok {
		delete(a.kv, t) // count again without the app's buckets
	}
	delete(a.tenants, app)
	return nil
}

// Close implements Component.
func (a *admission) Close(context.Context) error { return nil }

func (a *admission) tenantOf(app string) string {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.tenants[app]
}

// allowRequest takes one request of app's tenant from its requests/s
// quota: nil, or a *policy.QuotaError with RetryAfter.
func (a *admission) allowRequest(app string) error {
	if !a.policy.HasQuotas() {
		return nil
	}
	tenant := a.tenantOf(app)
	if tenant == "" {
		return nil // not deployed: the caller answers that
	}
	return a.rates.Allow(tenant, a.policy.QuotasOf(tenant).RequestsPerSecond)
}

// allowPut checks that app's tenant may store n more bytes of key-value
// data, and counts them.
func (a *admission) allowPut(ctx context.Context, app string, n int64) error {
	if !a.policy.HasQuotas() {
		return nil
	}
	tenant := a.tenantOf(app)
	limit := a.policy.QuotasOf(tenant).KVBytes
	if tenant == "" || limit == 0 {
		return nil
	}
	a.mu.Lock()
	u := a.kv[tenant]
	a.mu.Unlock()
	if u == nil || time.Since(u.counted) > kvRecount {
		used, err := a.countKV(ctx, tenant)
		if err != nil {
			return err
		}
		u = &kvUsage{bytes: used, counted: time.Now()}
	}
	if u.bytes+n > limit {
		a.mu.Lock()
		a.kv[tenant] = u
		a.mu.Unlock()
		return &policy.QuotaError{Tenant: tenant, Quota: policy.QuotaKVBytes, Limit: float64(limit), Used: float64(u.bytes)}
	}
	a.mu.Lock()
	u.bytes += n
	a.kv[tenant] = u
	a.mu.Unlock()
	return nil
}

// forgetKV makes the next put of app's tenant count its bytes again (a
// delete freed some).
func (a *admission) forgetKV(app string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.kv, a.tenants[app])
}

// countKV is the bytes the store holds for tenant's buckets: the sum of
// their streams' sizes (every kept revision, with keys and headers).
func (a *admission) countKV(ctx context.Context, tenant string) (int64, error) {
	a.mu.RLock()
	var apps []string
	for app, t := range a.tenants {
		if t == tenant {
			apps = append(apps, app)
		}
	}
	a.mu.RUnlock()
	var total int64
	for _, app := range apps {
		rev := a.s.activeRevision(app)
		if rev == nil {
			continue
		}
		for _, b := range rev.Buckets {
			st, err := a.s.store.JetStream().Stream(ctx, "KV_"+state.BucketName(app, b.Name))
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				continue
			}
			if err != nil {
				return 0, fmt.Errorf("count key-value bytes of tenant %s: %w", tenant, err)
			}
			info, err := st.Info(ctx)
			if err != nil {
				return 0, fmt.Errorf("count key-value bytes of tenant %s: %w", tenant, err)
			}
			total += int64(info.State.Bytes)
		}
	}
	return total, nil
}

// quotaKV is the node's buckets with the tenants' kv_bytes quota checked
// on every put, whoever puts: the API or a function.
type quotaKV struct {
	*state.Buckets
	a *admission
}

// Put checks the quota, then puts.
func (k quotaKV) Put(ctx context.Context, app, bucket, key string, value []byte, opts state.PutOptions) (uint64, error) {
	if err := k.a.allowPut(ctx, app, int64(len(key)+len(value))); err != nil {
		return 0, fmt.Errorf("put %s/%s %q: %w", app, bucket, key, err)
	}
	return k.Buckets.Put(ctx, app, bucket, key, value, opts)
}

// CheckPut checks the put as Put would, the quota included, without
// writing; the bytes are counted against the quota as Put counts them (a
// journaled workflow step's write: checked when the step makes it,
// applied without a check after the step commits).
func (k quotaKV) CheckPut(ctx context.Context, app, bucket, key string, value []byte, opts state.PutOptions) error {
	if err := k.Buckets.CheckPut(ctx, app, bucket, key, value, opts); err != nil {
		return err
	}
	if err := k.a.allowPut(ctx, app, int64(len(key)+len(value))); err != nil {
		return fmt.Errorf("put %s/%s %q: %w", app, bucket, key, err)
	}
	return nil
}

// Delete deletes, and has the tenant's bytes counted again.
func (k quotaKV) Delete(ctx context.Context, app, bucket, key string, ifRevision *uint64) error {
	err := k.Buckets.Delete(ctx, app, bucket, key, ifRevision)
	if err == nil {
		k.a.forgetKV(app)
	}
	return err
}

// rateLimited is an invoker whose calls first take a request of the
// app's tenant's requests/s quota.
type rateLimited struct {
	a    *admission
	next interface {
		Invoke(ctx context.Context, app, function string, req *runtime.Request) (*runtime.Response, error)
	}
}

func (r rateLimited) Invoke(ctx context.Context, app, function string, req *runtime.Request) (*runtime.Response, error) {
	if err := r.a.allowRequest(app); err != nil {
		return nil, err
	}
	return r.next.Invoke(ctx, app, function, req)
}
