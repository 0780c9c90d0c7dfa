//go:build !linux

package process

import (
	"context"
	"errors"
	"io"
	"net"
	"os/exec"
	"syscall"

	"github.com/nimbus-dev/nimbus/internal/runtime/process/sandboxinit"
)

// Host is the isolation a host offers a process runtime; outside Linux,
// none.
type Host struct {
	Root, Namespaces bool
	Cgroups          map[string]string
	Cgroup2          string
	Missing          []string
}

// Sandbox reports whether the host can sandbox processes.
func (h Host) Sandbox() bool { return len(h.Missing) == 0 }

// Probe reports that only Linux sandboxes processes.
func Probe() Host { return Host{Missing: []string{"Linux (namespaces, cgroups)"}} }

type instanceCgroups interface{}

type uidPool struct{}

func newUIDPool() *uidPool { return &uidPool{} }

type sandbox struct {
	uid     int
	tmp     string
	inNetns []func() error
	cmd     *exec.Cmd
	outs    []*outPipe
	stderr  *switchWriter
	exited  chan struct{}
	exitErr error
}

type switchWriter struct{}

func (*switchWriter) lastPending() string { return "" }

var errNoSandbox = errors.New("process sandbox: Linux only")

func (r *Runtime) makeSandbox() (*sandbox, error)                                { return nil, errNoSandbox }
func (sb *sandbox) claim(uint64, sandboxinit.Config, io.Writer, io.Writer) error { return errNoSandbox }
func (sb *sandbox) alive() bool                                                  { return false }
func (sb *sandbox) probeConnect(int) error                                       { return errNoSandbox }
func (sb *sandbox) dial(context.Context, string, string) (net.Conn, error)       { return nil, errNoSandbox }
func (sb *sandbox) memoryExceeded() bool                                         { return false }
func (sb *sandbox) release()                                                     {}
func setRlimits(int, uint64, int, bool)                                          {}
func catchesTERM(int) bool                                                       { return true }
func unreachable(string) string                                                  { return "" }
func plainProcAttr() *syscall.SysProcAttr                                        { return &syscall.SysProcAttr{Setpgid: true} }

func startBatch(cmd *exec.Cmd) error { return cmd.Start() }

func ioctlFIONREAD(uintptr) (int, error) { return 0, errNoSandbox }

// listenerOwnedBy cannot tell here: the caller trusts the dial.
func listenerOwnedBy(port, pgid int) (bool, error) {
	return false, errors.ErrUnsupported
}
