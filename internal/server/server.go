package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nimbus-dev/nimbus/internal/api"
	"github.com/nimbus-dev/nimbus/internal/apierror"
	"github.com/nimbus-dev/nimbus/internal/capability"
	"github.com/nimbus-dev/nimbus/internal/events"
	"github.com/nimbus-dev/nimbus/internal/gateway"
	"github.com/nimbus-dev/nimbus/internal/guestlog"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/registry"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/runtime/wasm"
	"github.com/nimbus-dev/nimbus/internal/runtime/wasm/hostfn"
	"github.com/nimbus-dev/nimbus/internal/scheduler"
	"github.com/nimbus-dev/nimbus/internal/security"
	"github.com/nimbus-dev/nimbus/internal/state"
	"github.com/nimbus-dev/nimbus/internal/store"
	"github.com/nimbus-dev/nimbus/internal/telemetry"
)

// Config configures a node. The zero value of each field is its default.
type Config struct {
	// DataDir holds the JetStream store and the compilation cache. Required.
	DataDir string
	// Listen is the gateway address. Default 127.0.0.1:8080; port 0 picks one.
	Listen string
	// APIListen is the control plane address. Default 127.0.0.1:8081.
	APIListen string
	// NATSListen opens a NATS client listener on the embedded server. Default
	// none: the embedded server is reachable only in process.
	NATSListen string
	// CacheDir holds compiled wasm across restarts. Default DataDir/wasm-cache.
	CacheDir string
	// IdleTimeout closes idle instances. Default 5m.
	IdleTimeout time.Duration
	// AsyncMaxAttempts and AsyncBackoff are the retry policy of async
	// invocations (see events.TriggerSpec). Default 5 attempts, 1s first
	// backoff.
	AsyncMaxAttempts int
	AsyncBackoff     time.Duration
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
	rt      *wasm.Runtime
	sched   *scheduler.Scheduler
	gw      *gateway.Gateway
	reg     *registry.Registry
	tokens  *security.Tokens
	buckets *state.Buckets
	events  *events.Log
	deliver *events.Dispatcher
	cron    *events.CronSource
	kvtrig  *events.BucketSource // bucket changes -> events
	logs    *guestlog.Writer
	metrics *telemetry.Metrics

	gatewayLn, apiLn net.Listener
	gatewaySrv       *http.Server
	apiSrv           *http.Server

	adminToken string

	deployMu sync.Mutex                 // one activation at a time keeps routes and pools in step
	activeMu sync.RWMutex               // guards active; taken inside deployMu
	active   map[string]*model.Revision // app -> revision taking traffic
	// asyncApps are the apps whose async trigger (events.AsyncTrigger)
	// consumes: they accepted an async invocation. Written holding deployMu
	// and activeMu, so either one is enough to read it.
	asyncApps map[string]bool
	cancel    context.CancelFunc
	wg        sync.WaitGroup
}

var (
	_ api.Platform         = (*Server)(nil)
	_ capability.Publisher = (*Server)(nil)
)

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
	s := &Server{cfg: cfg, logger: cfg.Logger, metrics: telemetry.NewMetrics(), active: map[string]*model.Revision{}, asyncApps: map[string]bool{}}
	defer func() {
		if err != nil {
			s.Close(context.Background())
		}
	}()

	s.store, err = store.Open(ctx, store.Options{DataDir: cfg.DataDir, Listen: cfg.NATSListen, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	s.buckets = state.NewBuckets(s.store.JetStream(), cfg.Logger)
	s.rt, err = wasm.New(ctx, wasm.Config{CacheDir: cfg.CacheDir, Logger: cfg.Logger,
		HostFunctions: hostfn.NewDefaultRegistry(capability.New(capability.Config{Logger: cfg.Logger, KV: s.buckets, Publisher: s}))})
	if err != nil {
		return nil, fmt.Errorf("wasm runtime: %w", err)
	}
	s.logs = guestlog.New(s.store.JetStream(), guestlog.Config{Logger: cfg.Logger, Metrics: s.metrics})
	s.sched = scheduler.New(s.rt, s.store, scheduler.Options{
		IdleTimeout: cfg.IdleTimeout, Logger: cfg.Logger, Metrics: s.metrics, Logs: s.logs,
	})
	s.events, err = events.OpenLog(ctx, s.store.JetStream(), events.LogConfig{Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("event log: %w", err)
	}
	s.deliver = events.NewDispatcher(s.store.JetStream(), s.events, s.sched, events.DispatcherOptions{Logger: cfg.Logger})
	s.metrics.Registry().MustRegister(newEventsCollector(s))
	s.cron = events.NewCronSource(s.store.JetStream(), s.events, events.CronOptions{Logger: cfg.Logger})
	s.kvtrig = events.NewBucketSource(s.store.JetStream(), s.events, events.BucketOptions{Logger: cfg.Logger})
	s.gw = gateway.New(s.sched, cfg.Logger)
	s.gw.SetEvents(s)
	s.gw.SetAsync(s)
	s.reg = registry.New(s.store.Registry(), s.store)
	s.tokens = security.NewTokens(s.store.Security())

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
	s.gatewaySrv = &http.Server{Handler: s.gw, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn)}
	s.apiSrv = &http.Server{Handler: api.Handler(s, s.tokens, s.metrics, cfg.Version, cfg.Logger), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelWarn)}

	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(3)
	go func() { defer s.wg.Done(); s.sched.Run(runCtx) }()
	go func() { defer s.wg.Done(); s.serve(s.gatewaySrv, s.gatewayLn, "gateway") }()
	go func() { defer s.wg.Done(); s.serve(s.apiSrv, s.apiLn, "api") }()
	return s, nil
}

