package process

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nimbus-dev/nimbus/internal/capability"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime"
)

// Path is the PATH every process gets: the node's own PATH is not passed on.
const Path = "/usr/local/bin:/usr/bin:/bin"

// ErrUnisolated means a function asks for the sandbox on a node that cannot
// provide it (no root, no namespaces, no writable cgroups); the message says
// what is missing and how to opt in to running unisolated. Load wraps it
// with runtime.ErrInvalidModule, so the deploy is refused as unrunnable.
var ErrUnisolated = errors.New("this node cannot isolate processes")

// Config configures a Runtime. The zero value of each field is its default.
type Config struct {
	// Dir is where function directories are unpacked, one per loaded
	// revision. Required. When the sandbox is on and unprivileged uids
	// cannot reach Dir (an ancestor is mode 0700, as a data directory is),
	// a private directory under os.TempDir() is used instead.
	Dir string
	// Logger receives runtime diagnostics and the output of processes that
	// serve several requests at once. Default discards.
	Logger *slog.Logger
	// StopGrace is how long a stopping process has between SIGTERM and
	// SIGKILL. Default 2s.
	StopGrace time.Duration
	// MaxProcs caps the processes (and threads) of one sandboxed instance,
	// through the pids cgroup and RLIMIT_NPROC. Default 256.
	MaxProcs int
	// MaxOpenFiles is RLIMIT_NOFILE of every process. Default 1024.
	MaxOpenFiles uint64
	// Host is what isolation the host offers. Default: Probe().
	Host *Host
	// System are the host paths a sandboxed process sees, read-only, at
	// the same path (what interpreters and dynamically linked programs
	// need); nothing else of the host is visible. Default DefaultSystem.
	System []string
	// Services are the capability services processes reach through their
	// platform API (api.go). Default: capability.New with Logger, whose
	// kv and publish answer unavailable.
	Services *capability.Services
	// TmpBytes is the size of a sandboxed process's private /tmp (a tmpfs,
	// whose pages also count against the function's memory). Default
	// 64MiB.
	TmpBytes uint64
	// CPUs is the CPU time a sandboxed process may use, in CPUs (the cpu
	// cgroup's quota over its 100ms period). Default 1; negative: no cap
	// (the process competes for every CPU of the node's cgroup).
	CPUs float64
	// Sandboxes is how many empty sandboxes are kept made ahead of time
	// (uid, cgroups, network namespace, the helper started with the view
	// built but the function's directory), from the first sandboxed
	// function loaded on: a cold start claims one. Each is used once, by
	// one process, never shared. Default 2; negative keeps none (each
	// start makes its own).
	Sandboxes int
}

// DefaultSystem are the host paths a sandboxed process sees by default:
// programs and libraries, TLS roots, the dynamic linker's cache, the
// Debian alternatives links and the time zone. A path the host lacks is
// skipped; a symbolic link (/bin -> usr/bin) is recreated as one.
var DefaultSystem = []string{
	"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
	"/etc/ssl", "/etc/ca-certificates", "/etc/pki", "/etc/ld.so.cache", "/etc/alternatives", "/etc/localtime",
	"/etc/nsswitch.conf", "/etc/mime.types",
}

// Where a sandboxed process sees its function's directory: Lambda's
// LAMBDA_TASK_ROOT, or /app for HTTP on $PORT.
const (
	AppDir        = "/app"
	LambdaTaskDir = "/var/task"
)

// Runtime starts function processes. It is safe for concurrent use.
type Runtime struct {
	cfg      Config
	logger   *slog.Logger
	host     Host
	dir      string // where revisions are unpacked
	tmp      bool   // dir is private to this runtime, removed at Close
	root     string // where a sandbox mounts its root, in its own mount namespace
	uids     *uidPool
	pool     *sandboxPool
	services *capability.Services
	// newCgroups makes a sandbox's cgroups (id, CPU quota); nil: the
	// host's (newInstanceCgroups). Tests set it before the first load.
	newCgroups func(id string, quota int) (instanceCgroups, error)

	mu      sync.Mutex
	modules map[*module]struct{}
}

var _ runtime.Runtime = (*Runtime)(nil)

