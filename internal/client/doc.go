// Package client is the Go client of the control plane API (package api),
// used by the CLI. It also holds the CLI's configuration file: one entry per
// data directory a `nimbus up` started (its API URL and admin token), the
// last started being current, and how the CLI picks a server and token
// (ResolveTarget). Errors the server answers come back as *Error, with what
// the user can do about them added (where a refused token came from, which
// scope was missing, that --server is not the API).
package client
