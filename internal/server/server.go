package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nimbus-dev/nimbus/internal/api"
	"github.com/nimbus-dev/nimbus/internal/apierror"
	"github.com/nimbus-dev/nimbus/internal/audit"
	"github.com/nimbus-dev/nimbus/internal/capability"
	"github.com/nimbus-dev/nimbus/internal/events"
	"github.com/nimbus-dev/nimbus/internal/gateway"
	"github.com/nimbus-dev/nimbus/internal/guestlog"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/policy"
	"github.com/nimbus-dev/nimbus/internal/registry"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/runtime/process"
	"github.com/nimbus-dev/nimbus/internal/runtime/wasm"
	"github.com/nimbus-dev/nimbus/internal/runtime/wasm/hostfn"
	"github.com/nimbus-dev/nimbus/internal/scheduler"
	"github.com/nimbus-dev/nimbus/internal/security"
	"github.com/nimbus-dev/nimbus/internal/security/jwtauth"
	"github.com/nimbus-dev/nimbus/internal/state"
	"github.com/nimbus-dev/nimbus/internal/store"
	"github.com/nimbus-dev/nimbus/internal/telemetry"
	"github.com/nimbus-dev/nimbus/internal/throttle"
	"github.com/nimbus-dev/nimbus/internal/workflow"
	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a node. The zero value of each field is its default.
