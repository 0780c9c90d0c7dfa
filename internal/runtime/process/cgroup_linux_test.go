package process

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// fakeCgroup2FS is a FAKE cgroup v2 filesystem in a temp dir, for the v2
// code paths on hosts whose controllers are bound to v1 (this CI host).
// It keeps the kernel rules the node's code depends on, so that code that
// breaks them fails here too:
//   - a new cgroup gets cgroup.procs, cgroup.subtree_control, cgroup.kill,
//     cgroup.controllers (what its parent enabled) and the interface files
//     of those controllers;
//   - control files cannot be created by writing them (ENOENT);
//   - cgroup.subtree_control enables only controllers the cgroup has
//     (EINVAL otherwise), and not in a non-root cgroup with processes
//     (EBUSY: "no internal processes");
//   - writing a pid to cgroup.procs moves it out of every other cgroup,
//     and not into a non-root cgroup that enables controllers (EBUSY);
//   - rmdir of a cgroup with processes or children is EBUSY; cgroup.kill
//     empties it.
//
// Every write is recorded, in order, as "name=data".
type fakeCgroup2FS struct {
	t      *testing.T
	root   string
	noSwap bool // instances have no memory.swap.max (swap not accounted)
	writes []string
}

var _ cgroupFS = (*fakeCgroup2FS)(nil)

func newFakeCgroup2FS(t *testing.T, rootControllers string) *fakeCgroup2FS {
	f := &fakeCgroup2FS{t: t, root: t.TempDir()}
	for name, v := range map[string]string{"cgroup.controllers": rootControllers, "cgroup.subtree_control": "", "cgroup.procs": ""} {
		f.put("/", name, v)
	}
	return f
}

func (f *fakeCgroup2FS) HostPath(name string) string {
	return filepath.Join(f.root, filepath.FromSlash(name))
}

func (f *fakeCgroup2FS) put(dir, name, v string) {
	if err := os.WriteFile(f.HostPath(path.Join(dir, name)), []byte(v), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fakeCgroup2FS) get(name string) string {
	b, err := os.ReadFile(f.HostPath(name))
	if err != nil {
		f.t.Fatalf("fake cgroupfs: %v", err)
	}
	return string(b)
}

func (f *fakeCgroup2FS) isDir(name string) bool {
	st, err := os.Stat(f.HostPath(name))
	return err == nil && st.IsDir()
}

func (f *fakeCgroup2FS) ReadFile(name string) ([]byte, error) { return os.ReadFile(f.HostPath(name)) }

func (f *fakeCgroup2FS) Mkdir(name string) error {
	if err := os.Mkdir(f.HostPath(name), 0o755); err != nil {
		return err
	}
	f.put(name, "cgroup.procs", "")
	f.put(name, "cgroup.subtree_control", "")
	f.put(name, "cgroup.kill", "")
	f.put(name, "cgroup.controllers", f.get(path.Join(path.Dir(name), "cgroup.subtree_control")))
	f.addControllerFiles(name, strings.Fields(f.get(path.Join(path.Dir(name), "cgroup.subtree_control"))))
	return nil
}

func (f *fakeCgroup2FS) addControllerFiles(dir string, ctls []string) {
	for _, c := range ctls {
		files := map[string]string{}
		switch c {
		case "memory":
			files = map[string]string{"memory.max": "max\n", "memory.current": "0\n",
				"memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n"}
			if !f.noSwap {
				files["memory.swap.max"] = "max\n"
			}
		case "pids":
			files = map[string]string{"pids.max": "max\n", "pids.current": "0\n"}
		case "cpu":
			files = map[string]string{"cpu.max": "max 100000\n"}
		}
		for n, v := range files {
			if _, err := os.Stat(f.HostPath(path.Join(dir, n))); err != nil {
				f.put(dir, n, v)
			}
		}
	}
}

func (f *fakeCgroup2FS) pathErr(op, name string, errno syscall.Errno) error {
	return &fs.PathError{Op: op, Path: name, Err: errno}
}

func (f *fakeCgroup2FS) WriteFile(name string, data []byte) error {
	st, err := os.Stat(f.HostPath(name))
	if err != nil || st.IsDir() {
		return f.pathErr("open", name, syscall.ENOENT)
	}
	f.writes = append(f.writes, name+"="+string(data))
	dir, file := path.Dir(name), path.Base(name)
	switch file {
	case "cgroup.subtree_control":
		have := strings.Fields(f.get(path.Join(dir, "cgroup.controllers")))
		on := strings.Fields(f.get(name))
		for _, w := range strings.Fields(string(data)) {
			c, ok := strings.CutPrefix(w, "+")
			if !ok || !slices.Contains(have, c) {
				return f.pathErr("write", name, syscall.EINVAL)
			}
			if !slices.Contains(on, c) {
				if dir != "/" && strings.TrimSpace(f.get(path.Join(dir, "cgroup.procs"))) != "" {
					return f.pathErr("write", name, syscall.EBUSY)
				}
				on = append(on, c)
			}
		}
		f.put(dir, file, strings.Join(on, " "))
		entries, _ := os.ReadDir(f.HostPath(dir))
		for _, e := range entries {
			if e.IsDir() {
				child := path.Join(dir, e.Name())
				f.put(child, "cgroup.controllers", strings.Join(on, " "))
				f.addControllerFiles(child, on)
			}
		}
	case "cgroup.procs":
		pid := strings.TrimSpace(string(data))
		if dir != "/" && strings.TrimSpace(f.get(path.Join(dir, "cgroup.subtree_control"))) != "" {
			return f.pathErr("write", name, syscall.EBUSY)
		}
		f.removeProc(pid)
		f.put(dir, file, f.get(name)+pid+"\n")
	case "cgroup.kill":
		f.put(dir, "cgroup.procs", "")
	default:
		f.put(dir, file, string(data))
	}
	return nil
}

// removeProc takes pid out of every cgroup.procs.
func (f *fakeCgroup2FS) removeProc(pid string) {
	_ = filepath.WalkDir(f.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Name() != "cgroup.procs" {
			return err
		}
		b, _ := os.ReadFile(p)
		var keep []string
		for _, q := range strings.Fields(string(b)) {
			if q != pid {
				keep = append(keep, q+"\n")
			}
		}
		return os.WriteFile(p, []byte(strings.Join(keep, "")), 0o644)
	})
}

