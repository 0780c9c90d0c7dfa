package capability

import (
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config configures New. The zero value is usable: log works, kv and
// publish answer ErrUnavailable once the grant is checked.
type Config struct {
	// Logger receives denials and backend failures, with keys app,
	// function, invocation, capability and host_function. Optional:
	// default discards.
	Logger *slog.Logger
	// KV holds the apps' buckets (in the server, a *state.Buckets).
	// Optional: nil makes every kv call fail with ErrUnavailable.
	KV KVStore
	// Publisher appends events to the apps' topics (in the server, the
	// *server.Server). Optional: nil makes every publish fail with
	// ErrUnavailable.
	Publisher Publisher
	// Workflows runs the workflow host calls (in the server, the
	// *workflow.Engine). Optional: nil makes them fail with
	// ErrUnavailable.
	Workflows WorkflowBackend
	// MaxLogBytes caps one log message; longer ones are truncated.
	// Optional: default DefaultMaxLogBytes.
	MaxLogBytes int
	// Egress configures outbound HTTP (fetch) and its network guard.
	// Optional: the zero value is the public Internet, default limits.
	Egress EgressConfig
	// Secrets holds the apps' secrets (in the server, a *secrets.Store).
	// Optional: nil makes every secret read fail with ErrUnavailable.
	Secrets SecretStore
	// Registerer receives the services' metrics. Optional: default none.
	Registerer prometheus.Registerer
	// OnDenied is told of the first denial of each grant in an
	// invocation, and of the first address the network guard blocks for
	// each host (the node's audit log records them). It must not block.
	// Optional.
	OnDenied func(Denial)
}

// Denial is a refusal of a function's call, for the audit log.
type Denial struct {
	App, Function, Invocation string
	// Kind is "capability" (no grant) or "egress" (the network guard).
	Kind string
	// What is the grant missing ("kv:orders", "http:api.example.com") or
	// the host blocked; never a URL's path, a header or a value.
	What string
}

// Services are the capability services of a node. They are immutable and
// safe for concurrent use; one set serves every runtime.
type Services struct {
	Log      *LogService
	KV       *KVService
	Publish  *PublishService
	Workflow *WorkflowService
	Fetch    *FetchService
	Secret   *SecretService
}

// New returns the services configured by cfg.
func New(cfg Config) *Services {
	g := &guard{logger: cfg.Logger, onDenied: cfg.OnDenied}
	if g.logger == nil {
		g.logger = slog.New(slog.DiscardHandler)
	}
	maxLog := cfg.MaxLogBytes
	if maxLog <= 0 {
		maxLog = DefaultMaxLogBytes
	}
	fx, _ := cfg.Workflows.(StepEffects)
	return &Services{
		Log:      &LogService{guard: g, maxBytes: maxLog},
		KV:       &KVService{guard: g, store: cfg.KV, fx: fx},
		Publish:  &PublishService{guard: g, pub: cfg.Publisher, fx: fx},
		Workflow: &WorkflowService{guard: g, backend: cfg.Workflows},
		Fetch:    newFetchService(g, cfg.Egress, cfg.Registerer),
		Secret:   &SecretService{guard: g, store: cfg.Secrets},
	}
}

// guard is where every service checks grants.
type guard struct {
	logger   *slog.Logger
	onDenied func(Denial) // nil: nobody is told

	mu sync.Mutex
	// warned is when the node's log last said that a function was denied
	// a grant, and how many denials it kept quiet since, by app, function
	// and grant (deniedLogKeys at most: a guest naming grants at random
	// only makes the node warn again).
	warned map[[3]string]*deniedLog
}

type deniedLog struct {
	at    time.Time
	quiet int
}

// deniedLogEvery is how often the node's log repeats that a function was
// denied the same grant; each invocation's own log says it every time.
const (
	deniedLogEvery = time.Minute
	deniedLogKeys  = 4096
)

// warnDenied reports whether the node's log should say that function of
// app was denied grant now, and how many such denials it kept quiet since
// it last did.
func (g *guard) warnDenied(app, function, grant string) (bool, int) {
	now := time.Now()
	key := [3]string{app, function, grant}
	g.mu.Lock()
	defer g.mu.Unlock()
	if d, ok := g.warned[key]; ok && now.Sub(d.at) < deniedLogEvery {
		d.quiet++
		return false, 0
	}
	if g.warned == nil || len(g.warned) >= deniedLogKeys {
		g.warned = map[[3]string]*deniedLog{}
	}
	quiet := 0
	if d, ok := g.warned[key]; ok {
		quiet = d.quiet
	}
	g.warned[key] = &deniedLog{at: now}
	return true, quiet
}

func (g *guard) denied(d Denial) {
	if g.onDenied != nil {
		g.onDenied(d)
	}
}

// check is the one place a grant is checked: it returns nil when call may
// do op, which needs need, and a *DeniedError otherwise. The first denial
// of each grant in an invocation writes one warning to the invocation's log
// naming the grant to add; later ones are silent, so a function retrying in
// a loop does not flood it. The node's log says it once a minute per app,
// function and grant, with the count of denials since (a function denied
// on every request would otherwise write a line per request).
func (g *guard) check(call *Caller, op string, need Grant) error {
	if call == nil {
		g.logger.Warn("host function called outside an invocation", "host_function", op, "capability", need.String())
		return &DeniedError{Op: op, Need: need}
	}
	if call.Grants.Allows(need) {
		return nil
	}
	err := &DeniedError{Op: op, Function: call.Function, Need: need}
	if need.Access == AccessReadWrite {
		ro := need
		ro.Access = AccessRead
		err.ReadOnly = call.Grants.Allows(ro)
	}
	if call.first(need.String()) {
		call.log("warn", err.Error())
		if warn, quiet := g.warnDenied(call.App, call.Function, need.String()); warn {
			g.logger.Warn("host function denied", "app", call.App, "function", call.Function, "capability", need.String(),
				"host_function", op, "invocation", call.InvocationID, "denied_since_last_warning", quiet)
		}
		g.denied(Denial{App: call.App, Function: call.Function, Invocation: call.InvocationID, Kind: "capability", What: need.String()})
	}
	return err
}

// failed logs a backend failure the caller cannot act on; the service
// returns ErrUnavailable for it.
func (g *guard) failed(call *Caller, msg, op string, err error, attrs ...any) {
	args := append([]any{"app", call.App, "function", call.Function, "invocation", call.InvocationID, "host_function", op}, attrs...)
	g.logger.Warn(msg, append(args, "err", err)...)
}
