package sandboxinit

import (
	"errors"
	"strconv"
)

// Arg0 is argv[0] of a process that must run as the sandbox helper.
const Arg0 = "nimbus-sandbox-init"

// Config is the filesystem view and the identity of one sandboxed process,
// passed in argv (see Argv). It is encoded by hand, not as JSON: the
// helper's init must run before the node's other packages' inits, so its
// package imports as little as it can (os, syscall, strconv, errors).
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
	// TmpBytes is the size of the private /tmp.
	TmpBytes uint64
	// UID is the uid and gid the process runs as.
	UID int
	// Path is the program, as the process sees it; Args its argv; Dir its
	// working directory (as the process sees it).
	Path string
	Args []string
	Dir  string
}

// Argv is how the node starts the helper for c: Arg0, then the fields in
// order, the count of System paths and the paths, then Args.
func (c Config) Argv() []string {
	out := []string{Arg0, c.Root, c.App, c.AppDir, strconv.FormatUint(c.TmpBytes, 10), strconv.Itoa(c.UID), c.Path, c.Dir,
		strconv.Itoa(len(c.System))}
	out = append(out, c.System...)
	out = append(out, strconv.Itoa(len(c.Binds)))
	for _, b := range c.Binds {
		out = append(out, b[0], b[1])
	}
	return append(out, c.Args...)
}

// parse reads what Argv wrote (without argv[0]).
func parse(a []string) (Config, error) {
	var c Config
	if len(a) < 8 {
		return c, errors.New("config: too few arguments")
	}
	c.Root, c.App, c.AppDir, c.Path, c.Dir = a[0], a[1], a[2], a[5], a[6]
	var err error
	if c.TmpBytes, err = strconv.ParseUint(a[3], 10, 64); err != nil {
		return c, errors.New("config: tmp size: " + err.Error())
	}
	if c.UID, err = strconv.Atoi(a[4]); err != nil {
		return c, errors.New("config: uid: " + err.Error())
	}
	n, err := strconv.Atoi(a[7])
	if err != nil || n < 0 || len(a) < 8+n+1 {
		return c, errors.New("config: system paths")
	}
	c.System = a[8 : 8+n]
	a = a[8+n:]
	n, err = strconv.Atoi(a[0])
	if err != nil || n < 0 || len(a) < 1+2*n+1 {
		return c, errors.New("config: binds")
	}
	for i := range n {
		c.Binds = append(c.Binds, [2]string{a[1+2*i], a[2+2*i]})
	}
	c.Args = a[1+2*n:]
	return c, nil
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
