// Package api is the control plane: the JSON HTTP API under /api/v1/ that
// the CLI uses and the dashboard will use. Every call needs a bearer token
// (see package security) whose scopes allow it. Errors are JSON
// ({"error": {"code", "message"}}) with stable codes; docs/api.md lists the
// endpoints. Tokens themselves are managed under /api/v1/tokens (admin
// scope); LocalHandler serves those endpoints without a token on the node's
// local socket, for the owner of its data directory.
//
// The API only speaks HTTP: deploying, activating and routing are done by
// the Platform it is given (wired in package server).
package api