type Config struct {
	// DataDir holds the JetStream store and the compilation cache. Required.
	DataDir string
	// Listen is the gateway address. Default 127.0.0.1:8080; port 0 picks one.
	Listen string
	// APIListen is the control plane address. Default 127.0.0.1:8081.
	APIListen string
	// NATSListen opens a NATS client listener on the embedded server;
	// clients authenticate with the NKey seed in NATSSeedFile. Default
	// none: the embedded server is reachable only in process.
	NATSListen string
	// DiskReserve is the free space on the data directory's filesystem
	// below which the store refuses writes (store.Options.DiskReserve;
	// 0: store.DefaultDiskReserve, negative: none).
	DiskReserve int64
	// CacheDir holds compiled wasm across restarts. Default DataDir/wasm-cache.
	CacheDir string
	// IdleTimeout closes idle instances. Default 5m.
	IdleTimeout time.Duration
	// WasmIdleModules is how many wasm artifacts with no instance stay
	// compiled; the others are reloaded from the store at their next
	// instance (wasm.Config.IdleModules). Optional: default 1024.
	WasmIdleModules int
	// WasmIdleModuleBytes bounds the artifact bytes of those idle modules
	// (wasm.Config.IdleModuleBytes). Optional: default 64 MiB.
	WasmIdleModuleBytes int64
	// AsyncMaxAttempts and AsyncBackoff are the retry policy of async
	// invocations (see events.TriggerSpec). Default 5 attempts, 1s first
	// backoff.
	AsyncMaxAttempts int
	AsyncBackoff     time.Duration
	// EventsDuplicateWindow is how long an event's source and id are
	// remembered, so that the same event published again is stored once;
	// the server holds every id of the window in memory. Default 2m.
	EventsDuplicateWindow time.Duration
	// EventsMaxLag bounds, per app, the events waiting for delivery to its
	// triggers beyond which publishes are refused (429 events_backlog).
	// Default 100,000; negative: no limit.
	EventsMaxLag int
	// EventsMaxWindowEvents bounds the events this node stored within the
	// duplicate window beyond which publishes are refused (503
	// events_overloaded). Default 1,000,000; negative: no limit.
	EventsMaxWindowEvents int
	// BodyBudget is the most bytes of request bodies (function
	// invocations, events, KV values) the node holds in memory at once;
	// a body past it is refused with 503 body_budget and Retry-After.
	// Bodies over 64 KiB may use seven eighths of it, keeping the rest
	// for small requests. Default 256 MiB.
	BodyBudget int64
	// AppBodyBudget is the most one app's request bodies hold at once.
	// Default BodyBudget/2.
	AppBodyBudget int64
	// MaxWaiting is the most edge invocations (HTTP routes, the invoke
	// API) that wait at once for an instance or a flow control permit, or
	// workflow starts that wait for their result, node-wide; half of it
	// per app. One more invocation is refused at once with 503 busy and
	// Retry-After; one more start does not wait (it answers the run's id).
	// Default throttle.DefaultMaxWaiting (4096); negative: no bound.
	MaxWaiting int
	// MaxActiveRuns is the most active workflow runs of one app (running,
	// or queued for an instance or their flow) that starts from outside
	// may make: past it a route's or the API's start is refused with 503
	// busy and Retry-After, and a trigger's start waits (its event stays
	// in the log). Default workflow.DefaultMaxActivePerApp (2048);
	// negative: no bound.
	MaxActiveRuns int
	// BodyRate is how fast request bodies must arrive on both listeners:
	// within BodyRate.Grace (default 10s) plus their size at
	// BodyRate.MinRate (default 16 KiB/s), else 408 body_too_slow and the
	// connection is closed.
	BodyRate throttle.BodyRate
	// EgressAllowCIDRs are internal ranges functions' outbound HTTP may
	// reach (see capability.NetGuard); the node's own listening addresses
	// stay refused. Default none: the public Internet only.
	EgressAllowCIDRs []netip.Prefix
	// EgressResolver resolves the names functions fetch. Default the
	// system's.
	EgressResolver *net.Resolver
	// MasterKey is the master key of the apps' secrets (32 bytes; the CLI
	// reads it from NIMBUS_MASTER_KEY). Default: MasterKeyFile.
	MasterKey []byte
	// MasterKeyFile holds the master key; created (0600) the first time a
	// secret is set if it does not exist. Default
	// $XDG_CONFIG_HOME/nimbus/master.key (~/.config/nimbus/master.key):
	// outside the data directory, so a copy of the data is not a copy of
	// the secrets.
	MasterKeyFile string
	// MasterKeyPreviousFiles hold master keys being retired: at start, the
	// data keys they wrap are rewrapped with the current one.
	MasterKeyPreviousFiles []string
	// Policy is the operator's rules and quotas (`nimbus up --policy
	// FILE`, policy.Load): every deploy and rollback must pass its rules
	// and its tenant's count quotas; requests and key-value puts are held
	// to the tenant's rate and storage quotas. Default nil: no rules, no
	// quotas.
	Policy *policy.Policy
	// Version is reported by the API.
	Version string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Server is a running node.
type Server struct {
	cfg     Config
	logger  *slog.Logger
	store   *store.Store
	rts     runtime.Set // the runtimes this node runs, by name
	sched   *scheduler.Scheduler
	gw      *gateway.Gateway
	reg     *registry.Registry
	tokens  *security.Tokens
	secrets *security.Secrets
	audit   *audit.Log
	denials *auditDenials     // function denials -> audit
	admit   *admission        // the operator's policy and quotas
	waiting *throttle.Waiting // edge requests waiting (--max-waiting); nil: no bound
	caps    *capability.Services
	buckets *state.Buckets
	events  *events.Log
	ingress *events.Ingress // back-pressure of publishes
	deliver *events.Dispatcher
	cron    *events.CronSource
	kvtrig  *events.BucketSource // bucket changes -> events
	wf      *workflow.Engine
	logs    *guestlog.Writer
	metrics *telemetry.Metrics

	gatewayLn, apiLn net.Listener
	gatewaySrv       *http.Server
	apiSrv           *http.Server
	local            *localSocket // token endpoints for the data directory's owner; nil if it could not open

	adminToken string

	// components are what a revision is provisioned into, in order (see
	// Component); active is one of them.
	components []namedComponent
	active     *activeSet
	deployMu   sync.Mutex // one deploy, rollback or delete at a time keeps the components in step
	cancel     context.CancelFunc
	wg         sync.WaitGroup

	// routeDenied counts route-auth refusals and writes a summary per
	// window to the audit log.
	routeDenied *routeDenials
}

var (
	_ api.Platform         = (*Server)(nil)
	_ capability.Publisher = (*Server)(nil)
	_ api.SecretsPlatform  = (*Server)(nil)
)

// Secrets returns the apps' secrets (the API's /secrets endpoints).
func (s *Server) Secrets() api.SecretStore { return s.secrets }

// Start opens the store, restores every active revision and starts serving.
// On the first start of a data directory it creates the admin token
// (AdminToken).
func Start(ctx context.Context, cfg Config) (_ *Server, err error) {
	if cfg.DataDir == "" {
		return nil, errors.New("server: DataDir is required")
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:8080"
	}
	if cfg.APIListen == "" {
		cfg.APIListen = "127.0.0.1:8081"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.CacheDir == "" {
		cfg.CacheDir = filepath.Join(cfg.DataDir, "wasm-cache")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	s := &Server{cfg: cfg, logger: cfg.Logger, metrics: telemetry.NewMetrics(), active: newActiveSet()}
	defer func() {
		if err != nil {
			s.Close(context.Background())
		}
	}()

	s.store, err = store.Open(ctx, store.Options{DataDir: cfg.DataDir, Listen: cfg.NATSListen, Logger: cfg.Logger, DiskReserve: cfg.DiskReserve})
	if err != nil {
		return nil, err
	}
	s.buckets = state.New(s.store.Committer(), cfg.Logger)
	// The engine activates runs through the scheduler, made below.
	s.wf = workflow.New(s.store.Committer(), invokerFunc(func(ctx context.Context, app, fn string, req *runtime.Request) (*runtime.Response, error) {
		resp, err := s.sched.Invoke(ctx, app, fn, req)
		if errors.Is(err, scheduler.ErrNotFound) {
			err = fmt.Errorf("%w: %w", workflow.ErrFunctionNotFound, err)
		}
		return resp, err
	}), workflow.Options{Logger: cfg.Logger, Observer: newWorkflowMetrics(s), Revisions: workflowRevisions{s}, Topics: workflowTopics{s}, Effects: wfEffects{s.buckets, s}, Logs: wfLogs{s},
		MaxActivePerApp: cfg.MaxActiveRuns})
	if cfg.MasterKeyFile == "" && cfg.MasterKey == nil {
		if dir, err := os.UserConfigDir(); err == nil {
			cfg.MasterKeyFile = filepath.Join(dir, "nimbus", "master.key")
		}
	}
	s.secrets = security.NewSecrets(s.store.Security(), security.NewMasterKeys(security.MasterKeyConfig{
		Key: cfg.MasterKey, File: cfg.MasterKeyFile, PreviousFiles: cfg.MasterKeyPreviousFiles}))
	if len(cfg.MasterKeyPreviousFiles) > 0 {
		n, err := s.secrets.Rewrap(ctx)
		if err != nil {
			return nil, fmt.Errorf("rewrap secrets with the new master key: %w", err)
		}
		cfg.Logger.Info("secrets: data keys rewrapped with the current master key; the previous key files may now be removed", "rewrapped", n)
	}
	s.audit, err = audit.Open(ctx, s.store.Committer())
	if err != nil {
		return nil, err
	}
	s.denials = newAuditDenials(s, s.audit)
	s.admit = newAdmission(s, cfg.Policy)
	// One set of capability services for every runtime: the wasm host
	// functions and the processes' platform API check the same grants.
	s.caps = capability.New(capability.Config{Logger: cfg.Logger, KV: quotaKV{s.buckets, s.admit}, Publisher: s, Workflows: s.wf, Secrets: s.secrets, OnDenied: s.denials.OnDenied,
		Registerer: s.metrics.Registry(), Egress: capability.EgressConfig{AllowCIDRs: cfg.EgressAllowCIDRs, Resolver: cfg.EgressResolver}})
	s.rts = runtime.Set{}
	wasmRT, err := wasm.New(ctx, wasm.Config{CacheDir: cfg.CacheDir, Logger: cfg.Logger, Artifacts: s.store, IdleModules: cfg.WasmIdleModules, IdleModuleBytes: cfg.WasmIdleModuleBytes,
		HostFunctions: hostfn.NewDefaultRegistry(s.caps)})
	if err != nil {
		return nil, fmt.Errorf("wasm runtime: %w", err)
	}
	s.rts[model.RuntimeWasm] = wasmRT
	procRT, err := process.New(process.Config{Dir: filepath.Join(cfg.DataDir, "process"), Logger: cfg.Logger, Services: s.caps})
	if err != nil {
		return nil, fmt.Errorf("process runtime: %w", err)
	}
	s.rts[model.RuntimeProcess] = procRT
	if host := procRT.Host(); !host.Sandbox() {
		cfg.Logger.Warn("process runtime: this host cannot sandbox processes; a process function runs only if its manifest sets isolation: none",
			"missing", strings.Join(host.Missing, "; "))
	}
	s.logs = guestlog.New(s.store.JetStream(), guestlog.Config{Logger: cfg.Logger, Metrics: s.metrics, CheckSpace: s.store.CheckSpace})
	var waiting *throttle.Waiting
	if cfg.MaxWaiting >= 0 {
		waiting = throttle.NewWaiting(cfg.MaxWaiting)
	}
	s.waiting = waiting
	s.sched = scheduler.New(s.rts, s.store, scheduler.Options{
		IdleTimeout: cfg.IdleTimeout, Logger: cfg.Logger, Metrics: s.metrics, Logs: s.logs,
		Status:  apierror.Status, // metrics label failures with the status the edge answers
		Waiting: waiting,
	})
	s.events, err = events.OpenLog(ctx, s.store.JetStream(), events.LogConfig{Logger: cfg.Logger, Committer: s.store.Committer(),
		DuplicateWindow: cfg.EventsDuplicateWindow})
	if err != nil {
		return nil, fmt.Errorf("event log: %w", err)
	}
	s.deliver = events.NewDispatcher(s.store.JetStream(), s.events, triggerStarts{s.sched, s.wf}, events.DispatcherOptions{Logger: cfg.Logger,
		AsyncMaxAttempts: cfg.AsyncMaxAttempts, AsyncBackoff: cfg.AsyncBackoff, DuplicateWindow: s.events.DuplicateWindow()})
	s.ingress = events.NewIngress(s.events, s.deliver, events.IngressOptions{Logger: cfg.Logger,
		MaxLag: cfg.EventsMaxLag, MaxWindowEvents: cfg.EventsMaxWindowEvents})
	s.metrics.Registry().MustRegister(newEventsCollector(s), newStorageCollector(s),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "nimbus_requests_waiting",
			Help: "HTTP requests (routes, the invoke API, workflow starts) waiting now for a busy function's instance or flow permit, or for a run's result; at --max-waiting more are refused with 503 busy (a workflow start gets its run id at once instead)."},
			func() float64 { n, _ := waiting.Count(""); return float64(n) }))
	s.cron = events.NewCronSource(s.store.JetStream(), s.events, events.CronOptions{Logger: cfg.Logger})
	s.kvtrig = events.NewBucketSource(s.store.JetStream(), s.events, events.BucketOptions{Logger: cfg.Logger})
	s.gw = gateway.New(rateLimited{s.admit, workflowRoutes{s.sched, s}}, cfg.Logger)
	s.gw.SetEvents(s)
	s.gw.SetAsync(s)
	s.gw.SetMetrics(s.metrics) // a 413 answered at the gateway counts like one from the scheduler
	// What a revision is provisioned into, in dependency order (see
	// Component). A new trigger kind, engine or runtime registers here.
	s.components = []namedComponent{
		{"admission", s.admit},
		{"buckets", s.buckets},
		{"scheduler", s.sched},
		{"active", s.active},
		{"workflows", s.wf},
		{"gateway", s.gw},
		{"dispatcher", s.deliver},
		{"cron", s.cron},
		{"bucket-triggers", s.kvtrig},
	}
	s.reg = registry.New(s.store.Registry(), s.store)
	// A deploy meets the gateway's Validate first, under deployMu; its
	// indexed check of the routes against every other app's stands in for
	// the registry's, which reads every app from the bucket per deploy.
	s.reg.SetRouteCheck(s.gw.Validate)
	s.tokens = security.NewTokens(s.store.Security())
	// Routes with auth: keys of the app's tenant, JWTs whose keys are
	// fetched through the egress guard. Set before restore provisions.
	s.gw.SetAuth(&routeKeys{tokens: s.tokens, reg: s.reg}, jwtauth.Options{Client: jwksClient(s.caps.Fetch.Guard())})
	s.routeDenied = newRouteDenials(s, s.audit)
	s.gw.SetAuthDenials(s.routeDenied.OnAuthDenied)

	token, created, err := s.tokens.EnsureAdmin(ctx)
	if err != nil {
		return nil, fmt.Errorf("admin token: %w", err)
	}
	if created {
		s.adminToken = token
	}
	if err := s.restore(ctx); err != nil {
		return nil, err
	}

	s.gatewayLn, err = net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("gateway listener (--listen %s): %w", cfg.Listen, err)
	}
	s.apiLn, err = net.Listen("tcp", cfg.APIListen)
	if err != nil {
		return nil, fmt.Errorf("API listener (--api-listen %s): %w", cfg.APIListen, err)
	}
	// Functions may not call the node itself, whatever range is allowed.
	for _, ln := range []net.Listener{s.gatewayLn, s.apiLn} {
		if ap, err := netip.ParseAddrPort(ln.Addr().String()); err == nil {
			s.caps.Fetch.Guard().Protect(ap)
		}
	}
	if cfg.NATSListen != "" {
		if ap, err := netip.ParseAddrPort(cfg.NATSListen); err == nil {
			s.caps.Fetch.Guard().Protect(ap)
		}
	}
	// Both listeners read bodies under one budget and one rate, so no
	// number of clients, however slow, holds more than the budget in
	// memory (docs/functions.md, "Limits").
	bodies := &gateway.Bodies{Budget: throttle.NewBudget(throttle.BudgetConfig{Node: cfg.BodyBudget, App: cfg.AppBodyBudget}), Rate: cfg.BodyRate}
	s.gatewaySrv = newHTTPServer(bodies.Handler(s.gw), cfg.Logger)
	s.apiSrv = newHTTPServer(bodies.Handler(api.Handler(s, s.tokens, s.metrics, cfg.Version, cfg.Logger)), cfg.Logger)

	local, lerr := openLocal(cfg.DataDir, api.LocalHandler(s.tokens, api.LocalInfo{APIURL: s.APIURL(), Version: cfg.Version}, s.audit), cfg.Logger)
	if lerr != nil {
		cfg.Logger.Warn("no local socket: `nimbus token create --data` needs this node stopped", "error", lerr)
	}
	s.local = local

	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.startLocal(runCtx)
	s.wg.Add(3)
	go func() { defer s.wg.Done(); s.sched.Run(runCtx) }()
	go func() { defer s.wg.Done(); s.serve(s.gatewaySrv, s.gatewayLn, "gateway") }()
	go func() { defer s.wg.Done(); s.serve(s.apiSrv, s.apiLn, "api") }()
	return s, nil
}

