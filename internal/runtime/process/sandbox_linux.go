package process

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"crypto/rand"

	"golang.org/x/sys/unix"

	"github.com/nimbus-dev/nimbus/internal/runtime/process/sandboxinit"
)

// uidPool hands out the uids sandboxed processes run as, one per live
// instance, so that RLIMIT_NPROC counts per instance and one instance
// cannot signal or read another's files. The range starts at a random
// base per runtime so that two nodes on one host rarely share a uid.
type uidPool struct {
	mu   sync.Mutex
	base int
	used map[int]bool
}

const (
	uidBase  = 1_000_000_000
	uidRange = 1 << 16
)

func newUIDPool() *uidPool {
	n, _ := rand.Int(rand.Reader, big.NewInt(1<<14))
	return &uidPool{base: uidBase + int(n.Int64())*uidRange, used: map[int]bool{}}
}

func (p *uidPool) get() (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := 0; i < uidRange; i++ {
		if !p.used[i] {
			p.used[i] = true
			return p.base + i, nil
		}
	}
	return 0, errors.New("no free uid for a sandboxed process")
}

func (p *uidPool) put(uid int) {
	p.mu.Lock()
	delete(p.used, uid-p.base)
	p.mu.Unlock()
}

// sandbox is the isolation of one process: its uid, cgroups and network
// namespace; its filesystem view is built by the sandboxinit helper it
// starts as.
type sandbox struct {
	rt      *Runtime
	uid     int
	tmp     string            // HOME and TMPDIR as the process sees them: its private tmpfs
	live    *os.File          // the node's end of the helper's liveness pipe; nil until start
	cgroups map[string]string // controller -> this process's cgroup directory
	netns   *os.File          // the process's network namespace; nil until start
	hostns  *os.File          // the node's network namespace
	// inNetns run on the starting thread inside the new network namespace
	// just before the process is cloned: the Lambda contract opens its
	// Runtime API listener there, and the platform API its own.
	inNetns []func() error
}

// newSandbox prepares the isolation of one process: a uid and cgroups
// capping its memory, process count and CPU.
func (r *Runtime) newSandbox(memory uint64) (_ *sandbox, err error) {
	uid, err := r.uids.get()
	if err != nil {
		return nil, err
	}
	sb := &sandbox{rt: r, uid: uid, tmp: "/tmp", cgroups: map[string]string{}}
	defer func() {
		if err != nil {
			sb.release()
		}
	}()
	id := "i-" + randomID()
	for _, c := range controllers {
		dir := filepath.Join(r.host.Cgroups[c], id)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return nil, fmt.Errorf("sandbox cgroup: %w", err)
		}
		sb.cgroups[c] = dir
	}
	limits := []struct{ c, file, value string }{
		{"memory", "memory.limit_in_bytes", strconv.FormatUint(memory, 10)},
		{"memory", "memory.memsw.limit_in_bytes", strconv.FormatUint(memory, 10)}, // no swapping past the cap, where swap is accounted
		{"pids", "pids.max", strconv.Itoa(r.cfg.MaxProcs)},
		{"cpu", "cpu.cfs_quota_us", "100000"}, // one CPU (the default period is 100ms)
	}
	for _, l := range limits {
		p := filepath.Join(sb.cgroups[l.c], l.file)
		if err := os.WriteFile(p, []byte(l.value), 0); err != nil {
			if l.file == "memory.memsw.limit_in_bytes" && errors.Is(err, os.ErrNotExist) {
				continue
			}
			return nil, fmt.Errorf("sandbox cgroup %s: %w", l.file, err)
		}
	}
	if sb.hostns, err = os.Open("/proc/thread-self/ns/net"); err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	return sb, nil
}

// sysProcAttr is how the process is cloned: new pid, ipc, uts and mount
// namespaces, its own process group, and SIGKILL when the node dies. It
// starts as root (the sandboxinit helper), which builds its filesystem
// view and then drops to the sandbox's uid.
func (sb *sandbox) sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Cloneflags: sandboxFlags,
		Setpgid:    true,
		Pdeathsig:  syscall.SIGKILL,
	}
}

// start starts cmd inside the sandbox, with the filesystem view view:
// cmd runs as the sandboxinit helper (this binary, re-executed), which
// mounts the view, becomes the sandbox's uid and execs cmd's program as
// view says. The process is cloned from a thread that first moves into a
// new network namespace (with its loopback up) and into the process's
// cgroups, so the process is born inside both and never runs outside its
// limits; the thread then moves back. A thread that cannot move back is
// never reused: its goroutine exits locked, and the runtime ends the
// thread (which kills the process too, by its parent-death signal), so the
// start fails.
func (sb *sandbox) start(cmd *exec.Cmd, view sandboxinit.Config) error {
	view.Root, view.UID = sb.rt.root, sb.uid
	for _, c := range controllers {
		view.Binds = append(view.Binds, [2]string{sb.cgroups[c], cgroupRoot + "/" + c})
	}
	argv := view.Argv()
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("sandbox: liveness pipe: %w", err)
	}
	defer r.Close()
	sb.live = w
	cmd.Path, cmd.Args, cmd.Dir = "/proc/self/exe", argv, "/"
	cmd.ExtraFiles = []*os.File{r}
	cmd.SysProcAttr = sb.sysProcAttr()
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		restored, err := sb.startOnThread(cmd)
		if restored {
			goruntime.UnlockOSThread()
		} else if err == nil {
			err = errors.New("sandbox: the starting thread could not leave the process's namespace or cgroups")
		}
		errc <- err
	}()
	return <-errc
}

