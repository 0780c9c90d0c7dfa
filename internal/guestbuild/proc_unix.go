//go:build unix

package guestbuild

import (
	"os/exec"
	"syscall"
)

// killProcessGroup makes cmd the leader of a new process group and, when its
// context is cancelled, kills the whole group: sh -c starts children (go,
// make, compilers) that would otherwise outlive it.
func killProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}
