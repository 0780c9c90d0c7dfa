package api

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nimbus-dev/nimbus/internal/apierror"
	"github.com/nimbus-dev/nimbus/internal/audit"
	"github.com/nimbus-dev/nimbus/internal/gateway"
	"github.com/nimbus-dev/nimbus/internal/guestlog"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/registry"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/security"
	"github.com/nimbus-dev/nimbus/internal/telemetry"
)

// Platform is what the API drives. Package server implements it.
type Platform interface {
	// Deploy makes spec the active revision of app, or reports that it
	// already is (changed=false).
	Deploy(ctx context.Context, app string, spec model.Spec) (rev *model.Revision, changed bool, err error)
	Rollback(ctx context.Context, app, revision string) (*model.Revision, error)
	Delete(ctx context.Context, app string) error
	Registry() *registry.Registry
	PutArtifact(ctx context.Context, data []byte) (string, error)
	HasArtifact(ctx context.Context, sha string) (bool, error)
	Invoke(ctx context.Context, app, function string, req *runtime.Request) (*runtime.Response, error)
	Function(app, name string) (model.Function, bool)
	Instances(app, name string) (idle, busy int)
	ReadLogs(ctx context.Context, q guestlog.Query, fn func(guestlog.Entry) error) error
	KV() KV
	DeadLetterQueue
	gateway.EventSink
	Async
	Workflows
}

// Authenticator checks tokens; *security.Tokens implements it.
type Authenticator interface {
	Verify(ctx context.Context, token string) (*security.Identity, error)
}

// MaxArtifactBytes caps one uploaded artifact.
const MaxArtifactBytes = 256 << 20

// Handler returns the API handler: /api/v1/... and /metrics. Every route
// says how it keeps tenants apart (Route.Tenancy) and the guard enforces
// it; control-plane calls are recorded in the audit log when p is an
// AuditPlatform.
func Handler(p Platform, auth Authenticator, metrics *telemetry.Metrics, version string, logger *slog.Logger) *Mux {
	if logger == nil {
		logger = slog.Default()
	}
	a := &api{p: p, auth: auth, logger: logger, version: version, started: time.Now(),
		calls: gateway.Invocations{Invoker: p, Async: p, Metrics: metrics, Logger: logger}}
	if ap, ok := p.(AuditPlatform); ok {
		a.audit = ap.Audit()
	}
	m := &Mux{mux: http.NewServeMux()}
	handle := func(pattern string, scope security.Scope, h func(http.ResponseWriter, *http.Request) error) {
		rt := routeOf(pattern, scope)
		m.routes = append(m.routes, rt)
		m.mux.Handle(pattern, a.guard(rt, h))
	}
	handle("GET /api/v1/status", security.ScopeRead, a.status)
	handle("HEAD /api/v1/artifacts/{sha}", security.ScopeDeploy, a.hasArtifact)
	handle("PUT /api/v1/artifacts/{sha}", security.ScopeDeploy, a.putArtifact)
	handle("GET /api/v1/apps", security.ScopeRead, a.listApps)
	handle("GET /api/v1/apps/{app}", security.ScopeRead, a.getApp)
	handle("DELETE /api/v1/apps/{app}", security.ScopeDeploy, a.deleteApp)
	handle("POST /api/v1/apps/{app}/deploy", security.ScopeDeploy, a.deploy)
	handle("GET /api/v1/apps/{app}/revisions", security.ScopeRead, a.revisions)
	handle("POST /api/v1/apps/{app}/rollback", security.ScopeDeploy, a.rollback)
	handle("POST /api/v1/apps/{app}/functions/{function}/invoke", security.ScopeInvoke, a.invoke)
	handle("GET /api/v1/apps/{app}/logs", security.ScopeRead, a.logs)
	a.kvRoutes(handle)
	handle("GET /api/v1/invocations/{id}", security.ScopeRead, a.invocation)
	handle("POST /api/v1/apps/{app}/workflows/{workflow}/runs", security.ScopeInvoke, a.startRun)
	handle("GET /api/v1/apps/{app}/runs", security.ScopeRead, a.listRuns)
	handle("GET /api/v1/apps/{app}/runs/{id}", security.ScopeRead, a.getRun)
	handle("POST /api/v1/apps/{app}/runs/{id}/signals/{name}", security.ScopeInvoke, a.signalRun)
	handle("POST /api/v1/apps/{app}/runs/{id}/cancel", security.ScopeInvoke, a.cancelRun)
	handle("POST /api/v1/apps/{app}/runs/{id}/pause", security.ScopeInvoke, a.pauseRun)
	handle("POST /api/v1/apps/{app}/runs/{id}/resume", security.ScopeInvoke, a.resumeRun)
	handle("POST /api/v1/apps/{app}/runs/{id}/terminate", security.ScopeInvoke, a.terminateRun)
	handle("POST /api/v1/apps/{app}/runs/{id}/retry", security.ScopeInvoke, a.retryRun)
	a.dlqRoutes(handle)
	if tm, ok := auth.(TokenManager); ok {
		tokenRoutes(handle, tm)
	}
	if sp, ok := p.(SecretsPlatform); ok {
		secretRoutes(handle, sp.Secrets())
	}
	if a.audit != nil {
		auditRoutes(handle, a.audit)
	}
	handle("POST /api/v1/apps/{app}/topics/{topic}/events", security.ScopeInvoke, func(w http.ResponseWriter, r *http.Request) error {
		gateway.ServeEvents(w, r, a.p, r.PathValue("app"), r.PathValue("topic"))
		return nil
	})
	m.routes = append(m.routes, routeOf("GET /metrics", ""))
	m.mux.Handle("GET /metrics", metrics.Handler())
	m.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		apierror.Write(w, apierror.New(http.StatusNotFound, "not_found",
			fmt.Sprintf("no API endpoint %s %s; see docs/api.md", r.Method, r.URL.Path)))
	})
	return m
}