// Limits of the connections of both listeners (bodies are Bodies'). A
// read timeout of the whole request is left off: it would cut large
// bodies on slow links that keep to the minimum rate.
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute // a keep-alive connection between requests
	maxHeaderBytes    = 64 << 10
)

func newHTTPServer(h http.Handler, logger *slog.Logger) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: readHeaderTimeout, IdleTimeout: idleTimeout,
		MaxHeaderBytes: maxHeaderBytes, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
}

func (s *Server) serve(srv *http.Server, ln net.Listener, name string) {
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.logger.Error("listener stopped", "listener", name, "error", err)
	}
}

// restore provisions the active revision of every app in the registry. A
// stored app that cannot be read, or that a component refuses, is logged
// and skipped at that component: the node serves what it can rather than
// not start.
func (s *Server) restore(ctx context.Context) error {
	apps, err := s.reg.Apps(ctx)
	if err != nil {
		return fmt.Errorf("read registry: %w", err)
	}
	for _, app := range apps {
		if app.Active == "" {
			continue
		}
		rev, err := s.reg.Revision(ctx, app.Name, app.Active)
		if err != nil {
			s.logger.Error("restore app failed", "app", app.Name, "revision", app.Active, "error", err)
			continue
		}
		if err := s.provision(ctx, rev); err != nil {
			// One broken app must not keep the others down.
			s.logger.Error("restore app failed", "app", app.Name, "revision", rev.ID, "error", err)
		}
	}
	return nil
}

