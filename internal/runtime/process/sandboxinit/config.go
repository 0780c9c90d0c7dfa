package sandboxinit

import (
	"encoding/json"
	"fmt"
)

// Arg0 is argv[0] of a process that must run as the sandbox helper.
const Arg0 = "nimbus-sandbox-init"

// Config is the filesystem view and the identity of one sandboxed process,
// passed as argv[1] (JSON).
type Config struct {
	// Root is a directory of the node, empty, that the new root is mounted
	// on (in the process's own mount namespace: nothing else sees it).
	Root string `json:"root"`
	// App is the function's directory on the node; AppDir is where the
	// process sees it (read-only).
	App    string `json:"app"`
	AppDir string `json:"app_dir"`
	// System are host paths shown read-only at the same path: directories,
	// files, or symbolic links (recreated as links). A path the host lacks
	// is skipped.
	System []string `json:"system"`
	// TmpBytes is the size of the private /tmp.
	TmpBytes uint64 `json:"tmp_bytes"`
	// UID is the uid and gid the process runs as.
	UID int `json:"uid"`
	// Path is the program, as the process sees it; Args its argv; Dir its
	// working directory (as the process sees it).
	Path string   `json:"path"`
	Args []string `json:"args"`
	Dir  string   `json:"dir"`
}

// Argv is how the node starts the helper for c: argv[0] Arg0, argv[1] c.
func (c Config) Argv() ([]string, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("sandbox config: %w", err)
	}
	return []string{Arg0, string(b)}, nil
}

// Passwd is /etc/passwd of a process running as uid: root (owner of
// everything mounted), and the process's own user, named "nimbus", whose
// home is /tmp.
func Passwd(uid int) string {
	return fmt.Sprintf("root:x:0:0:root:/root:/usr/sbin/nologin\nnimbus:x:%d:%d:nimbus function:/tmp:/usr/sbin/nologin\n", uid, uid)
}

// Group is /etc/group of a process running as uid.
func Group(uid int) string {
	return fmt.Sprintf("root:x:0:\nnimbus:x:%d:\n", uid)
}

// Hosts is /etc/hosts: the loopback is all a sandboxed process has.
const Hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"

// Hostname is the uts hostname of a sandboxed process.
const Hostname = "nimbus"
