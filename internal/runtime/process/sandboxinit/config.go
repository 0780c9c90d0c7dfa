package sandboxinit

import (
	"errors"
	"strconv"
)

// Arg0 is argv[0] of a process that must run as the sandbox helper.
const Arg0 = "nimbus-sandbox-init"

// Config is the filesystem view and the identity of one sandboxed process.
// It comes in two parts. The sandbox (Argv: Root, System, Binds, TmpBytes,
// UID) is known before any function is chosen: the node starts the helper
// with it ahead of time, and the helper builds everything of the view but
// the function's directory, then waits. The function (Claim: App, AppDir,
// Path, Args, Dir, Env) comes later on ClaimFD; the helper mounts the
// function's directory, pivots into the view, drops to UID and execs.
// Both are encoded by hand, not as JSON: the helper's init must run before
// the node's other packages' inits, so its package imports as little as it
// can (os, syscall, strconv, errors).
type Config struct {
	// Root is a directory of the node, empty, that the new root is mounted
	// on (in the process's own mount namespace: nothing else sees it).
	Root string
	// App is the function's directory on the node; AppDir is where the
	// process sees it (read-only).
	App    string
	AppDir string
	// System are host paths shown read-only at the same path: directories,
	// files, or symbolic links (recreated as links). A path the host lacks
	// is skipped.
	System []string
	// Binds are host paths shown read-only elsewhere: {host, in the
	// sandbox}. The node binds the instance's own cgroup directories at
	// /sys/fs/cgroup/<controller>, so that runtimes size themselves to
	// their limits (Go's GOMAXPROCS, Node's heap) and see nothing else.
	Binds [][2]string
	// CgroupNS: the helper makes a cgroup namespace rooted at its own
	// cgroup (cgroup v2, where the node binds that cgroup at
	// /sys/fs/cgroup), so that /proc/self/cgroup says "0::/" and matches
	// the mount.
	CgroupNS bool
	// TmpBytes is the size of the private /tmp.
	TmpBytes uint64
	// UID is the uid and gid the process runs as.
	UID int
	// Path is the program, as the process sees it; Args its argv; Dir its
	// working directory (as the process sees it); Env its environment.
	Path string
	Args []string
	Dir  string
	Env  []string
}

// ClaimFD is the descriptor the helper reads the function's part of its
// Config from (Claim), to end of file. LivenessFD (3) is the read end of a
// pipe whose write end only the node holds.
const (
	LivenessFD = 3
	ClaimFD    = 4
)

// Argv is how the node starts the helper for c's sandbox: Arg0, then
// Root, TmpBytes, UID, CgroupNS ("1" or "0"), the count of System paths and the paths, the count of
// Binds and the pairs.
func (c Config) Argv() []string {
	ns := "0"
	if c.CgroupNS {
		ns = "1"
	}
	out := []string{Arg0, c.Root, strconv.FormatUint(c.TmpBytes, 10), strconv.Itoa(c.UID), ns, strconv.Itoa(len(c.System))}
	out = append(out, c.System...)
	out = append(out, strconv.Itoa(len(c.Binds)))
	for _, b := range c.Binds {
		out = append(out, b[0], b[1])
	}
	return out
}

// Claim is c's function part as the node writes it on ClaimFD: App,
// AppDir, Path, Dir, the count of Args and the args, then Env, each ended
// by a NUL.
func (c Config) Claim() []byte {
	var b []byte
	for _, s := range []string{c.App, c.AppDir, c.Path, c.Dir, strconv.Itoa(len(c.Args))} {
		b = append(append(b, s...), 0)
	}
	for _, s := range c.Args {
		b = append(append(b, s...), 0)
	}
	for _, s := range c.Env {
		b = append(append(b, s...), 0)
	}
	return b
}

// parse reads what Argv wrote (without argv[0]).
func parse(a []string) (Config, error) {
	var c Config
	if len(a) < 5 {
		return c, errors.New("config: too few arguments")
	}
	c.Root = a[0]
	var err error
	if c.TmpBytes, err = strconv.ParseUint(a[1], 10, 64); err != nil {
		return c, errors.New("config: tmp size: " + err.Error())
	}
	if c.UID, err = strconv.Atoi(a[2]); err != nil {
		return c, errors.New("config: uid: " + err.Error())
	}
	switch a[3] {
	case "0":
	case "1":
		c.CgroupNS = true
	default:
		return c, errors.New("config: cgroup namespace: " + a[3])
	}
	n, err := strconv.Atoi(a[4])
	if err != nil || n < 0 || len(a) < 5+n+1 {
		return c, errors.New("config: system paths")
	}
	c.System = a[5 : 5+n]
	a = a[5+n:]
	n, err = strconv.Atoi(a[0])
	if err != nil || n < 0 || len(a) != 1+2*n {
		return c, errors.New("config: binds")
	}
	for i := range n {
		c.Binds = append(c.Binds, [2]string{a[1+2*i], a[2+2*i]})
	}
	return c, nil
}

// parseClaim reads what Claim wrote into c.
func parseClaim(c *Config, b []byte) error {
	var f []string
	for len(b) > 0 {
		k := 0
		for k < len(b) && b[k] != 0 {
			k++
		}
		if k == len(b) {
			return errors.New("claim: unterminated field")
		}
		f = append(f, string(b[:k]))
		b = b[k+1:]
	}
	if len(f) < 5 {
		return errors.New("claim: too few fields")
	}
	c.App, c.AppDir, c.Path, c.Dir = f[0], f[1], f[2], f[3]
	n, err := strconv.Atoi(f[4])
	if err != nil || n < 1 || len(f) < 5+n {
		return errors.New("claim: args")
	}
	c.Args, c.Env = f[5:5+n], f[5+n:]
	return nil
}

// Passwd is /etc/passwd of a process running as uid: root (owner of
// everything mounted), and the process's own user, named "nimbus", whose
// home is /tmp.
func Passwd(uid int) string {
	u := strconv.Itoa(uid)
	return "root:x:0:0:root:/root:/usr/sbin/nologin\nnimbus:x:" + u + ":" + u + ":nimbus function:/tmp:/usr/sbin/nologin\n"
}

// Group is /etc/group of a process running as uid.
func Group(uid int) string {
	return "root:x:0:\nnimbus:x:" + strconv.Itoa(uid) + ":\n"
}

// Hosts is /etc/hosts: the loopback is all a sandboxed process has.
const Hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"

// Hostname is the uts hostname of a sandboxed process.
const Hostname = "nimbus"
