// Package sdk carries the source of the guest SDKs inside the nimbus
// binary, so that `nimbus new` can write the Go SDK into a project outside
// this repository (package internal/scaffold) while the SDK is not
// published as a module of its own. Guests import sdk/go, never this
// package; nothing here is compiled into a guest.
package sdk
