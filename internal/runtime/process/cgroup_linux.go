package process

import (
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// cgroupLayout is the cgroup hierarchy a host offers the sandbox.
type cgroupLayout int

const (
	// cgroupNone: neither hierarchy has the memory, pids and cpu controllers.
	cgroupNone cgroupLayout = iota
	// cgroupV1: the controllers are v1 hierarchies at <root>/<controller>
	// (a v1-only host, or a hybrid one whose v2 hierarchy is empty).
	cgroupV1
	// cgroupV2: the unified hierarchy has them (a v2-only host).
	cgroupV2
)

func (l cgroupLayout) String() string {
	switch l {
	case cgroupV1:
		return "cgroup v1"
	case cgroupV2:
		return "cgroup v2"
	}
	return "no cgroups"
}

// detectLayout finds which hierarchy under root (/sys/fs/cgroup) has the
// sandbox's controllers. A v2 hierarchy is either mounted at root (v2-only
// hosts) or at root/unified (hybrid hosts, where it is usually empty: its
// controllers are bound to v1). v2 is preferred when its cgroup.controllers
// lists every controller; else v1 when each controller has its hierarchy.
// It returns the v2 mount for cgroupV2.
func detectLayout(root string) (cgroupLayout, string) {
	for _, dir := range []string{root, filepath.Join(root, "unified")} {
		b, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
		if err != nil {
			continue
		}
		if len(missingControllers(string(b))) == 0 {
			return cgroupV2, dir
		}
	}
	for _, c := range controllers {
		if _, err := os.Stat(filepath.Join(root, c, "tasks")); err != nil {
			return cgroupNone, ""
		}
	}
	return cgroupV1, ""
}

// missingControllers returns the sandbox's controllers a space-separated
// list (cgroup.controllers, cgroup.subtree_control) lacks.
func missingControllers(list string) []string {
	have := strings.Fields(list)
	var out []string
	for _, c := range controllers {
		if !slices.Contains(have, c) {
			out = append(out, c)
		}
	}
	return out
}

// cgroupFS is a cgroup v2 hierarchy as the sandbox uses it. Names are
// slash-separated paths from the hierarchy's root, as /proc/self/cgroup
// shows them ("/system.slice/nimbus.service/nimbus"). The kernel's is
// dirCgroupFS; tests use a fake (fakeCgroup2FS) that records what is
// written, because the hosts the tests run on may have no v2 controllers.
type cgroupFS interface {
	// ReadFile reads a control file.
	ReadFile(name string) ([]byte, error)
	// WriteFile writes an existing control file, in one write.
	WriteFile(name string, data []byte) error
	// Mkdir makes a cgroup; Remove removes an empty one.
	Mkdir(name string) error
	Remove(name string) error
	// HostPath is where the node sees name, to bind it into a sandbox and
	// to open it for CLONE_INTO_CGROUP.
	HostPath(name string) string
}

// dirCgroupFS is the cgroup v2 hierarchy mounted at a directory.
type dirCgroupFS string

func (d dirCgroupFS) HostPath(name string) string {
	return filepath.Join(string(d), filepath.FromSlash(name))
}
func (d dirCgroupFS) ReadFile(name string) ([]byte, error) { return os.ReadFile(d.HostPath(name)) }
func (d dirCgroupFS) Mkdir(name string) error              { return os.Mkdir(d.HostPath(name), 0o755) }
func (d dirCgroupFS) Remove(name string) error             { return os.Remove(d.HostPath(name)) }

// WriteFile opens without O_CREATE: a control file the kernel lacks (an
// older kernel, swap not accounted) is os.ErrNotExist.
func (d dirCgroupFS) WriteFile(name string, data []byte) error {
	f, err := os.OpenFile(d.HostPath(name), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// ownCgroup2 returns the v2 path in /proc/self/cgroup's "0::<path>" line.
func ownCgroup2(procSelfCgroup []byte) (string, error) {
	for _, line := range strings.Split(string(procSelfCgroup), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			if !strings.HasPrefix(p, "/") || slices.Contains(strings.Split(p, "/"), "..") {
				return "", fmt.Errorf("the node's cgroup %q is outside its cgroup namespace", p)
			}
			return p, nil
		}
	}
	return "", errors.New(`no cgroup v2 line ("0::/path") in /proc/self/cgroup`)
}

// Where setupCgroup2 puts things under the node's own cgroup: the node's
// processes in a leaf (cgroup2Leaf), the instances under cgroup2Instances.
const (
	cgroup2Leaf      = "node"
	cgroup2Instances = "nimbus"
)

// enableControllers is what cgroup.subtree_control is written.
var enableControllers = "+" + strings.Join(controllers, " +")

// setupCgroup2 prepares the node's own v2 cgroup own for sandboxes and
// returns the cgroup they go under (own/nimbus). Children of a v2 cgroup
// get controllers only once the parent enables them in its
// cgroup.subtree_control, and a non-root cgroup with processes cannot
// enable any ("no internal processes"): when the kernel refuses with
// EBUSY, the processes of own (the node, and whatever else its service
// runs there) move to the leaf own/node first, then the controllers are
// enabled in own and in own/nimbus. Under systemd this is what Delegate=yes
// hands the service: its cgroup to arrange. A node that is already in a
// leaf named node whose parent has the controllers (it moved for an
// earlier runtime of the same process, or systemd started it there with
// DelegateSubgroup=node) uses that parent.
func setupCgroup2(fs cgroupFS, own string) (string, error) {
	if path.Base(own) == cgroup2Leaf && own != "/" {
		if b, err := fs.ReadFile(path.Join(path.Dir(own), "cgroup.controllers")); err == nil && len(missingControllers(string(b))) == 0 {
			own = path.Dir(own)
		}
	}
	b, err := fs.ReadFile(path.Join(own, "cgroup.controllers"))
	if err != nil {
		return "", fmt.Errorf("the node's cgroup %s: %w", own, err)
	}
	if miss := missingControllers(string(b)); len(miss) > 0 {
		return "", fmt.Errorf("the node's cgroup %s lacks the %s controllers (its cgroup.controllers: %q): run nimbus as a systemd service with Delegate=yes, or enable them in its parent's cgroup.subtree_control",
			own, strings.Join(miss, ", "), strings.TrimSpace(string(b)))
	}
	if err := enableInSubtree(fs, own); err != nil {
		return "", err
	}
	dir := path.Join(own, cgroup2Instances)
	if err := fs.Mkdir(dir); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("cgroup %s: %w", dir, err)
	}
	if err := fs.WriteFile(path.Join(dir, "cgroup.subtree_control"), []byte(enableControllers)); err != nil {
		return "", fmt.Errorf("enable %s in %s/cgroup.subtree_control: %w", enableControllers, dir, err)
	}
	// A child made and removed: the controllers reach the instances.
	probe := path.Join(dir, "probe-"+randomID())
	if err := fs.Mkdir(probe); err != nil {
		return "", fmt.Errorf("cgroup %s: %w", probe, err)
	}
	for _, f := range []string{"memory.max", "pids.max", "cpu.max"} {
		if _, err := fs.ReadFile(path.Join(probe, f)); err != nil {
			_ = fs.Remove(probe)
			return "", fmt.Errorf("an instance cgroup has no %s: %w", f, err)
		}
	}
	if err := fs.Remove(probe); err != nil {
		return "", fmt.Errorf("cgroup %s: %w", probe, err)
	}
	return dir, nil
}

// enableInSubtree enables the controllers in own's cgroup.subtree_control,
// moving own's processes to the leaf own/node when the kernel refuses
// because own has some. Only then: the root cgroup is exempt from the
// rule, and its processes (the whole host's) must stay where they are. A
// process the node starts between the move and the write makes it refuse
// again; the move is retried a bounded number of times.
func enableInSubtree(fs cgroupFS, own string) error {
	ctl := path.Join(own, "cgroup.subtree_control")
	err := fs.WriteFile(ctl, []byte(enableControllers))
	if err == nil || !errors.Is(err, syscall.EBUSY) {
		if err != nil {
			return fmt.Errorf("enable %s in %s: %w", enableControllers, ctl, err)
		}
		return nil
	}
	leaf := path.Join(own, cgroup2Leaf)
	if err := fs.Mkdir(leaf); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("cgroup %s for the node's processes: %w", leaf, err)
	}
	for range 10 {
		b, err := fs.ReadFile(path.Join(own, "cgroup.procs"))
		if err != nil {
			return fmt.Errorf("the node's cgroup %s: %w", own, err)
		}
		for _, pid := range strings.Fields(string(b)) {
			err := fs.WriteFile(path.Join(leaf, "cgroup.procs"), []byte(pid))
			if err != nil && !errors.Is(err, syscall.ESRCH) { // ESRCH: it exited meanwhile
				return fmt.Errorf("move process %s from %s to %s (a non-root cgroup with processes cannot enable controllers for its children): %w", pid, own, leaf, err)
			}
		}
		err = fs.WriteFile(ctl, []byte(enableControllers))
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) {
			return fmt.Errorf("enable %s in %s: %w", enableControllers, ctl, err)
		}
	}
	return fmt.Errorf("enable %s in %s: processes keep arriving in %s: %w", enableControllers, ctl, own, syscall.EBUSY)
}

