// Package process is the process runtime: a function is any executable (a
// Python or Node program, a native Go binary) started as a long-lived
// worker and spoken to through a contract (see contract and session in
// module.go). HTTP on $PORT (Cloud Run, Knative; http.go): Nimbus starts
// the command with PORT set, waits until the port accepts (or a readiness
// path answers), and proxies each request to it. The AWS Lambda Runtime
// API (lambda.go): Nimbus serves the API to the process at
// AWS_LAMBDA_RUNTIME_API (in its network namespace when sandboxed), hands
// each request to its long poll as an API Gateway 2.0 event (routes) or the
// raw payload (everything else), one at a time, and maps the answer back.
//
// It sits where the wasm runtime sits:
//
//	gateway -> scheduler -> runtime/process -> the function's process
//
// The artifact is a tar of the function's directory (deploy packs it);
// Load unpacks it read-only in the runtime's directory, one directory per
// loaded revision, and checks the command exists. An instance is one
// process: the scheduler's pool decides how many exist, how many requests
// each takes at once (the function's concurrency) and when idle ones stop.
//
// Guarantees:
//   - The process sees only what the function declares: its env, a
//     minimal PATH, HOME and TMPDIR in a private temp directory (/tmp when
//     sandboxed), and PORT.
//     Nothing of the node's environment.
//   - Sandboxed (the default): new pid, ipc, uts, mount and network
//     namespaces (the network one has only a loopback, which the node
//     reaches by dialing from inside it), a filesystem of its own (its
//     code read-only at /app or /var/task, the system paths read-only, a
//     private size-bounded /tmp, /dev, its own /proc; nothing else of the
//     host: see sandboxinit), its own uid, cgroups (v2, or v1 where the
//     v2 hierarchy lacks the controllers; cgroup_linux.go) capping
//     memory (the function's memory), process count and CPU, rlimits on
//     open files and processes. The uid, cgroups, network namespace and
//     the helper that builds the view are made ahead of time for a few
//     sandboxes (Config.Sandboxes; pool.go), each empty until one start
//     claims it, used by one process only and released with it: a cold
//     start then pays for the function's directory mount, pivot_root,
//     setuid and exec, not for the rest. A host that cannot provide this refuses
//     the function (ErrUnisolated) unless it opts in with isolation: none.
//   - Egress (egress.go): a sandboxed process whose function has an http
//     grant gets an HTTP forward proxy on its namespace's loopback
//     (HTTP_PROXY, HTTPS_PROXY) that lets through only granted hosts, over
//     the fetch service's network guard; without a grant, nothing leaves.
//     Each secret:NAME grant is the environment variable NAME, read at the
//     start; values are never logged.
//   - Platform services (api.go): each process gets its own HTTP endpoint
//     (NIMBUS_API, inside its network namespace when sandboxed) and token
//     (NIMBUS_TOKEN) for KV, publish and log, through the capability
//     services, so its grants are checked exactly as a wasm function's.
//   - A request past the function's timeout kills the process (and
//     everything it started); a process that dies fails the requests in
//     flight with ErrGuestFailed (ErrMemoryLimit when the memory cgroup
//     killed it) and is replaced; one that died while idle is replaced
//     before the next request.
//   - Stop is SIGTERM, a grace period, SIGKILL, to the process group; every
//     process gets SIGKILL when the node dies (parent-death signal), and a
//     sandboxed one takes everything it started with it (pid namespace).
//   - Output lines go to the log of the request in flight when there is
//     exactly one, else to the node's log tagged with the function.
package process