func (f *fakeCgroup2FS) Remove(name string) error {
	if !f.isDir(name) {
		return f.pathErr("rmdir", name, syscall.ENOENT)
	}
	if strings.TrimSpace(f.get(path.Join(name, "cgroup.procs"))) != "" {
		return f.pathErr("rmdir", name, syscall.EBUSY)
	}
	entries, err := os.ReadDir(f.HostPath(name))
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			return f.pathErr("rmdir", name, syscall.EBUSY)
		}
	}
	return os.RemoveAll(f.HostPath(name))
}

// procs is the pids in dir's cgroup.procs.
func (f *fakeCgroup2FS) procs(dir string) []string {
	return strings.Fields(f.get(path.Join(dir, "cgroup.procs")))
}

// systemdService makes the fake look like a v2-only systemd host running
// nimbus as a service with Delegate=yes: the controllers are enabled down
// to the service's cgroup, which holds the node (pid 100) and a process
// its service also started (pid 101).
func (f *fakeCgroup2FS) systemdService() string {
	f.t.Helper()
	f.put("/", "cgroup.procs", "1\n")
	if err := f.WriteFile("/cgroup.subtree_control", []byte("+cpu +memory +pids")); err != nil {
		f.t.Fatal(err)
	}
	for _, d := range []string{"/system.slice", "/system.slice/nimbus.service"} {
		if err := f.Mkdir(d); err != nil {
			f.t.Fatal(err)
		}
	}
	if err := f.WriteFile("/system.slice/cgroup.subtree_control", []byte("+cpu +memory +pids")); err != nil {
		f.t.Fatal(err)
	}
	for _, pid := range []string{"100", "101"} {
		if err := f.WriteFile("/system.slice/nimbus.service/cgroup.procs", []byte(pid)); err != nil {
			f.t.Fatal(err)
		}
	}
	f.writes = nil
	return "/system.slice/nimbus.service"
}