// cpuQuota is the CPU time of cpus CPUs in microseconds of each 100ms
// period (v1 cpu.cfs_quota_us, v2 cpu.max's first field), at least 1ms;
// -1 (no cap) for cpus <= 0.
func cpuQuota(cpus float64) int {
	if cpus <= 0 {
		return -1
	}
	return max(1000, int(cpus*100_000))
}

// instanceCgroups are the cgroups of one sandbox, v1 or v2.
type instanceCgroups interface {
	// enter arranges that a process started next (on the calling, locked
	// thread, with attr) is born inside the cgroups; leave undoes what
	// enter did to the thread and reports whether it could.
	enter(attr *syscall.SysProcAttr) (leave func() bool, err error)
	// setMemory caps memory, swap included where the kernel accounts it.
	setMemory(bytes uint64) error
	// oomKilled reports whether the memory cap's OOM killer killed a
	// process of the sandbox.
	oomKilled() bool
	// pids is how many processes the sandbox holds now, -1 if unknown.
	pids() int
	// binds are the cgroup directories the sandbox shows read-only, and
	// where (the node's path, the sandbox's).
	binds() [][2]string
	// namespace reports whether the sandbox gets a cgroup namespace rooted
	// at its cgroup (v2, whose one cgroup is bound at /sys/fs/cgroup).
	namespace() bool
	// remove kills what is left in the cgroups and removes them.
	remove()
}