type api struct {
	p       Platform
	auth    Authenticator
	audit   AuditLog // nil: nothing is recorded
	logger  *slog.Logger
	version string
	started time.Time
	calls   gateway.Invocations // answers invoke
}

// guard authenticates a call, checks its scope and its tenant (rt.Tenancy),
// runs h acting for the caller's tenant (model.WithTenant), and records
// the call in the audit log when rt is audited.
func (a *api) guard(rt Route, h func(http.ResponseWriter, *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := bearerToken(r.Header.Get("Authorization"))
		if !ok {
			apierror.Write(w, apierror.New(http.StatusUnauthorized, "unauthorized",
				"missing API token: send \"Authorization: Bearer <token>\"; `nimbus up` prints the admin token on first start and saves it for the CLI"))
			return
		}
		id, err := a.auth.Verify(r.Context(), token)
		if err != nil {
			apierror.Write(w, err)
			return
		}
		var note *auditNote
		if rt.Audit != "" && a.audit != nil {
			note = &auditNote{target: auditTarget(r), tenant: id.Tenant}
			defer func() {
				a.record(r.Context(), audit.Entry{Actor: Actor(id), Tenant: note.tenant, Action: rt.Audit,
					Target: note.target, Outcome: note.outcome, Detail: note.detail})
			}()
		}
		deny := func(err error) {
			if note != nil {
				note.outcome, note.detail = audit.OutcomeDenied, apierror.From(err).Code
			}
			apierror.Write(w, err)
		}
		if !id.Allows(rt.Scope) {
			w.Header().Set(HeaderRequiredScope, string(rt.Scope))
			deny(apierror.New(http.StatusForbidden, "forbidden",
				fmt.Sprintf("token %q lacks the %q scope needed for %s %s (an admin can create one: `nimbus token create NAME --scope %s`)", id.Name, rt.Scope, r.Method, r.URL.Path, rt.Scope)))
			return
		}
		tenant, err := a.tenantOfTarget(r.Context(), rt, id, r)
		if note != nil && tenant != "" {
			note.tenant = tenant
		}
		if err != nil {
			if apierror.Status(err) == http.StatusForbidden {
				deny(err)
				return
			}
			if note != nil {
				note.outcome, note.detail = audit.OutcomeFailed, apierror.From(err).Code
			}
			apierror.Write(w, err)
			return
		}
		ctx := model.WithTenant(withIdentity(r.Context(), id), id.Tenant)
		if note != nil {
			ctx = context.WithValue(ctx, auditNoteKey{}, note)
		}
		r = r.WithContext(ctx)
		sw := &statusWriter{ResponseWriter: w}
		err = h(sw, r)
		if err != nil {
			if apierror.Status(err) >= 500 {
				a.logger.Error("api call failed", "method", r.Method, "path", r.URL.Path, "error", err)
			}
			apierror.Write(sw, err)
		}
		if note != nil {
			note.outcome = outcomeOf(sw.status)
			if err != nil {
				note.detail = auditDetail(err)
			}
		}
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// MaxJSONBytes caps the JSON body of an API call (a deploy's spec, a
// rollback, a token request, a dead-letter replay).
const MaxJSONBytes = 8 << 20

// decodeJSON decodes the request's JSON body into v. A body over
// MaxJSONBytes is a 413 naming the limit (at once when its Content-Length
// says so); a body the edge cut (too slow) is answered as that; anything
// else wrong is a 400 with the decoder's reason.
func decodeJSON(r *http.Request, v any) error {
	if r.ContentLength > MaxJSONBytes {
		return jsonTooLarge(r)
	}
	lr := &io.LimitedReader{R: r.Body, N: MaxJSONBytes + 1}
	dec := json.NewDecoder(lr)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if lr.N == 0 {
		// It read a byte past the limit: the body is over it, whatever
		// the decoder made of the part it saw.
		return jsonTooLarge(r)
	}
	if berr := gateway.BodyError(r); berr != nil {
		return berr
	}
	if err != nil {
		return apierror.New(http.StatusBadRequest, "bad_request", "request body is not valid JSON for this endpoint: "+err.Error())
	}
	return nil
}

// jsonTooLarge is the answer to a JSON body over MaxJSONBytes.
func jsonTooLarge(r *http.Request) error {
	return apierror.New(http.StatusRequestEntityTooLarge, "request_too_large",
		fmt.Sprintf("request body is larger than %s, the most %s %s accepts; a deploy carries only the spec (modules go up separately, PUT /api/v1/artifacts/{sha256}), so check what the body holds",
			model.FormatBytes(MaxJSONBytes), r.Method, r.URL.Path))
}

// Status is the answer of GET /api/v1/status.
type Status struct {
	Version string `json:"version"`
	Uptime  string `json:"uptime"`
	Apps    int    `json:"apps"`
	// Storage is the node's disk state, for node-wide callers only (a
	// tenant's key does not see the node's internals).
	Storage *Storage `json:"storage,omitempty"`
}

// Storage is the state of the node's store on its disk.
type Storage struct {
	Dir          string   `json:"dir"`
	FreeBytes    uint64   `json:"free_bytes"`
	ReserveBytes uint64   `json:"reserve_bytes"` // below it, writes get 507 disk_full
	State        string   `json:"state"`         // ok, disk_full or stopped
	Message      string   `json:"message,omitempty"`
	Stopped      []string `json:"stopped_streams,omitempty"` // streams that take no write until a restart
}

// StoragePlatform is a Platform that reports its store's disk state.
type StoragePlatform interface {
	Storage() Storage
}

func (a *api) status(w http.ResponseWriter, r *http.Request) error {
	apps, err := a.reachableApps(r.Context())
	if err != nil {
		return err
	}
	st := Status{Version: a.version, Uptime: time.Since(a.started).Round(time.Second).String(), Apps: len(apps)}
	if sp, ok := a.p.(StoragePlatform); ok {
		if id := identity(r.Context()); id == nil || id.NodeWide() {
			s := sp.Storage()
			st.Storage = &s
		}
	}
	return writeJSON(w, http.StatusOK, st)
}

func validSHA(sha string) bool {
	if len(sha) != 64 {
		return false
	}
	_, err := hex.DecodeString(sha)
	return err == nil && strings.ToLower(sha) == sha
}

func (a *api) hasArtifact(w http.ResponseWriter, r *http.Request) error {
	sha := r.PathValue("sha")
	if !validSHA(sha) {
		return apierror.New(http.StatusBadRequest, "bad_sha256", "artifact id must be 64 lowercase hex characters (sha256)")
	}
	ok, err := a.p.HasArtifact(r.Context(), sha)
	if err != nil {
		return err
	}
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		return nil
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

// ArtifactInfo is the answer of PUT /api/v1/artifacts/{sha}.
type ArtifactInfo struct {
	SHA256 string `json:"sha256"`
	Size   int    `json:"size"`
}

func (a *api) putArtifact(w http.ResponseWriter, r *http.Request) error {
	sha := r.PathValue("sha")
	if !validSHA(sha) {
		return apierror.New(http.StatusBadRequest, "bad_sha256", "artifact id must be 64 lowercase hex characters (sha256)")
	}
	data, err := gateway.ReadBody(w, r, MaxArtifactBytes)
	if err != nil {
		if errors.Is(err, runtime.ErrRequestTooLarge) {
			return apierror.New(http.StatusRequestEntityTooLarge, "artifact_too_large", fmt.Sprintf("artifact is larger than %d MiB", MaxArtifactBytes>>20))
		}
		return err
	}
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != sha {
		return apierror.New(http.StatusBadRequest, "sha256_mismatch", fmt.Sprintf("uploaded bytes have sha256 %s, not %s: the upload was corrupted or the id is wrong", got, sha))
	}
	if _, err := a.p.PutArtifact(r.Context(), data); err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, ArtifactInfo{SHA256: sha, Size: len(data)})
}

// AppSummary is one row of GET /api/v1/apps.
type AppSummary struct {
	Name string `json:"name"`
	// Tenant owns the app.
	Tenant    string               `json:"tenant"`
	Active    string               `json:"active"`
	UpdatedAt time.Time            `json:"updated_at"`
	Revisions int                  `json:"revisions"`
	Functions []model.Function     `json:"functions"`
	Instances map[string]Instances `json:"instances,omitempty"`
}

// Instances counts a function's live instances.
type Instances struct {
	Idle int `json:"idle"`
	Busy int `json:"busy"`
}

func (a *api) summary(ctx context.Context, app *registry.App) (AppSummary, error) {
	s := AppSummary{Name: app.Name, Tenant: app.TenantName(), Active: app.Active, UpdatedAt: app.UpdatedAt, Instances: map[string]Instances{}}
	revs, err := a.p.Registry().Revisions(ctx, app.Name)
	if err != nil {
		return s, err
	}
	s.Revisions = len(revs)
	if app.Active != "" {
		rev, err := a.p.Registry().Revision(ctx, app.Name, app.Active)
		if err != nil {
			return s, err
		}
		s.Functions = rev.Functions
		for _, fn := range rev.Functions {
			idle, busy := a.p.Instances(app.Name, fn.Name)
			s.Instances[fn.Name] = Instances{Idle: idle, Busy: busy}
		}
	}
	return s, nil
}

// reachableApps lists the apps the caller's key reaches: its tenant's, or
// every app for a node-wide key.
func (a *api) reachableApps(ctx context.Context) ([]*registry.App, error) {
	apps, err := a.p.Registry().Apps(ctx)
	if err != nil {
		return nil, err
	}
	id := identity(ctx)
	out := apps[:0]
	for _, app := range apps {
		if id == nil || id.Reaches(app.Tenant) {
			out = append(out, app)
		}
	}
	return out, nil
}

func (a *api) listApps(w http.ResponseWriter, r *http.Request) error {
	apps, err := a.reachableApps(r.Context())
	if err != nil {
		return err
	}
	out := make([]AppSummary, 0, len(apps))
	for _, app := range apps {
		s, err := a.summary(r.Context(), app)
		if err != nil {
			return err
		}
		out = append(out, s)
	}
	return writeJSON(w, http.StatusOK, out)
}

// AppDetail is the answer of GET /api/v1/apps/{app}.
type AppDetail struct {
	AppSummary
	History []registry.HistoryItem `json:"history"`
}

func (a *api) getApp(w http.ResponseWriter, r *http.Request) error {
	app, err := a.p.Registry().App(r.Context(), r.PathValue("app"))
	if err != nil {
		return err
	}
	s, err := a.summary(r.Context(), app)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, AppDetail{AppSummary: s, History: app.History})
}

func (a *api) deleteApp(w http.ResponseWriter, r *http.Request) error {
	if err := a.p.Delete(r.Context(), r.PathValue("app")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// DeployRequest is the body of POST /api/v1/apps/{app}/deploy: the app's
// functions, topics and buckets.
type DeployRequest = model.Spec

// DeployResult is the answer of deploy and rollback.
type DeployResult struct {
	App      string          `json:"app"`
	Revision *model.Revision `json:"revision"`
	Changed  bool            `json:"changed"`
}

func (a *api) deploy(w http.ResponseWriter, r *http.Request) error {
	var req DeployRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	app := r.PathValue("app")
	rev, changed, err := a.p.Deploy(r.Context(), app, req)
	if err != nil {
		return err
	}
	a.logger.Info("deploy", "app", app, "revision", rev.ID, "changed", changed)
	noteAudit(r.Context(), "", deployDetail(rev.ID, changed), "")
	return writeJSON(w, http.StatusOK, DeployResult{App: app, Revision: rev, Changed: changed})
}

func deployDetail(rev string, changed bool) string {
	if !changed {
		return "revision " + rev + " (already active)"
	}
	return "revision " + rev
}

func (a *api) revisions(w http.ResponseWriter, r *http.Request) error {
	revs, err := a.p.Registry().Revisions(r.Context(), r.PathValue("app"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, revs)
}

// RollbackRequest is the body of POST /api/v1/apps/{app}/rollback.
type RollbackRequest struct {
	// Revision is an id or unique prefix; empty means the previous one.
	Revision string `json:"revision"`
}

func (a *api) rollback(w http.ResponseWriter, r *http.Request) error {
	var req RollbackRequest
	if r.ContentLength != 0 {
		if err := decodeJSON(r, &req); err != nil {
			return err
		}
	}
	app := r.PathValue("app")
	rev, err := a.p.Rollback(r.Context(), app, req.Revision)
	if err != nil {
		return err
	}
	a.logger.Info("rollback", "app", app, "revision", rev.ID)
	noteAudit(r.Context(), "", "revision "+rev.ID, "")
	return writeJSON(w, http.StatusOK, DeployResult{App: app, Revision: rev, Changed: true})
}

// invoke runs a function with the request's body (and its Content-Type),
// as the gateway's routes do: the same Invocations.Serve reads, checks,
// queues or runs it and answers.
func (a *api) invoke(w http.ResponseWriter, r *http.Request) error {
	app, name := r.PathValue("app"), r.PathValue("function")
	fn, ok := a.p.Function(app, name)
	if !ok {
		return apierror.New(http.StatusNotFound, "function_not_found", fmt.Sprintf("no active function %s/%s; `nimbus ls` lists what is deployed", app, name))
	}
	tc := telemetry.Continue(r.Header.Get("traceparent"))
	req := &runtime.Request{
		Method:       http.MethodPost,
		Path:         "/",
		Header:       http.Header{},
		Host:         r.Host,
		RemoteAddr:   r.RemoteAddr,
		InvocationID: telemetry.NewInvocationID(),
		TraceParent:  tc.String(),
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	a.calls.Serve(w, r, app, &fn, req)
	return nil
}

func (a *api) logs(w http.ResponseWriter, r *http.Request) error {
	q := guestlog.Query{App: r.PathValue("app"), Function: r.URL.Query().Get("function"), Run: r.URL.Query().Get("run")}
	if s := r.URL.Query().Get("since"); s != "" {
		t, err := parseSince(s, time.Now())
		if err != nil {
			return apierror.New(http.StatusBadRequest, "bad_since", err.Error())
		}
		q.Since = t
	}
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return apierror.New(http.StatusBadRequest, "bad_limit", "limit must be a non-negative integer")
		}
		q.Limit = n
	}
	q.Follow = r.URL.Query().Get("follow") == "true" || r.URL.Query().Get("follow") == "1"
	if _, err := a.p.Registry().App(r.Context(), q.App); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	if flusher != nil {
		flusher.Flush()
	}
	err := a.p.ReadLogs(r.Context(), q, func(e guestlog.Entry) error {
		if err := enc.Encode(e); err != nil {
			return err
		}
		if q.Follow {
			if err := bw.Flush(); err != nil {
				return err
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		return nil
	})
	bw.Flush()
	if err != nil && !errors.Is(err, context.Canceled) && r.Context().Err() == nil {
		a.logger.Warn("log stream ended", "app", q.App, "error", err)
	}
	return nil
}

// parseSince accepts a duration ("10m": that long ago) or an RFC 3339 time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("since %q is neither a duration (10m, 2h) nor an RFC 3339 time (2026-01-02T15:04:05Z)", s)
}
