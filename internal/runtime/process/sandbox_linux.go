package process

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

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

// sandbox is the isolation of one process: its uid, cgroups, network
// namespace and the sandboxinit helper started in them, which has built
// the filesystem view but the function's directory and waits for a
// function (claim). A sandbox is made ahead of time by the pool (pool.go)
// or when a start finds the pool empty; either way it serves one process
// of one function, once, and is released with it.
type sandbox struct {
	rt     *Runtime
	uid    int
	tmp    string          // HOME and TMPDIR as the process sees them: its private tmpfs
	cg     instanceCgroups // this process's cgroups (v1 or v2); nil until made
	netns  *os.File        // the process's network namespace; nil until the helper starts
	hostns *os.File        // the node's network namespace
	live   *os.File        // the node's end of the helper's liveness pipe
	claimW *os.File        // the node's end of the helper's claim pipe; nil once claimed

	cmd            *exec.Cmd
	stdout, stderr *switchWriter
	outs           []*outPipe    // the helper's (then the process's) stdout and stderr
	exited         chan struct{} // closed when the helper (then the function) has exited
	exitErr        error         // set before exited is closed

	// inNetns run inside the network namespace at the claim, before the
	// function starts: the Lambda contract opens its Runtime API listener
	// there, and the platform API its own.
	inNetns []func() error
	mu      sync.Mutex
	probe   int      // an unconnected TCP socket in netns, for readiness; -1 once used or closed
	first   net.Conn // the probe socket once connected: the first connection dial returns
}

// makeSandbox makes a sandbox: a uid, cgroups capping its process count
// and CPU (the memory cap is the function's, set at the claim), a new
// network namespace with its loopback up, and the helper started in them
// and in new pid, ipc, uts and mount namespaces, where it builds the view.
func (r *Runtime) makeSandbox() (_ *sandbox, err error) {
	uid, err := r.uids.get()
	if err != nil {
		return nil, err
	}
	sb := &sandbox{rt: r, uid: uid, tmp: "/tmp", probe: -1,
		stdout: &switchWriter{}, stderr: &switchWriter{}, exited: make(chan struct{})}
	defer func() {
		if err != nil {
			sb.release()
		}
	}()
	id := "i-" + randomID()
	newCgroups := r.newCgroups
	if newCgroups == nil {
		newCgroups = r.newInstanceCgroups
	}
	if sb.cg, err = newCgroups(id, cpuQuota(r.cfg.CPUs)); err != nil {
		return nil, err
	}
	if sb.hostns, err = os.Open("/proc/thread-self/ns/net"); err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	if err := sb.start(); err != nil {
		return nil, err
	}
	return sb, nil
}

