package sdk

import "embed"

// Go is the source of the Go SDK (module path
// github.com/nimbus-dev/nimbus/sdk/go): go/*.go and go/wire/*.go, test
// files included (writers leave them out).
//
//go:embed go/*.go go/wire/*.go
var Go embed.FS