// cgroup2Instance is a sandbox's cgroup on v2: one directory, dir, under
// the node's own/nimbus.
type cgroup2Instance struct {
	fs  cgroupFS
	dir string
}

var _ instanceCgroups = (*cgroup2Instance)(nil)

// newCgroup2Instance makes the cgroup id under parent capping the process
// count and the CPU time (quota microseconds of each 100ms period; <0 no
// cap). The memory cap is the function's, set at the claim.
func newCgroup2Instance(fs cgroupFS, parent, id string, maxProcs int, quota int) (*cgroup2Instance, error) {
	c := &cgroup2Instance{fs: fs, dir: path.Join(parent, id)}
	if err := fs.Mkdir(c.dir); err != nil {
		return nil, fmt.Errorf("sandbox cgroup: %w", err)
	}
	cpu := "max 100000"
	if quota >= 0 {
		cpu = strconv.Itoa(quota) + " 100000"
	}
	for _, l := range [][2]string{{"pids.max", strconv.Itoa(maxProcs)}, {"cpu.max", cpu}} {
		if err := fs.WriteFile(path.Join(c.dir, l[0]), []byte(l[1])); err != nil {
			c.remove()
			return nil, fmt.Errorf("sandbox cgroup %s: %w", l[0], err)
		}
	}
	return c, nil
}

// enter opens the cgroup for CLONE_INTO_CGROUP (clone3): the child is
// born inside it, and the thread never moves. (A v2 thread cannot move
// alone: writing its id to cgroup.procs would move the whole node.)
func (c *cgroup2Instance) enter(attr *syscall.SysProcAttr) (func() bool, error) {
	fd, err := unix.Open(c.fs.HostPath(c.dir), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return func() bool { return true }, fmt.Errorf("sandbox: open cgroup %s: %w", c.dir, err)
	}
	attr.UseCgroupFD, attr.CgroupFD = true, fd
	return func() bool {
		unix.Close(fd)
		return true
	}, nil
}

func (c *cgroup2Instance) setMemory(bytes uint64) error {
	v := []byte(strconv.FormatUint(bytes, 10))
	if err := c.fs.WriteFile(path.Join(c.dir, "memory.max"), v); err != nil {
		return fmt.Errorf("sandbox cgroup memory.max: %w", err)
	}
	// No swapping past the cap, where swap is accounted.
	if err := c.fs.WriteFile(path.Join(c.dir, "memory.swap.max"), []byte("0")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("sandbox cgroup memory.swap.max: %w", err)
	}
	return nil
}

// oomKilled reads the oom_kill count of memory.events (v1 has
// memory.oom_control instead).
func (c *cgroup2Instance) oomKilled() bool {
	b, err := c.fs.ReadFile(path.Join(c.dir, "memory.events"))
	if err != nil {
		return false
	}
	return eventCount(b, "oom_kill") > 0
}

// eventCount is the value of key in a flat keyed file ("key value" lines:
// memory.events, memory.oom_control), 0 when absent.
func eventCount(b []byte, key string) int {
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+" "); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

func (c *cgroup2Instance) pids() int {
	return readCount(c.fs.ReadFile, path.Join(c.dir, "pids.current"))
}

// readCount reads a cgroup file holding one number (pids.current), or
// answers -1.
func readCount(read func(string) ([]byte, error), file string) int {
	b, err := read(file)
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return -1
	}
	return n
}

// binds shows the instance's cgroup at /sys/fs/cgroup, as a v2 container
// sees its own; the helper also makes a cgroup namespace rooted there, so
// /proc/self/cgroup says "0::/".
func (c *cgroup2Instance) binds() [][2]string {
	return [][2]string{{c.fs.HostPath(c.dir), cgroupRoot}}
}

