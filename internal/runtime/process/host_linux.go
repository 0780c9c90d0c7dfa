package process

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// cgroupRoot is where the cgroup hierarchies are mounted: the v1
// controllers at cgroupRoot/<controller>, v2 at cgroupRoot itself (or at
// cgroupRoot/unified on hybrid hosts).
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
	// cgroup of each, so that the node's limits still bound them. Empty
	// on a cgroup v2 host.
	Cgroups map[string]string
	// Cgroup2 is, on a cgroup v2 host, the directory processes' cgroups
	// are made under: the node's own cgroup's "nimbus" child, with the
	// memory, pids and cpu controllers enabled. Empty on v1.
	Cgroup2 string
	// Missing says what the sandbox lacks on this host, one item each; empty
	// when processes can be sandboxed.
	Missing []string
}

// Sandbox reports whether the host can sandbox processes.
func (h Host) Sandbox() bool { return len(h.Missing) == 0 }

// controllers are the cgroup controllers the sandbox needs.
var controllers = []string{"memory", "pids", "cpu"}

// Probe finds what isolation this host offers: root, namespaces (by
// starting /bin/true in new ones) and writable cgroups with the memory,
// pids and cpu controllers: v2 when the unified hierarchy has them (the
// node's processes may move to a leaf of its own cgroup: setupCgroup2),
// else v1 (by making and removing a child of the node's own cgroup of
// each).
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
	layout, mount := detectLayout(cgroupRoot)
	if layout == cgroupV2 {
		dir, err := probeCgroup2(dirCgroupFS(mount))
		if err != nil {
			h.Missing = append(h.Missing, "a writable cgroup v2 with the memory, pids and cpu controllers ("+err.Error()+")")
		} else {
			h.Cgroup2 = dir
		}
		return h
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

// probeCgroup2 prepares the node's own v2 cgroup (setupCgroup2) and starts
// /bin/true into a child of it with CLONE_INTO_CGROUP (Linux 5.7+), as
// sandboxes are started. It returns the host directory sandboxes' cgroups
// go under.
func probeCgroup2(fs dirCgroupFS) (string, error) {
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	own, err := ownCgroup2(self)
	if err != nil {
		return "", err
	}
	dir, err := setupCgroup2(fs, own)
	if err != nil {
		return "", err
	}
	if err := probeCloneInto(fs, dir); err != nil {
		return "", err
	}
	return fs.HostPath(dir), nil
}

// probeCloneInto starts /bin/true into a new cgroup under parent the way a
// sandbox's helper is started (instanceCgroups.enter, clone3).
func probeCloneInto(fs cgroupFS, parent string) error {
	c := &cgroup2Instance{fs: fs, dir: path.Join(parent, "probe-"+randomID())}
	if err := fs.Mkdir(c.dir); err != nil {
		return fmt.Errorf("cgroup %s: %w", c.dir, err)
	}
	defer c.remove()
	cmd := exec.Command("/bin/true")
	cmd.Env = []string{}
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	leave, err := c.enter(cmd.SysProcAttr)
	if err != nil {
		return err
	}
	defer leave()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("cannot start a process into a cgroup (clone3 with CLONE_INTO_CGROUP needs Linux 5.7 or later): %w", err)
	}
	return nil
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
		return "", fmt.Errorf("no cgroup v1 %s controller at %s, and no cgroup v2 hierarchy at %s whose cgroup.controllers lists memory, pids and cpu", c, base, cgroupRoot)
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

// startBatch starts an unisolated process SCHED_BATCH, as the sandbox
// helper makes a sandboxed one (sandboxinit's batch): its wakeups never
// preempt the node. A child takes the policy of the thread that forks it,
// so that thread takes it for the fork and gives it back after; a thread
// that could not give it back stays with this goroutine, never to run
// another. If the policy cannot be set, the process starts as it is.
func startBatch(cmd *exec.Cmd) error {
	goruntime.LockOSThread()
	old, err := unix.SchedGetAttr(0, 0)
	if err != nil || unix.SchedSetAttr(0, &unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_BATCH}, 0) != nil {
		goruntime.UnlockOSThread()
		return cmd.Start()
	}
	err = cmd.Start()
	if unix.SchedSetAttr(0, old, 0) == nil {
		goruntime.UnlockOSThread()
	}
	return err
}

// ioctlFIONREAD is how many bytes wait to be read on fd.
func ioctlFIONREAD(fd uintptr) (int, error) {
	return unix.IoctlGetInt(int(fd), unix.TIOCINQ) // FIONREAD
}