// newInstanceCgroups makes the cgroups of sandbox id in the host's
// hierarchy: v2 when the probe found one with the controllers, else v1.
func (r *Runtime) newInstanceCgroups(id string, quota int) (instanceCgroups, error) {
	if r.host.Cgroup2 != "" {
		c, err := newCgroup2Instance(dirCgroupFS(r.host.Cgroup2), "/", id, r.cfg.MaxProcs, quota)
		if err != nil {
			return nil, err
		}
		return c, nil
	}
	c, err := newCgroup1Instance(r.host.Cgroups, id, r.cfg.MaxProcs, quota)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// start starts the helper: /proc/self/exe re-executed as sandboxinit with
// the sandbox's part of the view. It is cloned from a thread that first
// moves into a new network namespace (with its loopback up) and, on
// cgroup v1, into the sandbox's cgroups (on v2 the clone itself puts the
// child in its cgroup: CLONE_INTO_CGROUP), so the helper is born inside
// both and never runs outside its limits; the thread then moves back. A
// thread that cannot move back is never reused: its goroutine exits
// locked, and the runtime ends the thread (which kills the helper too, by
// its parent-death signal), so the start fails.
func (sb *sandbox) start() error {
	view := sandboxinit.Config{Root: sb.rt.root, UID: sb.uid, System: sb.rt.cfg.System, TmpBytes: sb.rt.cfg.TmpBytes,
		Binds: sb.cg.binds(), CgroupNS: sb.cg.namespace()}
	liveR, liveW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("sandbox: liveness pipe: %w", err)
	}
	defer liveR.Close()
	sb.live = liveW
	claimR, claimW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("sandbox: claim pipe: %w", err)
	}
	defer claimR.Close()
	sb.claimW = claimW
	outW, err := sb.outputs()
	if err != nil {
		return fmt.Errorf("sandbox: output pipes: %w", err)
	}
	defer func() {
		for _, w := range outW {
			w.Close() // the helper has its own copies
		}
	}()
	// The helper's own environment (the function's comes with the claim):
	// one P, so that its Go runtime starts fewer threads, which the exec
	// of the function must stop (the exec is ~0.9 ms of a cold start).
	sb.cmd = &exec.Cmd{
		Path: "/proc/self/exe", Args: view.Argv(), Dir: "/", Env: []string{"GOMAXPROCS=1"},
		Stdout: outW[0], Stderr: outW[1],
		ExtraFiles: []*os.File{liveR, claimR}, // sandboxinit.LivenessFD, ClaimFD
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: sandboxFlags,
			Setpgid:    true,
			Pdeathsig:  syscall.SIGKILL,
		},
	}
	errc := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		restored, err := sb.startOnThread()
		if restored {
			goruntime.UnlockOSThread()
		} else if err == nil {
			err = errors.New("sandbox: the starting thread could not leave the process's namespace or cgroups")
		}
		errc <- err
	}()
	if err := <-errc; err != nil {
		for _, o := range sb.outs {
			o.r.Close()
		}
		return err
	}
	setRlimits(sb.cmd.Process.Pid, sb.rt.cfg.MaxOpenFiles, sb.rt.cfg.MaxProcs, true)
	go func() {
		err := sb.cmd.Wait()
		for _, o := range sb.outs {
			o.wait(time.Second) // a child that kept the output open does not hold the exit
		}
		sb.exitErr = err
		close(sb.exited)
	}()
	return nil
}

// outputs makes the helper's stdout and stderr pipes, read into
// sb.stdout and sb.stderr; it returns their write ends.
func (sb *sandbox) outputs() ([]*os.File, error) {
	var ws []*os.File
	for _, w := range []io.Writer{sb.stdout, sb.stderr} {
		o, wr, err := newOutPipe(w)
		if err != nil {
			for _, w := range ws {
				w.Close()
			}
			return nil, err
		}
		sb.outs = append(sb.outs, o)
		ws = append(ws, wr)
	}
	return ws, nil
}

func (sb *sandbox) startOnThread() (restored bool, err error) {
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
	if sb.probe, err = unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0); err != nil {
		sb.probe = -1
		return restoreNet(), fmt.Errorf("sandbox: probe socket: %w", err)
	}
	// A connect that a full backlog holds up is bounded.
	_ = unix.SetsockoptTimeval(sb.probe, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &unix.Timeval{Usec: 100_000})
	leave, err := sb.cg.enter(sb.cmd.SysProcAttr)
	if err != nil {
		return leave() && restoreNet(), err
	}
	err = sb.cmd.Start()
	return leave() && restoreNet(), err
}

