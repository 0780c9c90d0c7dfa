package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"

	"github.com/nimbus-dev/nimbus/internal/api"
	"github.com/nimbus-dev/nimbus/internal/apierror"
)

// explain adds to an error the server answered what the user can do about
// it: where a refused token came from, which scope was missing (a HEAD
// answer has no body to say it), or that --server points at something that
// is not the API.
func (c *Client) explain(resp *http.Response, err error) error {
	var e *Error
	if !errors.As(err, &e) {
		return err
	}
	req := resp.Request
	what := ""
	if req != nil {
		what = req.Method + " " + req.URL.Path
	}
	switch {
	case e.Code == "route_not_found":
		e.Message = fmt.Sprintf("%s is a Nimbus gateway (function routes), not the control plane API: point --server or NIMBUS_URL at the API address `nimbus up` prints (default %s)", c.BaseURL, DefaultServer)
	case e.Status == http.StatusNotFound && resp.Header.Get(apierror.Header) == "":
		e.Message = fmt.Sprintf("%s does not look like a Nimbus API (it answered %s to %s): check --server or NIMBUS_URL (default %s)", c.BaseURL, resp.Status, what, DefaultServer)
	case e.Status == http.StatusForbidden:
		if scope := resp.Header.Get(api.HeaderRequiredScope); scope != "" && req != nil && req.Method == http.MethodHead {
			e.Message = fmt.Sprintf("the token lacks the %q scope needed for %s (an admin can create one: `nimbus token create NAME --scope %s`)", scope, what, scope)
		}
		if c.TokenSource != "" {
			e.Message += " [token from " + c.TokenSource + "]"
		}
	case e.Status == http.StatusUnauthorized:
		if req != nil && req.Method == http.MethodHead {
			e.Message = "unauthorized: the server refused the token for " + what
		}
		if c.Token == "" {
			e.Message = "unauthorized: no API token was sent (none in $NIMBUS_TOKEN or the CLI config file): `nimbus up` saves its admin token in the config on a data directory's first start; `nimbus token create --data DIR` on the server's machine mints a new one"
		} else {
			e.Message += fmt.Sprintf("; the token came from %s. A token works only with the data directory that issued it, until revoked or expired; `nimbus token create --data DIR` on the server's machine mints a new admin token",
				firstNonEmpty(c.TokenSource, "the client"))
		}
	}
	return e
}

// NewLocal returns a client of a node's local socket (server.LocalSocket):
// the token endpoints, without a token, for the data directory's owner.
func NewLocal(socket string) *Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}
	return &Client{BaseURL: "http://local", HTTP: &http.Client{Transport: tr}}
}

// LocalInfo asks a node's local socket where its API listens.
func (c *Client) LocalInfo(ctx context.Context) (*api.LocalInfo, error) {
	var out api.LocalInfo
	return &out, c.call(ctx, http.MethodGet, "/local/v1/info", nil, &out)
}

// CreateToken issues a token; the answer holds its secret, shown once.
func (c *Client) CreateToken(ctx context.Context, req api.CreateTokenRequest) (*api.CreatedToken, error) {
	var out api.CreatedToken
	return &out, c.call(ctx, http.MethodPost, "/api/v1/tokens", req, &out)
}

// Tokens lists the server's tokens (never their secrets).
func (c *Client) Tokens(ctx context.Context) ([]api.TokenInfo, error) {
	var out []api.TokenInfo
	return out, c.call(ctx, http.MethodGet, "/api/v1/tokens", nil, &out)
}

// RevokeToken revokes the token ref names (id, id prefix, or unique name).
func (c *Client) RevokeToken(ctx context.Context, ref string) (*api.TokenInfo, error) {
	var out api.TokenInfo
	return &out, c.call(ctx, http.MethodDelete, "/api/v1/tokens/"+url.PathEscape(ref), nil, &out)
}

// DeleteApp stops serving app and forgets it: its revisions, routes and
// triggers.
func (c *Client) DeleteApp(ctx context.Context, app string) error {
	return c.call(ctx, http.MethodDelete, "/api/v1/apps/"+url.PathEscape(app), nil, nil)
}

// SetSecret sets app's secret name to value; the answer is its name,
// version and time, never the value.
func (c *Client) SetSecret(ctx context.Context, app, name string, value []byte) (*api.SecretInfo, error) {
	var out api.SecretInfo
	return &out, c.call(ctx, http.MethodPut, "/api/v1/apps/"+url.PathEscape(app)+"/secrets/"+url.PathEscape(name), api.SetSecretRequest{Value: string(value)}, &out)
}

// Secrets lists app's secrets: names, versions and times.
func (c *Client) Secrets(ctx context.Context, app string) ([]api.SecretInfo, error) {
	var out []api.SecretInfo
	return out, c.call(ctx, http.MethodGet, "/api/v1/apps/"+url.PathEscape(app)+"/secrets", nil, &out)
}

// DeleteSecret removes app's secret name.
func (c *Client) DeleteSecret(ctx context.Context, app, name string) error {
	return c.call(ctx, http.MethodDelete, "/api/v1/apps/"+url.PathEscape(app)+"/secrets/"+url.PathEscape(name), nil, nil)
}
