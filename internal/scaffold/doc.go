// Package scaffold writes a new function project: `nimbus new`. A project
// is a directory with a nimbus.yaml, a go.mod and the function's source,
// made from one of the templates embedded in the binary:
//
//   - go: a function written with the Nimbus Go SDK (an http.Handler built
//     as a WASI reactor);
//   - lean: the same with the SDK's lean API (nimbus.HandleRequest);
//   - wagi: a plain Go program speaking WAGI (CGI over WASI), no SDK.
//
// Guarantees:
//
//   - The project builds and deploys outside this repository, offline:
//     nothing it needs is fetched. The Go SDK is not published as a module
//     yet, so the go and lean templates write a copy of it (the source embedded in
//     the binary by package sdk, tests left out) into the project's
//     nimbus-sdk/ directory as the module github.com/nimbus-dev/nimbus/sdk/go,
//     and the project's go.mod requires that module at the binary's version
//     with a replace to the copy. Once the SDK is published, deleting the
//     replace line and the directory makes it an ordinary dependency.
//   - The go.mod files say go 1.24: the SDK's reactor needs go:wasmexport,
//     new in Go 1.24, and the tests build the projects at that language
//     version.
//   - Create writes into a new or empty directory only, and removes what it
//     wrote if it fails.
//
// It sits beside the deploy path: `nimbus new` -> the project ->
// manifest.Load -> guestbuild.Build -> deploy.
package scaffold
