package process

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"sync"

	"github.com/nimbus-dev/nimbus/internal/capability"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/runtime/process/sandboxinit"
)

// module is one loaded process function: its unpacked directory and how to
// start it.
type module struct {
	rt                      *Runtime
	app, function, revision string
	dir                     string   // the unpacked function directory, read-only
	argv0                   string   // resolved program
	args                    []string // the command as written; args[0] is argv[0]
	contract                contract
	sandbox                 bool
	limits                  runtime.Limits
	env                     map[string]string
	grants                  capability.Grants
	egress                  bool     // an http grant: sandboxed processes get an egress proxy
	secrets                 []string // secret grants: environment variables of the process
	closeOnce               sync.Once
	mu                      sync.Mutex
	instances               map[*instance]struct{}
	closed                  bool
}

var _ runtime.Module = (*module)(nil)

// Contract implements runtime.Module.
func (m *module) Contract() runtime.Contract { return m.contract.name() }

// Reusable implements runtime.Module: a process serves request after
// request.
func (m *module) Reusable() bool { return true }

// MaxConcurrency implements runtime.Module: a process may serve as many
// requests at once as the function's concurrency allows (the scheduler
// takes the minimum), unless its contract takes fewer (Lambda: one).
func (m *module) MaxConcurrency() int {
	if c, ok := m.contract.(interface{ maxConcurrency() int }); ok {
		return c.maxConcurrency()
	}
	return model.MaxConcurrency
}

// NewInstance implements runtime.Module: it starts the process and waits
// until it is ready (the cold start).
func (m *module) NewInstance(ctx context.Context) (runtime.Instance, error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, fmt.Errorf("%s/%s: module closed", m.app, m.function)
	}
	m.mu.Unlock()
	inst := &instance{m: m}
	if err := inst.start(ctx); err != nil {
		return nil, err
	}
	m.mu.Lock()
	if m.instances == nil {
		m.instances = map[*instance]struct{}{}
	}
	m.instances[inst] = struct{}{}
	m.mu.Unlock()
	return inst, nil
}

// Close implements runtime.Module: it stops every instance still running
// and removes the unpacked directory.
func (m *module) Close(ctx context.Context) error {
	var err error
	m.closeOnce.Do(func() {
		m.mu.Lock()
		m.closed = true
		insts := make([]*instance, 0, len(m.instances))
		for i := range m.instances {
			insts = append(insts, i)
		}
		m.mu.Unlock()
		var wg sync.WaitGroup
		for _, i := range insts {
			wg.Add(1)
			go func() { defer wg.Done(); i.Close(ctx) }()
		}
		wg.Wait()
		m.rt.forget(m)
		err = removeAll(m.dir)
	})
	return err
}

func (m *module) forget(i *instance) {
	m.mu.Lock()
	delete(m.instances, i)
	m.mu.Unlock()
}

// grantsOf reads what of a function's capabilities the process runtime
// acts on at start: whether it has any http grant, and the names of its
// secret grants.
func grantsOf(capabilities []string) (egress bool, secrets []string) {
	for _, c := range capabilities {
		g, err := capability.Parse(c)
		if err != nil {
			continue
		}
		switch g.Kind {
		case capability.KindHTTP:
			egress = true
		case capability.KindSecret:
			secrets = append(secrets, g.Resource)
		}
	}
	return egress, secrets
}

// secretEnv reads the function's granted secrets, as NAME=value, through
// the secret service (the grant is checked there too). A secret that is
// not set is left out, and the node's log says so, by name; values are
// never logged.
func (m *module) secretEnv(ctx context.Context, call *capability.Caller) ([]string, error) {
	var env []string
	for _, name := range m.secrets {
		v, err := m.rt.services.Secret.Get(ctx, call, name)
		switch {
		case errors.Is(err, capability.ErrNotFound):
			m.rt.logger.Warn("process function: a granted secret is not set, so its environment variable is left out",
				"app", m.app, "function", m.function, "secret", name, "fix", "nimbus secret set "+m.app+" "+name)
			continue
		case err != nil:
			return nil, fmt.Errorf("secret %s: %w", name, err)
		}
		env = append(env, name+"="+string(v))
	}
	return env, nil
}

// appDir is where a sandboxed process sees its function's directory.
func (m *module) appDir() string {
	if m.contract.name() == runtime.ContractLambda {
		return LambdaTaskDir
	}
	return AppDir
}

// view is the function's part of the filesystem view of a sandboxed
// process of m (the sandbox has the rest): its directory, its program
// and working directory as it sees them (a program inside the function's
// directory moves with it; one found in Path keeps its system path).
func (m *module) view() sandboxinit.Config {
	path := m.argv0
	if rel, err := filepath.Rel(m.dir, m.argv0); err == nil && filepath.IsLocal(rel) {
		path = filepath.Join(m.appDir(), rel)
	}
	return sandboxinit.Config{
		App: m.dir, AppDir: m.appDir(), Path: path, Args: slices.Clone(m.args), Dir: m.appDir(),
	}
}

// A contract is one protocol between Nimbus and a started process: HTTP on
// $PORT (http.go) or the AWS Lambda Runtime API (lambda.go). The
// instance owns the process (start, readiness, logs, limits, stop); the
// contract only says what to add to its environment, when it is ready and
// how a request reaches it.
type contract interface {
	name() runtime.Contract
	// attach is called once per process, before it starts, with how to
	// reach it; the session it returns lives as long as the process.
	attach(p *proc) (session, error)
}

// session is a contract's side of one running process.
type session interface {
	// env is what the contract adds to the process's environment
	// ("PORT=8080").
	env() []string
	// ready returns once the process can take requests, or with an error
	// when ctx ends first. The instance watches for the process's exit.
	ready(ctx context.Context) error
	// handle forwards one request. It may be called concurrently up to the
	// function's concurrency. The instance maps a process that died during
	// the call to ErrGuestFailed and the deadline to ErrTimeout.
	handle(ctx context.Context, req *runtime.Request, maxResponse int64) (*runtime.Response, error)
	// close releases what attach made; the process has exited.
	close()
}

// dialer connects to an address as the process sees it: in its network
// namespace when it has one.
type dialer func(ctx context.Context, network, addr string) (net.Conn, error)

// errExited is the cause of a request's context when its process exited.
var errExited = errors.New("process exited")
