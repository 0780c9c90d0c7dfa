package sandboxinit

import (
	"errors"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"unsafe"
)

// init runs the helper when this process was started as one, and never
// returns then. It imports only os, runtime, syscall, strconv, unsafe and errors, so that
// it runs before the inits of the node's heavy dependencies.
func init() {
	if len(os.Args) < 2 || os.Args[0] != Arg0 {
		return
	}
	// The main goroutine is locked to the main thread during inits; say
	// so: the parent-death signal, the credentials (drop) and the exec
	// below must be on the same thread.
	runtime.LockOSThread()
	err := run(os.Args[1:])
	os.Stderr.WriteString("nimbus sandbox: " + err.Error() + "\n")
	os.Exit(127)
}

// prctl options (linux/prctl.h).
const (
	prSetPdeathsig  = 1
	prSetNoNewPrivs = 38
)

// run builds the sandbox's view, waits for the function (ClaimFD), shows
// its directory, pivots, drops and execs it.
func run(args []string) error {
	c, err := parse(args)
	if err != nil {
		return err
	}
	if c.CgroupNS {
		// The helper was born in the instance's cgroup (CLONE_INTO_CGROUP),
		// so the new namespace is rooted there. Made here, not by the clone:
		// here the root is the cgroup the helper is in, whatever order the
		// clone copies namespaces and moves the child in.
		if err := syscall.Unshare(syscall.CLONE_NEWCGROUP); err != nil {
			return wrap("cgroup namespace", err)
		}
	}
	if err := build(c); err != nil {
		return err
	}
	if err := syscall.Sethostname([]byte(Hostname)); err != nil {
		return wrap("hostname", err)
	}
	claim, err := readClaim()
	if err != nil {
		return err
	}
	if err := parseClaim(&c, claim); err != nil {
		return err
	}
	if err := show(c.Root, c.App, c.AppDir, true); err != nil {
		return err
	}
	if err := pivot(c.Root); err != nil {
		return err
	}
	if err := syscall.Chdir(c.Dir); err != nil {
		return wrap("working directory "+c.Dir, err)
	}
	if err := batch(); err != nil {
		return err
	}
	if err := drop(c.UID); err != nil {
		return err
	}
	err = syscall.Exec(c.Path, c.Args, c.Env)
	return wrap("exec "+c.Path+" (the sandbox shows the function's directory at "+c.AppDir+" and the system paths)", err)
}