func (c *cgroup2Instance) namespace() bool { return true }

// remove kills what is left (cgroup.kill, Linux 5.14+; the sandbox's pid
// namespace already took everything with its init) and removes the cgroup.
func (c *cgroup2Instance) remove() {
	if err := c.fs.Remove(c.dir); err == nil || errors.Is(err, os.ErrNotExist) {
		return
	}
	_ = c.fs.WriteFile(path.Join(c.dir, "cgroup.kill"), []byte("1"))
	_ = c.fs.Remove(c.dir)
}

// cgroup1Instance is a sandbox's cgroups on v1: one directory per
// controller, by controller.
type cgroup1Instance map[string]string

var _ instanceCgroups = cgroup1Instance(nil)

// newCgroup1Instance makes the cgroups id under the node's ones (parents,
// by controller), capping the process count and the CPU time.
func newCgroup1Instance(parents map[string]string, id string, maxProcs int, quota int) (cgroup1Instance, error) {
	c := cgroup1Instance{}
	for _, ctl := range controllers {
		dir := filepath.Join(parents[ctl], id)
		if err := os.Mkdir(dir, 0o755); err != nil {
			c.remove()
			return nil, fmt.Errorf("sandbox cgroup: %w", err)
		}
		c[ctl] = dir
	}
	limits := []struct{ c, file, value string }{
		{"pids", "pids.max", strconv.Itoa(maxProcs)},
		{"cpu", "cpu.cfs_quota_us", strconv.Itoa(quota)}, // -1: no cap
	}
	for _, l := range limits {
		if err := os.WriteFile(filepath.Join(c[l.c], l.file), []byte(l.value), 0); err != nil {
			c.remove()
			return nil, fmt.Errorf("sandbox cgroup %s: %w", l.file, err)
		}
	}
	return c, nil
}

// enter moves the calling thread into the cgroups (v1 moves threads one
// by one, through tasks): the clone inherits them.
func (c cgroup1Instance) enter(*syscall.SysProcAttr) (func() bool, error) {
	own := ownThreadCgroups()
	tid := strconv.Itoa(unix.Gettid())
	var moved []string
	leave := func() bool {
		ok := true
		for _, ctl := range moved {
			if err := os.WriteFile(filepath.Join(cgroupRoot, ctl, filepath.FromSlash(own[ctl]), "tasks"), []byte(tid), 0); err != nil {
				ok = false
			}
		}
		return ok
	}
	for _, ctl := range controllers {
		if err := os.WriteFile(filepath.Join(c[ctl], "tasks"), []byte(tid), 0); err != nil {
			return leave, fmt.Errorf("sandbox: join %s cgroup: %w", ctl, err)
		}
		moved = append(moved, ctl)
	}
	return leave, nil
}

func (c cgroup1Instance) setMemory(bytes uint64) error {
	for _, l := range []struct{ file, value string }{
		{"memory.limit_in_bytes", strconv.FormatUint(bytes, 10)},
		{"memory.memsw.limit_in_bytes", strconv.FormatUint(bytes, 10)}, // no swapping past the cap, where swap is accounted
	} {
		if err := os.WriteFile(filepath.Join(c["memory"], l.file), []byte(l.value), 0); err != nil {
			if l.file == "memory.memsw.limit_in_bytes" && errors.Is(err, os.ErrNotExist) {
				continue
			}
			return fmt.Errorf("sandbox cgroup %s: %w", l.file, err)
		}
	}
	return nil
}

// oomKilled reads memory.oom_control's oom_kill count, or on kernels
// without it whether the cap was ever hit (memory.failcnt).
func (c cgroup1Instance) oomKilled() bool {
	if b, err := os.ReadFile(filepath.Join(c["memory"], "memory.oom_control")); err == nil && strings.Contains(string(b), "\noom_kill ") {
		return eventCount(b, "oom_kill") > 0
	}
	b, err := os.ReadFile(filepath.Join(c["memory"], "memory.failcnt"))
	if err != nil {
		return false
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n > 0
}

func (c cgroup1Instance) pids() int {
	return readCount(os.ReadFile, filepath.Join(c["pids"], "pids.current"))
}

// binds shows each controller's cgroup at /sys/fs/cgroup/<controller>.
func (c cgroup1Instance) binds() [][2]string {
	var out [][2]string
	for _, ctl := range controllers {
		out = append(out, [2]string{c[ctl], cgroupRoot + "/" + ctl})
	}
	return out
}

// namespace is false on v1, as before v2 support: the view there is the
// one tested on the CI host (fs_test.go).
func (c cgroup1Instance) namespace() bool { return false }

func (c cgroup1Instance) remove() {
	for _, dir := range c {
		_ = os.Remove(dir)
	}
}
