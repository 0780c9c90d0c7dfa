// Package client is the Go client of the control plane API (package api),
// used by the CLI. It also holds the CLI's configuration file: where the
// server is and which token to present.
package client