// readClaim reads ClaimFD to its end: the node writes the function's part
// of the Config and closes its end. An empty claim is a node that died or
// dropped this sandbox unused.
func readClaim() ([]byte, error) {
	var out []byte
	var buf [4096]byte
	for {
		n, err := syscall.Read(ClaimFD, buf[:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, wrap("read the claim", err)
		}
		if n == 0 {
			break
		}
		out = append(out, buf[:n]...)
		if len(out) > 1<<20 {
			return nil, errors.New("claim: over 1MiB")
		}
	}
	_ = syscall.Close(ClaimFD)
	if len(out) == 0 {
		return nil, errors.New("no function claimed this sandbox")
	}
	return out, nil
}

func wrap(what string, err error) error { return errors.New(what + ": " + err.Error()) }

func mount(src, target, fstype string, flags uintptr, data string) error {
	if err := syscall.Mount(src, target, fstype, flags, data); err != nil {
		return wrap("mount "+fstype+" "+src+" at "+target, err)
	}
	return nil
}

// build mounts the new root at c.Root.
func build(c Config) error {
	// Nothing done here may reach the node's mount namespace.
	if err := mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		return err
	}
	root := c.Root
	if err := mount("tmpfs", root, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size=1m,mode=0755"); err != nil {
		return err
	}
	for _, p := range c.System {
		if err := show(root, p, p, true); err != nil {
			return err
		}
	}
	for _, b := range c.Binds {
		if err := show(root, b[0], b[1], true); err != nil {
			return err
		}
	}
	u := strconv.Itoa(c.UID)
	if err := os.MkdirAll(root+"/tmp", 0o755); err != nil {
		return err
	}
	if err := mount("tmpfs", root+"/tmp", "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV,
		"size="+strconv.FormatUint(c.TmpBytes, 10)+",mode=0700,uid="+u+",gid="+u); err != nil {
		return err
	}
	if err := devices(root); err != nil {
		return err
	}
	if err := os.MkdirAll(root+"/proc", 0o555); err != nil {
		return err
	}
	if err := mount("proc", root+"/proc", "proc", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, ""); err != nil {
		return err
	}
	if err := os.MkdirAll(root+"/etc", 0o755); err != nil {
		return err
	}
	for _, f := range [][2]string{{"passwd", Passwd(c.UID)}, {"group", Group(c.UID)}, {"hosts", Hosts}, {"hostname", Hostname + "\n"}} {
		if err := os.WriteFile(root+"/etc/"+f[0], []byte(f[1]), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// show makes host path src visible at dst in root: a symbolic link is
// recreated, a directory or file is bind-mounted (read-only when ro); a
// missing src is skipped.
func show(root, src, dst string, ro bool) error {
	st, err := os.Lstat(src)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	target := root + dst
	if err := os.MkdirAll(dir(target), 0o755); err != nil {
		return err
	}
	switch {
	case st.Mode()&os.ModeSymlink != 0:
		link, err := os.Readlink(src)
		if err != nil {
			return err
		}
		return os.Symlink(link, target)
	case st.IsDir():
		err = os.Mkdir(target, 0o755)
	default:
		var f *os.File
		if f, err = os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644); err == nil {
			err = f.Close()
		}
	}
	if err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if err := mount(src, target, "", syscall.MS_BIND|syscall.MS_REC, ""); err != nil {
		return err
	}
	flags := uintptr(syscall.MS_BIND | syscall.MS_REMOUNT | syscall.MS_NOSUID)
	if ro {
		flags |= syscall.MS_RDONLY | syscall.MS_NODEV
	}
	return mount("", target, "", flags, "")
}

// dir is filepath.Dir for the clean absolute paths used here (path/filepath
// is not imported: see init).
func dir(p string) string {
	for i := len(p) - 1; i > 0; i-- {
		if p[i] == '/' {
			return p[:i]
		}
	}
	return "/"
}

// devices makes /dev: a small tmpfs with the harmless host devices bound
// in, and the usual links into /proc.
func devices(root string) error {
	dev := root + "/dev"
	if err := os.MkdirAll(dev, 0o755); err != nil {
		return err
	}
	if err := mount("tmpfs", dev, "tmpfs", syscall.MS_NOSUID|syscall.MS_NOEXEC, "size=64k,mode=0755"); err != nil {
		return err
	}
	for _, d := range []string{"null", "zero", "full", "random", "urandom"} {
		if err := show(dev, "/dev/"+d, "/"+d, false); err != nil {
			return err
		}
	}
	for _, l := range [][2]string{{"fd", "/proc/self/fd"}, {"stdin", "/proc/self/fd/0"}, {"stdout", "/proc/self/fd/1"}, {"stderr", "/proc/self/fd/2"}} {
		if err := os.Symlink(l[1], dev+"/"+l[0]); err != nil {
			return err
		}
	}
	return nil
}

// pivot makes root the root and detaches the old one, then makes the root
// read-only (its mounts keep their own flags: /tmp stays writable).
func pivot(root string) error {
	if err := os.Mkdir(root+"/.old", 0o700); err != nil {
		return err
	}
	if err := syscall.PivotRoot(root, root+"/.old"); err != nil {
		return wrap("pivot_root", err)
	}
	if err := syscall.Chdir("/"); err != nil {
		return err
	}
	if err := syscall.Unmount("/.old", syscall.MNT_DETACH); err != nil {
		return wrap("detach the old root", err)
	}
	if err := os.Remove("/.old"); err != nil {
		return err
	}
	return mount("", "/", "", syscall.MS_REMOUNT|syscall.MS_RDONLY|syscall.MS_NOSUID|syscall.MS_NODEV, "")
}

// drop becomes uid (and its gid, without groups), forbids gaining
// privileges, and re-arms the parent-death signal the uid change cleared;
// then it checks that the node did not die before that.
//
// The credentials change on this thread only, with the raw system calls:
// the exec that follows runs on this thread (init locks it) and the
// program gets this thread's credentials, and the exec ends every other
// thread of the helper (Go runtime threads, which run nothing of the
// function). syscall.Setresuid and its kin change every thread, with a
// signal to each and a wait for it, three times: 0.6-0.8 ms of a cold
// start on this host, where a signal to another thread goes through the
// hypervisor, against about 0.1 ms for the whole of drop now.
func drop(uid int) error {
	id := uintptr(uid)
	if _, _, e := syscall.RawSyscall(syscall.SYS_SETGROUPS, 0, 0, 0); e != 0 {
		return wrap("setgroups", e)
	}
	if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESGID, id, id, id); e != 0 {
		return wrap("setresgid", e)
	}
	if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESUID, id, id, id); e != 0 {
		return wrap("setresuid", e)
	}
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prSetNoNewPrivs, 1, 0); e != 0 {
		return wrap("no_new_privs", e)
	}
	if _, _, e := syscall.RawSyscall(syscall.SYS_PRCTL, prSetPdeathsig, uintptr(syscall.SIGKILL), 0); e != 0 {
		return wrap("parent-death signal", e)
	}
	if err := syscall.SetNonblock(LivenessFD, true); err != nil {
		return wrap("liveness pipe", err)
	}
	var b [1]byte
	n, err := syscall.Read(LivenessFD, b[:])
	if n == 0 && err == nil {
		return errors.New("the node is gone")
	}
	if err != nil && err != syscall.EAGAIN {
		return wrap("liveness pipe", err)
	}
	return syscall.Close(LivenessFD)
}

// schedBatch is SCHED_BATCH (linux/sched.h).
const schedBatch = 3

// batch makes this thread, and so the function's process and every thread
// it starts, SCHED_BATCH: scheduled as fairly as any other, but its wakeups
// never preempt the task running on the CPU. A request the node writes to
// the process then does not switch the node off the CPU in the middle of
// its work; the process runs when the node waits, or on an idle CPU.
func batch() error {
	var param struct{ priority int32 }
	if _, _, e := syscall.RawSyscall(syscall.SYS_SCHED_SETSCHEDULER, 0, schedBatch, uintptr(unsafe.Pointer(&param))); e != 0 {
		return wrap("scheduling policy (SCHED_BATCH)", e)
	}
	return nil
}