func (s *Server) serve(srv *http.Server, ln net.Listener, name string) {
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.logger.Error("listener stopped", "listener", name, "error", err)
	}
}

// restore activates the active revision of every app in the registry.
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
			return fmt.Errorf("restore %s: %w", app.Name, err)
		}
		if err := s.sched.Activate(ctx, rev); err != nil {
			// One broken app must not keep the others down.
			s.logger.Error("restore app failed", "app", app.Name, "error", err)
			continue
		}
		s.setActive(app.Name, rev)
		if ok, err := s.deliver.HasConsumer(ctx, events.AsyncTrigger(app.Name)); err == nil && ok {
			s.asyncApps[app.Name] = true // its async consumer keeps its queue (not serving yet: no lock)
		}
		if err := s.deliver.Sync(ctx, app.Name, s.triggersOf(rev)); err != nil {
			s.logger.Error("restore triggers failed", "app", app.Name, "error", err)
		}
		if err := s.syncCron(ctx, app.Name, rev); err != nil {
			s.logger.Error("restore cron triggers failed", "app", app.Name, "error", err)
		}
		if err := s.syncBuckets(ctx, app.Name, rev); err != nil {
			s.logger.Error("restore bucket triggers failed", "app", app.Name, "error", err)
		}
	}
	return s.refreshRoutes()
}

// refreshRoutes rebuilds the gateway's table from the active revisions.
// s.deployMu is held (or the server is not serving yet).
func (s *Server) refreshRoutes() error {
	s.activeMu.RLock()
	revs := make([]*model.Revision, 0, len(s.active))
	for _, rev := range s.active {
		revs = append(revs, rev)
	}
	s.activeMu.RUnlock()
	return s.gw.SetRoutes(revs)
}

// setActive records app's active revision (nil: none).
func (s *Server) setActive(app string, rev *model.Revision) {
	s.activeMu.Lock()
	defer s.activeMu.Unlock()
	if rev == nil {
		delete(s.active, app)
		return
	}
	s.active[app] = rev
}

// activeRevision is app's active revision, or nil.
func (s *Server) activeRevision(app string) *model.Revision {
	s.activeMu.RLock()
	defer s.activeMu.RUnlock()
	return s.active[app]
}

// GatewayURL is where functions are served.
func (s *Server) GatewayURL() string { return "http://" + s.gatewayLn.Addr().String() }

// APIURL is where the control plane is served.
func (s *Server) APIURL() string { return "http://" + s.apiLn.Addr().String() }

// AdminToken is the admin token created by this start, or "" if the data
// directory already had one.
func (s *Server) AdminToken() string { return s.adminToken }

