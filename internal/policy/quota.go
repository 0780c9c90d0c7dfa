package policy

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/nimbus-dev/nimbus/internal/model"
)

// Quota names (QuotaError.Quota), as written in the policy file.
const (
	QuotaApps              = "apps"
	QuotaFunctions         = "functions"
	QuotaKVBytes           = "kv_bytes"
	QuotaRequestsPerSecond = "requests_per_second"
)

// ErrQuota is matched (errors.Is) by every *QuotaError.
var ErrQuota = errors.New("over the tenant's quota")

// QuotaError is a call refused because its tenant is at a quota.
type QuotaError struct {
	Tenant string
	// Quota is QuotaApps, QuotaFunctions, QuotaKVBytes or
	// QuotaRequestsPerSecond.
	Quota string
	// Limit is the quota; Used is what the tenant holds (or would hold
	// with this call).
	Limit, Used float64
	// RetryAfter is, for the request rate, when a request would be let
	// through.
	RetryAfter time.Duration
}

func (e *QuotaError) Error() string {
	t := model.TenantOr(e.Tenant)
	switch e.Quota {
	case QuotaApps:
		return fmt.Sprintf("tenant %s is at its quota of %d apps: delete an app (`nimbus delete APP`) or ask the operator to raise quotas.%s.apps", t, int64(e.Limit), tenantKey(t))
	case QuotaFunctions:
		return fmt.Sprintf("tenant %s may have %d functions across its apps and this deploy would make %d: remove functions or ask the operator to raise quotas.%s.functions", t, int64(e.Limit), int64(e.Used), tenantKey(t))
	case QuotaKVBytes:
		return fmt.Sprintf("tenant %s's key-value buckets hold %s, at its quota of %s: delete keys (deleting frees space) or ask the operator to raise quotas.%s.kv_bytes",
			t, model.FormatBytes(uint64(e.Used)), model.FormatBytes(uint64(e.Limit)), tenantKey(t))
	case QuotaRequestsPerSecond:
		return fmt.Sprintf("tenant %s is over its quota of %g requests per second: retry after %s", t, e.Limit, e.RetryAfter.Round(time.Millisecond))
	}
	return fmt.Sprintf("tenant %s is over its %s quota (%g)", t, e.Quota, e.Limit)
}

func tenantKey(t string) string { return "tenants." + t }

// Is matches ErrQuota.
func (e *QuotaError) Is(target error) bool { return target == ErrQuota }

// Rates keeps one token bucket per tenant: a tenant may make its quota's
// requests per second, in bursts of up to one second's worth. Safe for
// concurrent use.
type Rates struct {
	now func() time.Time

	mu      sync.Mutex
	buckets map[string]*tokens
}

type tokens struct {
	n    float64 // tokens left
	last time.Time
	rate float64
}

// NewRates returns an empty set of buckets on clock now (time.Now if nil).
func NewRates(now func() time.Time) *Rates {
	if now == nil {
		now = time.Now
	}
	return &Rates{now: now, buckets: map[string]*tokens{}}
}

// Allow takes one request of tenant, whose quota is rate per second (0:
// no limit). A request over it is a *QuotaError with RetryAfter.
func (r *Rates) Allow(tenant string, rate float64) error {
	if rate <= 0 {
		return nil
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.buckets[tenant]
	burst := math.Max(rate, 1)
	if b == nil || b.rate != rate {
		b = &tokens{n: burst, last: now, rate: rate}
		r.buckets[tenant] = b
	}
	if d := now.Sub(b.last); d > 0 {
		b.n = math.Min(burst, b.n+d.Seconds()*rate)
		b.last = now
	}
	if b.n >= 1 {
		b.n--
		return nil
	}
	wait := time.Duration((1 - b.n) / rate * float64(time.Second))
	return &QuotaError{Tenant: tenant, Quota: QuotaRequestsPerSecond, Limit: rate, RetryAfter: wait}
}