// TestCgroupLayout: detection on fake /sys/fs/cgroup trees: v2 when the
// unified hierarchy has memory, pids and cpu; v1 when only v1 does,
// including a hybrid host whose v2 hierarchy (at unified/) is empty (this
// CI host); nothing otherwise.
func TestCgroupLayout(t *testing.T) {
	v1 := []string{"memory/tasks", "pids/tasks", "cpu/tasks", "cpuacct/tasks", "freezer/tasks"}
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  cgroupLayout
		mount string
	}{
		{"v2 only", map[string]string{"cgroup.controllers": "cpuset cpu io memory hugetlb pids rdma misc\n"}, cgroupV2, "."},
		{"v2 only, no memory controller", map[string]string{"cgroup.controllers": "cpu pids\n"}, cgroupNone, ""},
		{"v1 only", files(v1, nil), cgroupV1, ""},
		{"hybrid, empty unified", files(v1, map[string]string{"unified/cgroup.controllers": "\n"}), cgroupV1, ""},
		{"hybrid, controllers in unified", files([]string{"cpuacct/tasks"}, map[string]string{"unified/cgroup.controllers": "memory pids cpu\n"}), cgroupV2, "unified"},
		{"v1 missing pids", files([]string{"memory/tasks", "cpu/tasks"}, nil), cgroupNone, ""},
		{"nothing", nil, cgroupNone, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for name, v := range tc.files {
				p := filepath.Join(root, name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, mount := detectLayout(root)
			wantMount := ""
			if tc.mount != "" {
				wantMount = filepath.Join(root, tc.mount)
			}
			if got != tc.want || mount != wantMount {
				t.Fatalf("detectLayout: %s at %q, want %s at %q", got, mount, tc.want, wantMount)
			}
		})
	}
}

func files(names []string, more map[string]string) map[string]string {
	out := map[string]string{}
	for _, n := range names {
		out[n] = ""
	}
	for n, v := range more {
		out[n] = v
	}
	return out
}

// TestProbeUsesTheDetectedLayout: on the real host, Probe fills the
// cgroups of the layout detectLayout picks (v1 on this CI host, hybrid
// with an empty unified hierarchy).
func TestProbeUsesTheDetectedLayout(t *testing.T) {
	sandboxed(t)
	h := Probe()
	switch layout, _ := detectLayout(cgroupRoot); layout {
	case cgroupV2:
		if h.Cgroup2 == "" || len(h.Cgroups) != 0 {
			t.Fatalf("a cgroup v2 host probed as %+v", h)
		}
	case cgroupV1:
		if h.Cgroup2 != "" || len(h.Cgroups) != len(controllers) {
			t.Fatalf("a cgroup v1 host probed as %+v", h)
		}
	default:
		t.Fatalf("sandboxed host without cgroups: %+v", h)
	}
}

// TestOwnCgroup2: the node's v2 cgroup from /proc/self/cgroup.
func TestOwnCgroup2(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"0::/system.slice/nimbus.service\n", "/system.slice/nimbus.service"},
		{"0::/\n", "/"},
		{"0::/a..b/..c\n", "/a..b/..c"},
		// A hybrid host: v1 lines, then the unified hierarchy's.
		{"9:name=systemd:/\n4:memory:/x/y\n1:cpu:/\n0::/user.slice/session-1.scope\n", "/user.slice/session-1.scope"},
		{"4:memory:/x\n", ""},       // v1 only
		{"0::/../../outside\n", ""}, // outside the cgroup namespace
		{"", ""},
	} {
		got, err := ownCgroup2([]byte(tc.in))
		if tc.want == "" {
			if err == nil {
				t.Errorf("ownCgroup2(%q) = %q, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ownCgroup2(%q) = %q, %v, want %q", tc.in, got, err, tc.want)
		}
	}
}

