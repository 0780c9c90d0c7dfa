package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"

	"github.com/nimbus-dev/nimbus/internal/events"
	"github.com/nimbus-dev/nimbus/internal/gateway"
)

// InvokeAsync queues an invocation of app/function (Prefer:
// respond-async) and returns its id once it is durably queued.
// idempotencyKey, when set, makes a repeated call return the first one's
// id instead of queueing again.
func (c *Client) InvokeAsync(ctx context.Context, app, function string, body []byte, contentType, idempotencyKey string) (*gateway.Accepted, error) {
	h := http.Header{}
	h.Set(gateway.HeaderPrefer, "respond-async")
	if contentType != "" {
		h.Set("Content-Type", contentType)
	}
	if idempotencyKey != "" {
		h.Set(gateway.HeaderIdempotencyKey, idempotencyKey)
	}
	resp, err := c.do(ctx, http.MethodPost, "/api/v1/apps/"+url.PathEscape(app)+"/functions/"+url.PathEscape(function)+"/invoke", bytes.NewReader(body), h)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return nil, c.decodeError(resp)
	}
	var out gateway.Accepted
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("invoke: decode answer: %w", err)
	}
	return &out, nil
}

// Invocation returns the state of an async invocation.
func (c *Client) Invocation(ctx context.Context, id string) (*events.Invocation, error) {
	var out events.Invocation
	if err := c.call(ctx, http.MethodGet, "/api/v1/invocations/"+url.PathEscape(id), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