// New returns a Runtime that unpacks functions under cfg.Dir.
func New(cfg Config) (*Runtime, error) {
	if cfg.Dir == "" {
		return nil, errors.New("process runtime: Dir is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.StopGrace <= 0 {
		cfg.StopGrace = 2 * time.Second
	}
	if cfg.MaxProcs <= 0 {
		cfg.MaxProcs = 256
	}
	if cfg.MaxOpenFiles == 0 {
		cfg.MaxOpenFiles = 1024
	}
	if cfg.System == nil {
		cfg.System = DefaultSystem
	}
	if cfg.TmpBytes == 0 {
		cfg.TmpBytes = 64 << 20
	}
	if cfg.CPUs == 0 {
		cfg.CPUs = 1
	}
	if cfg.Sandboxes == 0 {
		cfg.Sandboxes = 2
	}
	if cfg.Services == nil {
		cfg.Services = capability.New(capability.Config{Logger: cfg.Logger})
	}
	host := Probe()
	if cfg.Host != nil {
		host = *cfg.Host
	}
	r := &Runtime{cfg: cfg, logger: cfg.Logger, host: host, dir: cfg.Dir, uids: newUIDPool(), services: cfg.Services, modules: map[*module]struct{}{}}
	r.pool = newSandboxPool(r, cfg.Sandboxes)
	if err := os.MkdirAll(r.dir, 0o711); err != nil {
		return nil, fmt.Errorf("process runtime: %w", err)
	}
	if host.Sandbox() {
		if err := os.Chmod(r.dir, 0o711); err != nil {
			return nil, fmt.Errorf("process runtime: %w", err)
		}
		if blocked := unreachable(r.dir); blocked != "" {
			// Sandboxed processes run as unprivileged uids, which must reach
			// their own directory (not list it: 0711).
			tmp, err := os.MkdirTemp("", "nimbus-process-")
			if err != nil {
				return nil, fmt.Errorf("process runtime: %w", err)
			}
			if err := os.Chmod(tmp, 0o711); err != nil {
				return nil, fmt.Errorf("process runtime: %w", err)
			}
			r.logger.Info("process runtime: functions unpacked in a private temp directory, since sandboxed uids cannot reach the data directory",
				"dir", tmp, "blocked_by", blocked)
			r.dir, r.tmp = tmp, true
		}
		r.root = filepath.Join(r.dir, "root")
		if err := os.Mkdir(r.root, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("process runtime: %w", err)
		}
	}
	return r, nil
}

// Host reports the isolation this runtime applies.
func (r *Runtime) Host() Host { return r.host }

// Close implements runtime.Runtime: it stops every process and removes the
// unpacked functions.
func (r *Runtime) Close(ctx context.Context) error {
	r.mu.Lock()
	mods := make([]*module, 0, len(r.modules))
	for m := range r.modules {
		mods = append(mods, m)
	}
	r.mu.Unlock()
	var errs []error
	for _, m := range mods {
		errs = append(errs, m.Close(ctx))
	}
	r.pool.close()
	if r.tmp {
		errs = append(errs, removeAll(r.dir))
	}
	return errors.Join(errs...)
}

// Load implements runtime.Runtime: it unpacks the function's directory
// read-only and checks that its command can start.
func (r *Runtime) Load(ctx context.Context, spec runtime.Spec) (runtime.Module, error) {
	invalid := func(format string, args ...any) error {
		return fmt.Errorf("load %s/%s: %w: %s", spec.App, spec.Function, runtime.ErrInvalidModule, fmt.Sprintf(format, args...))
	}
	if !spec.Limits.Complete() {
		return nil, fmt.Errorf("load %s/%s: incomplete limits %+v: every limit must be set (model.Plan fills them)", spec.App, spec.Function, spec.Limits)
	}
	p := spec.Process
	if p == nil || len(p.Command) == 0 {
		return nil, invalid("a process function needs a command")
	}
	for k, v := range spec.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.Contains(v, "\x00") {
			return nil, invalid("environment variable %q: names must be non-empty without '=' or NUL, values without NUL", k)
		}
	}
	var c contract
	switch p.Contract {
	case model.ContractHTTP, "":
		c = httpContract{readiness: p.ReadinessPath}
	case model.ContractLambda:
		c = lambdaContract{}
	default:
		return nil, invalid("contract %q is not supported by this node", p.Contract)
	}
	sandbox := p.Isolation != model.IsolationNone
	if sandbox && !r.host.Sandbox() {
		return nil, fmt.Errorf("load %s/%s: %w (%w): missing %s; set isolation: none on the function to run it unisolated (the node's uid and network, rlimits only)",
			spec.App, spec.Function, ErrUnisolated, runtime.ErrInvalidModule, strings.Join(r.host.Missing, ", "))
	}
	dir, err := r.unpackDir(spec)
	if err != nil {
		return nil, err
	}
	if err := unpack(spec.Artifact, dir); err != nil {
		removeAll(dir)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("load %s/%s: %w", spec.App, spec.Function, ctx.Err())
		}
		return nil, invalid("%v", err)
	}
	argv0, err := resolve(dir, p.Command[0])
	if err != nil {
		removeAll(dir)
		return nil, invalid("%v", err)
	}
	m := &module{
		rt: r, app: spec.App, function: spec.Function, revision: spec.Revision,
		dir: dir, argv0: argv0, args: p.Command, contract: c, sandbox: sandbox,
		limits: spec.Limits, env: spec.Env, grants: capability.NewGrants(spec.Capabilities),
	}
	m.egress, m.secrets = grantsOf(spec.Capabilities)
	r.mu.Lock()
	r.modules[m] = struct{}{}
	r.mu.Unlock()
	if sandbox {
		r.pool.start()
	}
	r.logger.Debug("process function loaded", "app", spec.App, "function", spec.Function, "revision", spec.Revision,
		"dir", dir, "command", strings.Join(p.Command, " "), "sandbox", sandbox)
	return m, nil
}