// TestSetupCgroup2MovesTheNodeToALeaf: in a service's cgroup that holds
// processes, the kernel refuses to enable controllers; the node moves its
// cgroup's processes to own/node, enables memory, pids and cpu for own's
// children and for own/nimbus's, and leaves no probe cgroup. A second
// runtime in the same process (now in own/node) finds the same place.
func TestSetupCgroup2MovesTheNodeToALeaf(t *testing.T) {
	f := newFakeCgroup2FS(t, "cpuset cpu io memory pids")
	own := f.systemdService()
	dir, err := setupCgroup2(f, own)
	if err != nil {
		t.Fatal(err)
	}
	if dir != own+"/nimbus" {
		t.Fatalf("instances go under %s, want %s/nimbus", dir, own)
	}
	if got := f.procs(own); len(got) != 0 {
		t.Errorf("processes left in the service's cgroup: %v", got)
	}
	if got := f.procs(own + "/node"); !slices.Equal(got, []string{"100", "101"}) {
		t.Errorf("the leaf holds %v, want the service's processes 100 and 101", got)
	}
	for _, d := range []string{own, dir} {
		if miss := missingControllers(f.get(d + "/cgroup.subtree_control")); len(miss) > 0 {
			t.Errorf("%s/cgroup.subtree_control lacks %v", d, miss)
		}
	}
	want := []string{
		own + "/cgroup.subtree_control=+memory +pids +cpu", // refused: EBUSY
		own + "/node/cgroup.procs=100",
		own + "/node/cgroup.procs=101",
		own + "/cgroup.subtree_control=+memory +pids +cpu",
		dir + "/cgroup.subtree_control=+memory +pids +cpu",
	}
	if !slices.Equal(f.writes, want) {
		t.Errorf("writes:\n%s\nwant:\n%s", strings.Join(f.writes, "\n"), strings.Join(want, "\n"))
	}
	entries, _ := os.ReadDir(f.HostPath(dir))
	for _, e := range entries {
		if e.IsDir() {
			t.Errorf("left behind: %s/%s", dir, e.Name())
		}
	}

	again, err := setupCgroup2(f, own+"/node")
	if err != nil || again != dir {
		t.Fatalf("second setup from the leaf: %q, %v, want %s", again, err, dir)
	}
	if f.isDir(own + "/node/node") {
		t.Error("the second setup nested a leaf in the leaf")
	}
}

// TestSetupCgroup2DelegateSubgroup: systemd started the node in own/node
// (DelegateSubgroup=node): nothing moves, the controllers are enabled in
// own, and the instances go beside the node.
func TestSetupCgroup2DelegateSubgroup(t *testing.T) {
	f := newFakeCgroup2FS(t, "cpu memory pids")
	own := f.systemdService()
	if err := f.Mkdir(own + "/node"); err != nil {
		t.Fatal(err)
	}
	for _, pid := range []string{"100", "101"} {
		if err := f.WriteFile(own+"/node/cgroup.procs", []byte(pid)); err != nil {
			t.Fatal(err)
		}
	}
	f.writes = nil
	dir, err := setupCgroup2(f, own+"/node")
	if err != nil || dir != own+"/nimbus" {
		t.Fatalf("setup from systemd's subgroup: %q, %v, want %s/nimbus", dir, err, own)
	}
	want := []string{own + "/cgroup.subtree_control=+memory +pids +cpu", dir + "/cgroup.subtree_control=+memory +pids +cpu"}
	if !slices.Equal(f.writes, want) || f.isDir(own+"/node/node") {
		t.Errorf("writes:\n%s\nwant:\n%s", strings.Join(f.writes, "\n"), strings.Join(want, "\n"))
	}
}

// TestSetupCgroup2AtTheRoot: the root cgroup may hold processes and
// enable controllers: nothing is moved (they are the whole host's).
func TestSetupCgroup2AtTheRoot(t *testing.T) {
	f := newFakeCgroup2FS(t, "cpu memory pids")
	f.put("/", "cgroup.procs", "1\n100\n")
	dir, err := setupCgroup2(f, "/")
	if err != nil || dir != "/nimbus" {
		t.Fatalf("setup at the root: %q, %v", dir, err)
	}
	if got := f.procs("/"); !slices.Equal(got, []string{"1", "100"}) || f.isDir("/node") {
		t.Errorf("processes moved out of the root cgroup: root holds %v, /node exists: %v", got, f.isDir("/node"))
	}
}

// TestSetupCgroup2WithoutDelegation: a cgroup whose parent did not hand it
// the controllers is refused with the fix (Delegate=yes).
func TestSetupCgroup2WithoutDelegation(t *testing.T) {
	f := newFakeCgroup2FS(t, "cpu memory pids")
	if err := f.WriteFile("/cgroup.subtree_control", []byte("+cpu +pids")); err != nil {
		t.Fatal(err)
	}
	if err := f.Mkdir("/user.slice"); err != nil {
		t.Fatal(err)
	}
	_, err := setupCgroup2(f, "/user.slice")
	if err == nil || !strings.Contains(err.Error(), "lacks the memory controllers") || !strings.Contains(err.Error(), "Delegate=yes") {
		t.Fatalf("setup without memory delegated: %v", err)
	}
}