// claim hands the sandbox to one process of a function: it caps the
// memory, opens what must listen inside the network namespace (inNetns),
// points the helper's output at stdout and stderr and sends it the
// function's part of the view (program, directory, environment), on which
// the helper mounts the function's directory, pivots, drops to the uid and
// execs the program.
func (sb *sandbox) claim(memory uint64, view sandboxinit.Config, stdout, stderr io.Writer) error {
	if err := sb.cg.setMemory(memory); err != nil {
		return err
	}
	if len(sb.inNetns) > 0 {
		if err := sb.inNamespace(func() error {
			for _, f := range sb.inNetns {
				if err := f(); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return fmt.Errorf("sandbox: %w", err)
		}
	}
	sb.stdout.set(stdout)
	sb.stderr.set(stderr)
	w := sb.claimW
	sb.claimW = nil
	_, err := w.Write(view.Claim())
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sandbox: claim: %w", err)
	}
	return nil
}

// inNamespace runs f on a thread inside the sandbox's network namespace:
// what f opens there stays there after the thread moves back.
func (sb *sandbox) inNamespace(f func() error) error {
	ch := make(chan error, 1)
	go func() {
		goruntime.LockOSThread()
		if err := unix.Setns(int(sb.netns.Fd()), unix.CLONE_NEWNET); err != nil {
			goruntime.UnlockOSThread()
			ch <- fmt.Errorf("enter the process's network namespace: %w", err)
			return
		}
		err := f()
		if unix.Setns(int(sb.hostns.Fd()), unix.CLONE_NEWNET) == nil {
			goruntime.UnlockOSThread()
		} // else the goroutine exits locked and the thread is discarded
		ch <- err
	}()
	return <-ch
}

// alive reports whether the helper still runs.
func (sb *sandbox) alive() bool {
	select {
	case <-sb.exited:
		return false
	default:
		return true
	}
}

// switchWriter is the helper's output until the claim (kept, up to 4KiB:
// only the helper's own error can be written then) and the process's
// from the claim on.
type switchWriter struct {
	mu      sync.Mutex
	w       io.Writer
	pending []byte
}

func (s *switchWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.w == nil {
		if room := 4<<10 - len(s.pending); room > 0 {
			s.pending = append(s.pending, b[:min(len(b), room)]...)
		}
		return len(b), nil
	}
	return s.w.Write(b)
}

func (s *switchWriter) set(w io.Writer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.w = w
	if len(s.pending) > 0 {
		_, _ = w.Write(s.pending)
		s.pending = nil
	}
}

// lastPending is what the helper wrote before any claim, trimmed: its
// error when it exits unclaimed.
func (s *switchWriter) lastPending() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.TrimSpace(string(s.pending))
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
// thread moves back. The first call returns the connection readiness made.
func (sb *sandbox) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	sb.mu.Lock()
	c := sb.first
	sb.first = nil
	sb.mu.Unlock()
	if c != nil {
		return c, nil
	}
	err := sb.inNamespace(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// memoryExceeded reports whether the memory cgroup's OOM killer killed a
// process of the sandbox (or, on v1 kernels without that count, whether
// the cap was ever hit).
func (sb *sandbox) memoryExceeded() bool { return sb.cg.oomKilled() }

// pids reports how many processes the sandbox holds now.
func (sb *sandbox) pids() int { return sb.cg.pids() }

// release stops the helper or process if it still runs and removes what
// makeSandbox made.
func (sb *sandbox) release() {
	if sb.cmd != nil && sb.cmd.Process != nil {
		if sb.alive() {
			pid := sb.cmd.Process.Pid
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		<-sb.exited
	}
	if sb.claimW != nil {
		sb.claimW.Close()
	}
	if sb.cg != nil {
		sb.cg.remove()
	}
	if sb.netns != nil {
		sb.netns.Close()
	}
	sb.mu.Lock()
	if sb.probe >= 0 {
		unix.Close(sb.probe)
		sb.probe = -1
	}
	if sb.first != nil {
		sb.first.Close()
		sb.first = nil
	}
	sb.mu.Unlock()
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

// probeConnect connects the probe socket (made in the process's network
// namespace when the sandbox was) to port on its loopback: a blocking
// connect, which on the loopback answers at once (refused while nothing
// listens; Linux lets a socket whose connect failed connect again). Once
// it connects, the socket is the first connection to the process: dial
// hands it out before making others.
func (sb *sandbox) probeConnect(port int) error {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	if sb.first != nil {
		return nil
	}
	if sb.probe < 0 {
		return errors.New("sandbox: no probe socket")
	}
	if err := unix.Connect(sb.probe, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return err
	}
	f := os.NewFile(uintptr(sb.probe), "probe")
	sb.probe = -1
	c, err := net.FileConn(f) // dups the descriptor
	f.Close()
	if err != nil {
		return err
	}
	sb.first = c
	return nil
}
