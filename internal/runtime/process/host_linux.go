package process

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// cgroupRoot is where the v1 controllers are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// sandboxFlags are the namespaces a sandboxed process gets from clone; the
// network namespace is made beforehand on the starting thread (see
// sandbox.start), so that its loopback is up before the process runs.
const sandboxFlags = syscall.CLONE_NEWPID | syscall.CLONE_NEWIPC | syscall.CLONE_NEWUTS | syscall.CLONE_NEWNS

// Host is the isolation a host offers a process runtime, probed once.
type Host struct {
	// Root: the node runs as root, so it can give each process its own
	// uid and write cgroups.
	Root bool
	// Namespaces: pid, ipc, uts, mount and network namespaces can be made.
	Namespaces bool
	// Cgroups are the writable cgroup v1 directories processes are put
	// under, by controller ("memory", "pids", "cpu"): the node's own
	// cgroup of each, so that the node's limits still bound them.
	Cgroups map[string]string
	// Missing says what the sandbox lacks on this host, one item each; empty
	// when processes can be sandboxed.
	Missing []string
}

// Sandbox reports whether the host can sandbox processes.
func (h Host) Sandbox() bool { return len(h.Missing) == 0 }

// controllers are the cgroup controllers the sandbox needs.
var controllers = []string{"memory", "pids", "cpu"}

// Probe finds what isolation this host offers: root, namespaces (by
// starting /bin/true in new ones) and writable cgroup v1 controllers (by
// making and removing a child of the node's own cgroup).
func Probe() Host {
	h := Host{Root: os.Geteuid() == 0, Cgroups: map[string]string{}}
	if !h.Root {
		h.Missing = append(h.Missing, "root (the node runs as uid "+fmt.Sprint(os.Geteuid())+"; a process gets its own uid only from root)")
	}
	if err := probeNamespaces(); err != nil {
		h.Missing = append(h.Missing, "namespaces ("+err.Error()+")")
	} else {
		h.Namespaces = true
	}
	own := ownCgroups()
	for _, c := range controllers {
		dir, err := probeCgroup(c, own[c])
		if err != nil {
			h.Missing = append(h.Missing, "a writable "+c+" cgroup ("+err.Error()+")")
			continue
		}
		h.Cgroups[c] = dir
	}
	return h
}

func probeNamespaces() error {
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		return fmt.Errorf("no /proc/self/ns: %w", err)
	}
	cmd := exec.Command("/bin/true")
	cmd.Env = []string{}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: sandboxFlags | syscall.CLONE_NEWNET}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("cannot clone into new pid, ipc, uts, mount and network namespaces: %w", err)
	}
	return nil
}

// ownCgroups reads the node's cgroup path of each v1 controller.
func ownCgroups() map[string]string {
	out := map[string]string{}
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			out[c] = parts[2]
		}
	}
	return out
}

// probeCgroup returns the directory the node's processes of controller c
// go under (its own cgroup's "nimbus" child), checking it can make one.
func probeCgroup(c, own string) (string, error) {
	base := filepath.Join(cgroupRoot, c)
	if _, err := os.Stat(filepath.Join(base, "tasks")); err != nil {
		return "", fmt.Errorf("no cgroup v1 %s controller at %s", c, base)
	}
	dir := filepath.Join(base, filepath.FromSlash(own), "nimbus")
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return "", err
	}
	probe := filepath.Join(dir, "probe-"+randomID())
	if err := os.Mkdir(probe, 0o755); err != nil {
		return "", err
	}
	if err := os.Remove(probe); err != nil {
		return "", err
	}
	return dir, nil
}

// unreachable returns the first ancestor of dir (or dir) that others
// cannot traverse, or "".
func unreachable(dir string) string {
	for d := dir; ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil || st.Mode().Perm()&0o001 == 0 {
			return d
		}
		if d == filepath.Dir(d) {
			return ""
		}
	}
}

// plainProcAttr is how an unisolated process is started: its own process
// group (so stop reaches what it starts) and SIGKILL when the node dies.
func plainProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// ioctlFIONREAD is how many bytes wait to be read on fd.
func ioctlFIONREAD(fd uintptr) (int, error) {
	return unix.IoctlGetInt(int(fd), unix.TIOCINQ) // FIONREAD
}