// TestCgroup2Instance: an instance's cgroup on v2: pids.max and cpu.max at
// the start, memory.max and memory.swap.max at the claim, the OOM kill
// count from memory.events, the process count, the read-only view at
// /sys/fs/cgroup, and removal that kills what is left.
func TestCgroup2Instance(t *testing.T) {
	for _, noSwap := range []bool{false, true} {
		f := newFakeCgroup2FS(t, "cpu memory pids")
		f.noSwap = noSwap
		parent, err := setupCgroup2(f, f.systemdService())
		if err != nil {
			t.Fatal(err)
		}
		c, err := newCgroup2Instance(f, parent, "i-1", 64, 50_000)
		if err != nil {
			t.Fatal(err)
		}
		for file, want := range map[string]string{"pids.max": "64", "cpu.max": "50000 100000"} {
			if got := f.get(c.dir + "/" + file); got != want {
				t.Errorf("%s = %q, want %q", file, got, want)
			}
		}
		if err := c.setMemory(64 << 20); err != nil {
			t.Fatalf("setMemory (swap accounted: %v): %v", !noSwap, err)
		}
		if got := f.get(c.dir + "/memory.max"); got != "67108864" {
			t.Errorf("memory.max = %q", got)
		}
		if !noSwap {
			if got := f.get(c.dir + "/memory.swap.max"); got != "0" {
				t.Errorf("memory.swap.max = %q, want 0", got)
			}
		}
		if c.oomKilled() {
			t.Error("oomKilled before any kill")
		}
		// The kernel's memory.events after the OOM killer ran once.
		f.put(c.dir, "memory.events", "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n")
		if !c.oomKilled() {
			t.Error("oomKilled misses memory.events' oom_kill 1")
		}
		f.put(c.dir, "pids.current", "7\n")
		if n := c.pids(); n != 7 {
			t.Errorf("pids = %d, want 7", n)
		}
		if b := c.binds(); len(b) != 1 || b[0] != [2]string{f.HostPath(c.dir), "/sys/fs/cgroup"} {
			t.Errorf("binds = %v", b)
		}

		var attr syscall.SysProcAttr
		leave, err := c.enter(&attr)
		if err != nil || !attr.UseCgroupFD || attr.CgroupFD <= 2 {
			t.Fatalf("enter: %v, attr %+v", err, attr)
		}
		if !leave() {
			t.Error("leave reports the thread could not leave")
		}
		if err := syscall.Fstat(attr.CgroupFD, &syscall.Stat_t{}); !errors.Is(err, syscall.EBADF) {
			t.Errorf("the cgroup fd is open after leave: %v", err)
		}

		if err := f.WriteFile(c.dir+"/cgroup.procs", []byte("300")); err != nil {
			t.Fatal(err)
		}
		c.remove()
		if f.isDir(c.dir) {
			t.Error("the instance's cgroup outlives remove")
		}
		if !slices.Contains(f.writes, c.dir+"/cgroup.kill=1") {
			t.Error("remove did not kill what was left (cgroup.kill)")
		}

		unlimited, err := newCgroup2Instance(f, parent, "i-2", 256, -1)
		if err != nil {
			t.Fatal(err)
		}
		if got := f.get(unlimited.dir + "/cpu.max"); got != "max 100000" {
			t.Errorf("no CPU cap: cpu.max = %q", got)
		}
		unlimited.remove()
	}
}

// TestCPUQuota: Config.CPUs as the quota of a 100ms period.
func TestCPUQuota(t *testing.T) {
	for cpus, want := range map[float64]int{1: 100_000, 2.5: 250_000, 0.5: 50_000, 0.001: 1000, -1: -1} {
		if got := cpuQuota(cpus); got != want {
			t.Errorf("cpuQuota(%v) = %d, want %d", cpus, got, want)
		}
	}
}