// unpackDir makes the directory a revision is unpacked in: under r.dir,
// named by the revision and a random suffix, so that one sandboxed
// function cannot guess where another's code is (r.dir is not listable).
func (r *Runtime) unpackDir(spec runtime.Spec) (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	rev := spec.Revision
	if len(rev) > 12 {
		rev = rev[:12]
	}
	dir := filepath.Join(r.dir, spec.App+"-"+spec.Function+"-"+rev+"-"+hex.EncodeToString(b[:]))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", fmt.Errorf("load %s/%s: %w", spec.App, spec.Function, err)
	}
	return dir, nil
}

// sandbox returns a sandbox for one process: a pooled one, else a new one.
func (r *Runtime) sandbox() (*sandbox, error) {
	if sb := r.pool.take(); sb != nil {
		return sb, nil
	}
	return r.makeSandbox()
}

// SandboxesReady waits until the pool of sandboxes made ahead of time is
// full (Config.Sandboxes), or ctx ends: a cold start after it claims a
// pooled sandbox. For benchmarks and tests that measure scale from zero
// after an idle period.
func (r *Runtime) SandboxesReady(ctx context.Context) error { return r.pool.full(ctx) }

// forget drops m from the modules Close stops.
func (r *Runtime) forget(m *module) {
	r.mu.Lock()
	delete(r.modules, m)
	r.mu.Unlock()
}

// resolve finds the program of a command: a path with a '/' is relative
// to the function's directory and must stay inside it; a bare name is
// looked up in Path.
func resolve(dir, name string) (string, error) {
	if strings.Contains(name, "/") {
		rel := filepath.Clean(strings.TrimPrefix(name, "./"))
		if filepath.IsAbs(name) {
			if _, err := os.Stat(name); err != nil {
				return "", fmt.Errorf("command %q: %w", name, err)
			}
			return name, nil
		}
		if !filepath.IsLocal(rel) {
			return "", fmt.Errorf("command %q is outside the function's directory", name)
		}
		path := filepath.Join(dir, rel)
		st, err := os.Stat(path)
		if err != nil {
			return "", fmt.Errorf("command %q is not in the function's directory (is it built, and inside the directory deploy packs?)", name)
		}
		if st.IsDir() || st.Mode()&0o111 == 0 {
			return "", fmt.Errorf("command %q is not an executable file (chmod +x it)", name)
		}
		return path, nil
	}
	for _, d := range filepath.SplitList(Path) {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("command %q is not found in the process's PATH (%s): give a path inside the function's directory (./%s) or install it on the node", name, Path, name)
}

// randomID is 16 random hex digits.
func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// removeAll removes dir even where unpack made it read-only.
func removeAll(dir string) error {
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o755)
		}
		return nil
	})
	return os.RemoveAll(dir)
}
