// Package guestbuild produces the artifacts of a manifest: it runs each
// function's build command and reads the module it wrote.
//
// It sits between the manifest and the upload in a deploy:
//
//	manifest.Load -> build.Build -> upload (sha256) -> model.Function
//
// Guarantees:
//   - A build command runs once per distinct (command, dir, runtime), even if
//     several functions share it, with sh -c in its directory, with the
//     caller's environment plus GOOS=wasip1 GOARCH=wasm for wasm functions.
//   - Commands run one at a time, in manifest order, so their output streams
//     to the progress callback in order; the callback is never called
//     concurrently.
//   - Cancelling the context kills the command's whole process group (sh and
//     everything it started), and Build returns an error wrapping ctx.Err().
//   - A failure names the function and the manifest position of
//     build.command, and carries the exit status and the last lines of
//     output (CommandError). A module that is missing or does not start
//     with the WebAssembly magic is reported before anything is uploaded;
//     deeper validation is the runtime's job at deploy.
package guestbuild
