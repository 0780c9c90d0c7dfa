//go:build !unix

package guestbuild

import "os/exec"

// killProcessGroup is a no-op where process groups do not exist; cancelling
// kills only the shell (exec.CommandContext's default).
func killProcessGroup(*exec.Cmd) {}