// NATSURL is the embedded NATS listener's URL, or "".
func (s *Server) NATSURL() string { return s.store.ClientURL() }

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
	for _, ln := range []net.Listener{s.gatewayLn, s.apiLn} {
		if ln != nil {
			ln.Close()
		}
	}
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
	if s.cron != nil {
		if err := s.cron.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if s.kvtrig != nil {
		if err := s.kvtrig.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if s.deliver != nil {
		if err := s.deliver.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if s.sched != nil {
		s.sched.Close()
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
	if s.rt != nil {
		if err := s.rt.Close(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if s.store != nil {
		if err := s.store.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Deploy implements api.Platform: load every module (rejecting broken ones
// before anything changes), record the revision, activate it, route it.
func (s *Server) Deploy(ctx context.Context, app string, spec model.Spec) (*model.Revision, bool, error) {
	s.deployMu.Lock()
	defer s.deployMu.Unlock()
	planned, err := model.PlanSpec(app, spec)
	if err != nil {
		return nil, false, apierror.Wrap(http.StatusBadRequest, "invalid_revision", err)
	}
	// A schedule that does not parse is refused before anything changes.
	if _, err := cronTriggers(planned); err != nil {
		return nil, false, apierror.Wrap(http.StatusBadRequest, "invalid_revision", err)
	}
	if _, err := bucketTriggers(planned); err != nil {
		return nil, false, apierror.Wrap(http.StatusBadRequest, "invalid_revision", err)
	}
	if err := s.sched.Prepare(ctx, app, planned.Functions); err != nil {
		if errors.Is(err, runtime.ErrInvalidModule) {
			return nil, false, apierror.Wrap(http.StatusUnprocessableEntity, "invalid_module", err)
		}
		if errors.Is(err, store.ErrNotFound) {
			return nil, false, apierror.Wrap(http.StatusBadRequest, "artifact_missing", err)
		}
		return nil, false, err
	}
	// Buckets exist before any function that uses them can run.
	for _, b := range planned.Buckets {
		err := s.buckets.Ensure(ctx, state.BucketConfig{App: app, Name: b.Name,
			MaxValueBytes: int(b.MaxValueBytes), TTL: time.Duration(b.TTLMS) * time.Millisecond, History: b.History})
		if err != nil {
			return nil, false, apierror.Wrap(http.StatusBadRequest, "invalid_bucket", fmt.Errorf("bucket %s: %w", b.Name, err))
		}
	}
	rev, changed, err := s.reg.DeploySpec(ctx, app, spec)
	if err != nil {
		return nil, false, deployError(err)
	}
	if err := s.sched.Activate(ctx, rev); err != nil {
		return nil, false, err
	}
	s.setActive(app, rev)
	if err := s.refreshRoutes(); err != nil {
		return nil, false, err
	}
	if err := s.deliver.Sync(ctx, app, s.triggersOf(rev)); err != nil {
		return nil, false, fmt.Errorf("deploy %s: triggers: %w", app, err)
	}
	if err := s.syncCron(ctx, app, rev); err != nil {
		return nil, false, fmt.Errorf("deploy %s: cron triggers: %w", app, err)
	}
	if err := s.syncBuckets(ctx, app, rev); err != nil {
		return nil, false, fmt.Errorf("deploy %s: bucket triggers: %w", app, err)
	}
	return rev, changed, nil
}

func deployError(err error) error {
	var conflict *model.ConflictError
	switch {
	case errors.As(err, &conflict), errors.Is(err, model.ErrConflict):
		return apierror.Wrap(http.StatusConflict, "route_conflict", err)
	case errors.Is(err, model.ErrInvalid):
		return apierror.Wrap(http.StatusBadRequest, "invalid_revision", err)
	case errors.Is(err, store.ErrNotFound):
		return apierror.Wrap(http.StatusBadRequest, "artifact_missing", err)
	}
	return err
}

// Rollback implements api.Platform.
func (s *Server) Rollback(ctx context.Context, app, revision string) (*model.Revision, error) {
	s.deployMu.Lock()
	defer s.deployMu.Unlock()
	rev, err := s.reg.Rollback(ctx, app, revision)
	if err != nil {
		if errors.Is(err, registry.ErrAppNotFound) || errors.Is(err, registry.ErrRevisionNotFound) {
			return nil, err
		}
		return nil, apierror.Wrap(http.StatusConflict, "rollback_failed", err)
	}
	if err := s.sched.Activate(ctx, rev); err != nil {
		return nil, err
	}
	s.setActive(app, rev)
	if err := s.refreshRoutes(); err != nil {
		return nil, err
	}
	if err := s.deliver.Sync(ctx, app, s.triggersOf(rev)); err != nil {
		return rev, err
	}
	return rev, errors.Join(s.syncCron(ctx, app, rev), s.syncBuckets(ctx, app, rev))
}

// Delete implements api.Platform.
func (s *Server) Delete(ctx context.Context, app string) error {
	s.deployMu.Lock()
	defer s.deployMu.Unlock()
	if err := s.reg.Delete(ctx, app); err != nil {
		return err
	}
	if err := s.cron.Sync(ctx, app, nil); err != nil {
		return err
	}
	if err := s.kvtrig.Sync(ctx, app, nil); err != nil {
		return err
	}
	if err := s.deliver.Sync(ctx, app, nil); err != nil {
		return err
	}
	s.activeMu.Lock()
	delete(s.asyncApps, app)
	s.activeMu.Unlock()
	s.sched.Deactivate(app)
	s.setActive(app, nil)
	return s.refreshRoutes()
}

// KV implements api.Platform: the node's key-value buckets.
func (s *Server) KV() api.KV { return s.buckets }

// Registry implements api.Platform.
func (s *Server) Registry() *registry.Registry { return s.reg }

// PutArtifact implements api.Platform.
func (s *Server) PutArtifact(ctx context.Context, data []byte) (string, error) {
	return s.store.PutArtifact(ctx, data)
}

// HasArtifact implements api.Platform.
func (s *Server) HasArtifact(ctx context.Context, sha string) (bool, error) {
	return s.store.HasArtifact(ctx, sha)
}

// Invoke implements api.Platform.
func (s *Server) Invoke(ctx context.Context, app, function string, req *runtime.Request) (*runtime.Response, error) {
	return s.sched.Invoke(ctx, app, function, req)
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