// TestCloneIntoCgroup2: the v2 start for real, where the host has a v2
// hierarchy (on this CI host, the empty one of a hybrid host: no
// controllers, but CLONE_INTO_CGROUP works the same): a child started with
// enter's attributes is in the instance's cgroup from birth.
func TestCloneIntoCgroup2(t *testing.T) {
	sandboxed(t)
	mount := ""
	for _, d := range []string{cgroupRoot, cgroupRoot + "/unified"} {
		if _, err := os.Stat(d + "/cgroup.procs"); err == nil {
			mount = d
			break
		}
	}
	if mount == "" {
		t.Skip("no cgroup v2 hierarchy on this host")
	}
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	own, err := ownCgroup2(self)
	if err != nil {
		t.Fatal(err)
	}
	fsys := dirCgroupFS(mount)
	c := &cgroup2Instance{fs: fsys, dir: path.Join(own, "nimbus-test-"+randomID())}
	if err := fsys.Mkdir(c.dir); err != nil {
		t.Skipf("cannot make a cgroup under the node's own: %v", err)
	}
	defer c.remove()
	cmd := exec.Command("/bin/cat", "/proc/self/cgroup")
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	leave, err := c.enter(cmd.SysProcAttr)
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.Output()
	leave()
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := ownCgroup2(out); got != c.dir {
		t.Fatalf("the child is in %q, want %q (its /proc/self/cgroup: %q)", got, c.dir, out)
	}
	if err := probeCloneInto(fsys, own); err != nil {
		t.Fatalf("probeCloneInto: %v", err)
	}
}

// controllerless is an instance cgroup in a v2 hierarchy without
// controllers (a hybrid host's unified/): no limits to set, the rest real.
type controllerless struct{ *cgroup2Instance }

func (controllerless) setMemory(uint64) error { return nil }

// TestSandboxInCgroup2Hierarchy: a whole sandbox started the v2 way, for
// real, in this host's v2 hierarchy (on a hybrid host the empty one, so
// without limits): the helper is cloned into the instance's cgroup
// (CLONE_INTO_CGROUP), the function runs in it, sees it read-only at
// /sys/fs/cgroup, and its cgroup namespace is rooted there ("0::/"); the
// cgroup is removed with the process.
func TestSandboxInCgroup2Hierarchy(t *testing.T) {
	sandboxed(t)
	mount := ""
	for _, d := range []string{cgroupRoot, cgroupRoot + "/unified"} {
		if _, err := os.Stat(d + "/cgroup.procs"); err == nil {
			mount = d
			break
		}
	}
	if mount == "" {
		t.Skip("no cgroup v2 hierarchy on this host")
	}
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	own, err := ownCgroup2(self)
	if err != nil {
		t.Fatal(err)
	}
	fsys := dirCgroupFS(mount)
	parent := path.Join(own, "nimbus-test-"+randomID())
	if err := fsys.Mkdir(parent); err != nil {
		t.Skipf("cannot make a cgroup under the node's own: %v", err)
	}
	t.Cleanup(func() { _ = fsys.Remove(parent) })
	rt := newRuntime(t)
	rt.newCgroups = func(id string, _ int) (instanceCgroups, error) {
		c := &cgroup2Instance{fs: fsys, dir: path.Join(parent, id)}
		if err := fsys.Mkdir(c.dir); err != nil {
			return nil, err
		}
		return controllerless{c}, nil
	}
	inst := start(t, load(t, rt, spec(t, true)))
	p := inst.(*instance).p
	dir := p.sb.cg.(controllerless).dir
	procs, err := fsys.ReadFile(path.Join(dir, "cgroup.procs"))
	if err != nil || !slices.Contains(strings.Fields(string(procs)), strconv.Itoa(p.cmd.Process.Pid)) {
		t.Fatalf("the process (pid %d) is not in its cgroup %s: cgroup.procs %q, %v", p.cmd.Process.Pid, dir, procs, err)
	}
	if got, err := ownCgroup2([]byte(mustGet(t, inst, "/cat?path=/proc/self/cgroup"))); err != nil || got != "/" {
		t.Errorf("the process's cgroup as it sees it: %q, %v, want / (a cgroup namespace rooted at its cgroup)", got, err)
	}
	if got := mustGet(t, inst, "/cat?path=/sys/fs/cgroup/cgroup.procs"); got != "1\n" {
		t.Errorf("/sys/fs/cgroup/cgroup.procs inside: %q, want its own pid 1 only (its cgroup, bound there)", got)
	}
	var mountOpts string
	for _, line := range strings.Split(mustGet(t, inst, "/cat?path=/proc/self/mountinfo"), "\n") {
		if f := strings.Fields(line); len(f) > 5 && f[4] == "/sys/fs/cgroup" {
			mountOpts = f[5]
		}
	}
	if !slices.Contains(strings.Split(mountOpts, ","), "ro") {
		t.Errorf("/sys/fs/cgroup inside is mounted %q, want read-only", mountOpts)
	}
	inst.Close(context.Background())
	if _, err := os.Stat(fsys.HostPath(dir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the instance's cgroup outlives the process: %v", err)
	}
}
