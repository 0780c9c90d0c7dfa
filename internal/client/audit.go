package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/nimbus-dev/nimbus/internal/audit"
)

// Audit lists the audit log's entries that f selects (a tenant's key gets
// its tenant's only).
func (c *Client) Audit(ctx context.Context, f audit.Filter) ([]audit.Entry, error) {
	q := url.Values{}
	for k, v := range map[string]string{"tenant": f.Tenant, "action": f.Action, "target": f.Target} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if !f.Since.IsZero() {
		q.Set("since", f.Since.UTC().Format(time.RFC3339))
	}
	if f.Limit > 0 {
		q.Set("limit", strconv.Itoa(f.Limit))
	}
	path := "/api/v1/audit"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out []audit.Entry
	return out, c.call(ctx, http.MethodGet, path, nil, &out)
}

// VerifyAudit has the node recompute the audit log's hash chain.
func (c *Client) VerifyAudit(ctx context.Context) (*audit.Report, error) {
	var out audit.Report
	return &out, c.call(ctx, http.MethodGet, "/api/v1/audit/verify", nil, &out)
}