func (sb *sandbox) startOnThread(cmd *exec.Cmd) (restored bool, err error) {
	own := ownThreadCgroups()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return true, fmt.Errorf("sandbox: new network namespace: %w", err)
	}
	restoreNet := func() bool { return unix.Setns(int(sb.hostns.Fd()), unix.CLONE_NEWNET) == nil }
	if sb.netns, err = os.Open("/proc/thread-self/ns/net"); err != nil {
		return restoreNet(), fmt.Errorf("sandbox: %w", err)
	}
	if err := loopbackUp(); err != nil {
		return restoreNet(), fmt.Errorf("sandbox: loopback: %w", err)
	}
	for _, f := range sb.inNetns {
		if err := f(); err != nil {
			return restoreNet(), fmt.Errorf("sandbox: %w", err)
		}
	}
	tid := strconv.Itoa(unix.Gettid())
	moved := []string{}
	restoreCgroups := func() bool {
		ok := true
		for _, c := range moved {
			if err := os.WriteFile(filepath.Join(cgroupRoot, c, filepath.FromSlash(own[c]), "tasks"), []byte(tid), 0); err != nil {
				ok = false
			}
		}
		return ok
	}
	for _, c := range controllers {
		if err := os.WriteFile(filepath.Join(sb.cgroups[c], "tasks"), []byte(tid), 0); err != nil {
			return restoreCgroups() && restoreNet(), fmt.Errorf("sandbox: join %s cgroup: %w", c, err)
		}
		moved = append(moved, c)
	}
	err = cmd.Start()
	return restoreCgroups() && restoreNet(), err
}

// ownThreadCgroups reads the calling thread's cgroup path of each
// controller.
func ownThreadCgroups() map[string]string {
	out := map[string]string{}
	b, err := os.ReadFile("/proc/thread-self/cgroup")
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(b), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			out[c] = parts[2]
		}
	}
	return out
}

// loopbackUp sets the loopback interface of the calling thread's network
// namespace up.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

// dial connects to addr inside the process's network namespace: the
// socket is made on a thread moved into it, and stays in it after the
// thread moves back.
func (sb *sandbox) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		goruntime.LockOSThread()
		if err := unix.Setns(int(sb.netns.Fd()), unix.CLONE_NEWNET); err != nil {
			goruntime.UnlockOSThread()
			ch <- result{nil, fmt.Errorf("enter the process's network namespace: %w", err)}
			return
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if unix.Setns(int(sb.hostns.Fd()), unix.CLONE_NEWNET) == nil {
			goruntime.UnlockOSThread()
		} // else the goroutine exits locked and the thread is discarded
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

// memoryExceeded reports whether the memory cgroup's OOM killer killed a
// process of the sandbox (or, on kernels without that count, whether the
// cap was ever hit).
func (sb *sandbox) memoryExceeded() bool {
	dir := sb.cgroups["memory"]
	if b, err := os.ReadFile(filepath.Join(dir, "memory.oom_control")); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
				n, _ := strconv.Atoi(strings.TrimSpace(v))
				return n > 0
			}
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "memory.failcnt"))
	if err != nil {
		return false
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n > 0
}

// pids reports how many processes the sandbox holds now.
func (sb *sandbox) pids() int {
	b, err := os.ReadFile(filepath.Join(sb.cgroups["pids"], "pids.current"))
	if err != nil {
		return -1
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

// release removes what newSandbox made; every process in it has exited.
func (sb *sandbox) release() {
	for _, dir := range sb.cgroups {
		_ = os.Remove(dir)
	}
	if sb.netns != nil {
		sb.netns.Close()
	}
	if sb.hostns != nil {
		sb.hostns.Close()
	}
	if sb.live != nil {
		sb.live.Close()
	}
	sb.rt.uids.put(sb.uid)
}

// setRlimits caps what the process may open and start. The limits are set
// right after the start (Go cannot set them between fork and exec); the
// pids cgroup already bounds processes from birth.
func setRlimits(pid int, nofile uint64, nproc int, sandboxed bool) {
	_ = unix.Prlimit(pid, unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: nofile, Max: nofile}, nil)
	_ = unix.Prlimit(pid, unix.RLIMIT_CORE, &unix.Rlimit{}, nil)
	if sandboxed {
		// Per uid, and every sandboxed instance has its own.
		_ = unix.Prlimit(pid, unix.RLIMIT_NPROC, &unix.Rlimit{Cur: uint64(nproc), Max: uint64(nproc)}, nil)
	}
}

// catchesTERM reports whether process pid handles SIGTERM. A process that
// is the init of its pid namespace ignores SIGTERM unless it does, so stop
// sends it SIGKILL at once instead of waiting out the grace period: for a
// process without a handler that is what SIGTERM would have done.
func catchesTERM(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "SigCgt:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && mask&(1<<(uint(syscall.SIGTERM)-1)) != 0
		}
	}
	return false
}
