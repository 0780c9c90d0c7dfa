// Package sandboxinit is the first code a sandboxed process function runs:
// the node starts its own binary (/proc/self/exe) with argv[0] set to Arg0,
// already inside the new pid, mount, network, ipc and uts namespaces and
// the sandbox's cgroups, and this package's init turns that process into
// the function, in two steps. First, from its argv (Config.Argv), it
// builds the sandbox's filesystem view but the function's directory, and
// waits: the node does this ahead of time, for a pool of empty sandboxes.
// Then, when a start claims the sandbox, it reads the function's part
// (Config.Claim: its directory, program, arguments and environment) from
// ClaimFD, mounts the function's directory, pivots into the view, drops to
// the sandbox's uid and execs the function's command, which keeps pid 1 of
// the namespace.
//
// It is a package of its own, importing nothing of ours, so that its init
// runs before the inits of the heavy packages a node links (NATS,
// Prometheus, the manifest schema): a node pays about a millisecond for
// the re-exec, not the 15 ms its full start takes. It is the one init in
// the codebase with a side effect, as runc's nsenter is, and it acts only
// when argv[0] is Arg0, which nothing but the process runtime sets; every
// binary that links the process runtime (nimbus, its test binaries, bench)
// is thereby its own sandbox helper.
//
// It sits between the node and the function:
//
//	runtime/process (clone into namespaces) -> sandboxinit (mounts; waits for the claim; the function's mount, pivot_root, setuid) -> exec the function
//
// Guarantees, once the function runs:
//   - Its root is a read-only tmpfs holding only: the function's directory
//     read-only at Config.AppDir, the host's system paths read-only
//     (Config.System: /usr, /lib, /etc/ssl and the like, symbolic links
//     recreated as links), a private writable /tmp of Config.TmpBytes,
//     /dev with null, zero, full, random and urandom, a fresh /proc of its
//     own pid namespace, and /etc/passwd, /etc/group, /etc/hosts and
//     /etc/hostname written here. The node's data directory, other
//     functions and every other host file are not mounted at all.
//   - Its environment is Config.Env, sent with the claim; the helper starts
//     with none.
//   - A sandbox is claimed once: the helper reads one claim, to the end of
//     ClaimFD, and a claim that is empty (the node died, or dropped the
//     sandbox unused) ends it before anything of a function is mounted.
//   - It runs as Config.UID (gid the same, no supplementary groups), with
//     no_new_privs (no setuid binary can raise it) and nosuid mounts.
//   - It dies with the node: the parent-death signal, cleared by the uid
//     change, is set again, and the node's end of the liveness pipe (fd 3)
//     is checked after that, so a node that died in between is noticed.
//   - Anything that fails is written to stderr as one line starting with
//     "nimbus sandbox:" and the process exits 127 before running any of
//     the function's code; the node reports that line as the start error.
package sandboxinit
