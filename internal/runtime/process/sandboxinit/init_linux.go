package sandboxinit

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"
)

// init runs the helper when this process was started as one, and never
// returns then.
func init() {
	if len(os.Args) != 2 || os.Args[0] != Arg0 {
		return
	}
	// The main goroutine is locked to the main thread during inits: the
	// parent-death signal and the exec below are on the same thread.
	err := run(os.Args[1])
	fmt.Fprintf(os.Stderr, "nimbus sandbox: %v\n", err)
	os.Exit(127)
}

// livenessFD is the read end of a pipe whose write end only the node
// holds: it hangs up when the node dies.
const livenessFD = 3

func run(arg string) error {
	var c Config
	if err := json.Unmarshal([]byte(arg), &c); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if err := build(c); err != nil {
		return err
	}
	if err := unix.Sethostname([]byte(Hostname)); err != nil {
		return fmt.Errorf("hostname: %w", err)
	}
	if err := pivot(c.Root); err != nil {
		return err
	}
	if err := os.Chdir(c.Dir); err != nil {
		return fmt.Errorf("working directory: %w", err)
	}
	if err := drop(c.UID); err != nil {
		return err
	}
	if err := syscall.Exec(c.Path, c.Args, os.Environ()); err != nil {
		return fmt.Errorf("exec %s: %w (the sandbox shows the function's directory at %s and the system paths %v)", c.Path, err, c.AppDir, c.System)
	}
	return nil
}

// build mounts the new root at c.Root.
func build(c Config) error {
	// Nothing done here may reach the node's mount namespace.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	root := c.Root
	if err := unix.Mount("tmpfs", root, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=1m,mode=0755"); err != nil {
		return fmt.Errorf("root tmpfs at %s: %w", root, err)
	}
	for _, p := range c.System {
		if err := show(root, p, p, true); err != nil {
			return err
		}
	}
	if err := show(root, c.App, c.AppDir, true); err != nil {
		return err
	}
	tmp := filepath.Join(root, "tmp")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	opts := fmt.Sprintf("size=%d,mode=0700,uid=%d,gid=%d", c.TmpBytes, c.UID, c.UID)
	if err := unix.Mount("tmpfs", tmp, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return fmt.Errorf("/tmp: %w", err)
	}
	if err := devices(root); err != nil {
		return err
	}
	proc := filepath.Join(root, "proc")
	if err := os.MkdirAll(proc, 0o555); err != nil {
		return err
	}
	if err := unix.Mount("proc", proc, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("/proc: %w", err)
	}
	etc := filepath.Join(root, "etc")
	if err := os.MkdirAll(etc, 0o755); err != nil {
		return err
	}
	for name, content := range map[string]string{"passwd": Passwd(c.UID), "group": Group(c.UID), "hosts": Hosts, "hostname": Hostname + "\n"} {
		if err := os.WriteFile(filepath.Join(etc, name), []byte(content), 0o644); err != nil {
			return fmt.Errorf("/etc/%s: %w", name, err)
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
	target := filepath.Join(root, dst)
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
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
	if err := unix.Mount(src, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("show %s at %s: %w", src, dst, err)
	}
	flags := uintptr(unix.MS_BIND | unix.MS_REMOUNT | unix.MS_NOSUID)
	if ro {
		flags |= unix.MS_RDONLY | unix.MS_NODEV
	}
	if err := unix.Mount("", target, "", flags, ""); err != nil {
		return fmt.Errorf("make %s read-only: %w", dst, err)
	}
	return nil
}

// devices makes /dev: a small tmpfs with the harmless host devices bound
// in, and the usual links into /proc.
func devices(root string) error {
	dev := filepath.Join(root, "dev")
	if err := os.MkdirAll(dev, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", dev, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "size=64k,mode=0755"); err != nil {
		return fmt.Errorf("/dev: %w", err)
	}
	for _, d := range []string{"null", "zero", "full", "random", "urandom"} {
		if err := show(dev, "/dev/"+d, d, false); err != nil {
			return err
		}
	}
	for name, to := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		if err := os.Symlink(to, filepath.Join(dev, name)); err != nil {
			return err
		}
	}
	return nil
}

// pivot makes root the root and detaches the old one, then makes the root
// read-only (its mounts keep their own flags: /tmp stays writable).
func pivot(root string) error {
	old := filepath.Join(root, ".old")
	if err := os.Mkdir(old, 0o700); err != nil {
		return err
	}
	if err := unix.PivotRoot(root, old); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	if err := unix.Unmount("/.old", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach the old root: %w", err)
	}
	if err := os.Remove("/.old"); err != nil {
		return err
	}
	if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("make the root read-only: %w", err)
	}
	return nil
}

// drop becomes uid (and its gid, without groups), forbids gaining
// privileges, and re-arms the parent-death signal the uid change cleared;
// then it checks that the node did not die before that.
func drop(uid int) error {
	if err := syscall.Setgroups([]int{}); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setresgid(uid, uid, uid); err != nil {
		return fmt.Errorf("setresgid: %w", err)
	}
	if err := syscall.Setresuid(uid, uid, uid); err != nil {
		return fmt.Errorf("setresuid: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		return fmt.Errorf("parent-death signal: %w", err)
	}
	fds := []unix.PollFd{{Fd: livenessFD, Events: unix.POLLIN}}
	if _, err := unix.Poll(fds, 0); err != nil {
		return fmt.Errorf("liveness pipe: %w", err)
	}
	if fds[0].Revents&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0 {
		return errors.New("the node is gone")
	}
	return unix.Close(livenessFD)
}