// activeRevision is app's active revision, or nil.
func (s *Server) activeRevision(app string) *model.Revision { return s.active.get(app) }

// GatewayURL is where functions are served.
func (s *Server) GatewayURL() string { return "http://" + s.gatewayLn.Addr().String() }

// APIURL is where the control plane is served.
func (s *Server) APIURL() string { return "http://" + s.apiLn.Addr().String() }

// AdminToken is the admin token created by this start, or "" if the data
// directory already had one.
func (s *Server) AdminToken() string { return s.adminToken }

// NATSURL is the embedded NATS listener's URL, or "".
func (s *Server) NATSURL() string { return s.store.ClientURL() }

// NATSSeedFile is the NKey seed file external NATS clients authenticate
// with at NATSURL, or "" when there is no listener.
func (s *Server) NATSSeedFile() string { return s.store.ClientSeedFile() }

// Metrics are the node's metrics.
func (s *Server) Metrics() *telemetry.Metrics { return s.metrics }

// Tokens manages API tokens.
func (s *Server) Tokens() *security.Tokens { return s.tokens }

// Close stops listening, waits for in-flight requests (bounded by ctx),
// then closes instances, flushes logs and shuts the store down.
func (s *Server) Close(ctx context.Context) error {
	var errs []error
	for _, srv := range []*http.Server{s.gatewaySrv, s.apiSrv} {
		if srv != nil {
			if err := srv.Shutdown(ctx); err != nil {
				errs = append(errs, err)
				srv.Close()
			}
		}
	}
	if s.local != nil {
		if err := s.local.close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	for _, ln := range []net.Listener{s.gatewayLn, s.apiLn} {
		if ln != nil {
			ln.Close()
		}
	}
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
	if s.caps != nil {
		s.caps.Fetch.CloseIdleConnections()
	}
	if err := s.closeComponents(ctx); err != nil {
		errs = append(errs, err)
	}
	if s.events != nil {
		if err := s.events.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if s.logs != nil {
		if err := s.logs.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if err := s.rts.Close(ctx); err != nil {
		errs = append(errs, err)
	}
	if s.denials != nil {
		s.denials.close() // no guest runs now: record what is queued
	}
	if s.routeDenied != nil {
		s.routeDenied.close() // the gateway is closed: write the last window's counts
	}
	if s.store != nil {
		if err := s.store.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Deploy implements api.Platform: plan the revision, let every component
// validate it (a broken module, an unknown runtime, a route overlapping
// another or the gateway's own, a bad schedule refuse it before anything
// changes), record it, then provision it into every component.
func (s *Server) Deploy(ctx context.Context, app string, spec model.Spec) (*model.Revision, bool, error) {
	s.deployMu.Lock()
	defer s.deployMu.Unlock()
	// A deploy writes records and perhaps modules: refuse it while the
	// store keeps its reserve rather than half-write it.
	if err := s.store.CheckSpace(); err != nil {
		return nil, false, err
	}
	planned, err := Check(app, spec)
	if err != nil {
		return nil, false, err
	}
	if err := s.validate(ctx, planned); err != nil {
		return nil, false, err
	}
	rev, changed, err := s.reg.DeploySpec(ctx, app, spec)
	if err != nil {
		return nil, false, err
	}
	if err := s.provision(ctx, rev); err != nil {
		return nil, false, fmt.Errorf("deploy %s: %w", app, err)
	}
	return rev, changed, nil
}

// Check is what a deploy of spec checks without a node: the model's rules
// (model.PlanSpec; a refusal matches model.ErrInvalid) and the gateway's
// built-in routes (gateway.CheckBuiltins; a *model.ConflictError). Deploy
// runs it first, and `nimbus validate` and the deploy pipeline run it on
// the spec a manifest resolves to (deploy.Check), so they refuse what a
// node would, for the same reason. What needs the node (modules, other
// apps' routes, buckets) is the components' Validate.
func Check(app string, spec model.Spec) (*model.Revision, error) {
	rev, err := model.PlanSpec(app, spec)
	if err != nil {
		return nil, invalidSpec{err}
	}
	if err := gateway.CheckBuiltins(rev); err != nil {
		return nil, err
	}
	return rev, nil
}

// invalidSpec is a spec model.PlanSpec refused. It matches model.ErrInvalid
// whatever its cause (routes of the spec that overlap each other are an
// invalid spec, not a conflict with what is deployed) and says what its
// cause says.
type invalidSpec struct{ err error }

func (e invalidSpec) Error() string   { return e.err.Error() }
func (e invalidSpec) Unwrap() []error { return []error{model.ErrInvalid, e.err} }

// Rollback implements api.Platform: the target revision is validated like
// a deploy (the node or the other apps may have changed since it ran),
// recorded, then provisioned. The registry's refusals are
// *registry.RollbackError.
func (s *Server) Rollback(ctx context.Context, app, revision string) (*model.Revision, error) {
	s.deployMu.Lock()
	defer s.deployMu.Unlock()
	target, err := s.reg.RollbackTarget(ctx, app, revision)
	if err != nil {
		return nil, err
	}
	if err := s.validate(ctx, target); err != nil {
		return nil, err
	}
	rev, err := s.reg.Rollback(ctx, app, target.ID)
	if err != nil {
		return nil, err
	}
	if err := s.provision(ctx, rev); err != nil {
		return rev, fmt.Errorf("rollback %s: %w", app, err)
	}
	return rev, nil
}

// Delete implements api.Platform: the app leaves the registry, then every
// component, last first.
func (s *Server) Delete(ctx context.Context, app string) error {
	s.deployMu.Lock()
	defer s.deployMu.Unlock()
	if err := s.reg.Delete(ctx, app); err != nil {
		return err
	}
	if err := s.retire(ctx, app); err != nil {
		return fmt.Errorf("delete %s: %w", app, err)
	}
	s.ingress.Forget(app)
	return nil
}

// KV implements api.Platform: the node's key-value buckets; a call for an
// app that is not deployed matches registry.ErrAppNotFound.
func (s *Server) KV() api.KV { return appKV{Buckets: s.buckets, s: s} }

// Registry implements api.Platform.
func (s *Server) Registry() *registry.Registry { return s.reg }

// PutArtifact implements api.Platform.
func (s *Server) PutArtifact(ctx context.Context, data []byte) (string, error) {
	return s.store.PutArtifact(ctx, data)
}

// HasArtifact implements api.Platform.
// Storage is the store's disk state: free space, reserve, stopped
// streams (GET /api/v1/status, the nimbus_store_* metrics).
func (s *Server) Storage() api.Storage {
	st := s.store.Storage()
	return api.Storage{Dir: st.Dir, FreeBytes: st.FreeBytes, ReserveBytes: st.ReserveBytes, State: st.State, Message: st.Message, Stopped: st.Stopped}
}

func (s *Server) HasArtifact(ctx context.Context, sha string) (bool, error) {
	return s.store.HasArtifact(ctx, sha)
}

// Invoke implements api.Platform.
func (s *Server) Invoke(ctx context.Context, app, function string, req *runtime.Request) (*runtime.Response, error) {
	if err := s.admit.allowRequest(app); err != nil {
		return nil, err
	}
	return s.sched.InvokeEdge(ctx, app, function, req)
}

// Function implements api.Platform.
func (s *Server) Function(app, name string) (model.Function, bool) {
	return s.sched.Function(app, name)
}

// Instances implements api.Platform.
func (s *Server) Instances(app, name string) (int, int) { return s.sched.Instances(app, name) }

// ReadLogs implements api.Platform.
func (s *Server) ReadLogs(ctx context.Context, q guestlog.Query, fn func(guestlog.Entry) error) error {
	return guestlog.Read(ctx, s.store.JetStream(), q, fn)
}
