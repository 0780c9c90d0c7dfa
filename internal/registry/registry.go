package registry

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/nimbus-dev/nimbus/internal/model"
)

// Errors returned by the registry. Callers branch on them with errors.Is and
// map them to API errors at the edge.
var (
	// ErrAppNotFound means no app has this name.
	ErrAppNotFound = errors.New("app not found")
	// ErrRevisionNotFound means the app has no revision with this id or
	// prefix.
	ErrRevisionNotFound = errors.New("revision not found")
	// ErrModuleNotFound means a function names a module that is not in the
	// artifact store: upload it before deploying.
	ErrModuleNotFound = errors.New("module not found in the artifact store")
	// ErrNoPreviousRevision means a rollback without a target found no
	// revision active before the current one.
	ErrNoPreviousRevision = errors.New("no previous revision")
	// ErrFunctionNotFound means an app's active revision has no function
	// of that name (the registry's callers look functions up in it).
	ErrFunctionNotFound = errors.New("function not found")
)

// RollbackError is a rollback that Rollback or RollbackTarget refused or
// could not make: no previous revision (ErrNoPreviousRevision), a malformed
// or ambiguous revision id, a failed read or update of the app. Its message
// is its cause's. A missing app or revision is one too, and still matches
// ErrAppNotFound or ErrRevisionNotFound.
type RollbackError struct{ Err error }

func (e *RollbackError) Error() string { return e.Err.Error() }
func (e *RollbackError) Unwrap() error { return e.Err }

// ArtifactChecker reports whether a module is in the artifact store.
// *store.Store implements it.
type ArtifactChecker interface {
	HasArtifact(ctx context.Context, sha string) (bool, error)
}

// Registry is the catalogue of apps and revisions in a KV bucket. It is safe
// for concurrent use, also across processes sharing the bucket.
//
// Keys: apps.<app> holds the App (the mutable head), revisions.<app>.<id>
// holds a Revision (written once, never changed).
type Registry struct {
	kv        jetstream.KeyValue
	artifacts ArtifactChecker
	now       func() time.Time

	// revs caches decoded revisions by app + "/" + id. Revisions are
	// immutable, so an entry never goes stale; Delete drops an app's
	// entries. Deploy checks every other app's routes, so without it a
	// deploy costs a KV read per deployed app.
	revs sync.Map

	// routeCheck, when set (SetRouteCheck), replaces checkConflicts.
	routeCheck func(context.Context, *model.Revision) error
}

// SetRouteCheck makes check what a deploy runs to refuse routes that
// other apps serve, in place of the registry's own check (every app head
// and active revision read from the bucket, then model.FindConflict over
// every route: a deploy's cost grows with the apps deployed, and 10,000
// deploys cost 10,000 times that). A node passes its gateway's check,
// which is stricter (model.FindOverlap) and indexed, and runs under the
// node's deploy lock, so what it allows is what gets recorded. Call it
// before the first deploy; nil restores the registry's own check.
func (r *Registry) SetRouteCheck(check func(context.Context, *model.Revision) error) {
	r.routeCheck = check
}

// New returns a registry over kv (store.Store.Registry) that checks modules
// against artifacts.
func New(kv jetstream.KeyValue, artifacts ArtifactChecker) *Registry {
	return &Registry{kv: kv, artifacts: artifacts, now: func() time.Time { return time.Now().UTC() }}
}

const (
	appPrefix = "apps."
	revPrefix = "revisions."
	// ownerPrefix keys the tenant a deleted app belonged to: its data
	// (buckets, secrets, logs) outlives the delete, so its name stays with
	// that tenant.
	ownerPrefix = "owners."
	// maxHistory bounds App.History so the head stays well under the NATS
	// max payload (1 MiB) however often an app is deployed: 1000 items are
	// about 130 KiB. The oldest items are dropped first.
	maxHistory = 1000
	// casAttempts bounds the compare-and-set retries on the app head.
	casAttempts = 64
	// minPrefix is the shortest revision id prefix accepted.
	minPrefix = 7
)

func appKey(app string) string     { return appPrefix + app }
func ownerKey(app string) string   { return ownerPrefix + app }
func revKey(app, id string) string { return revPrefix + app + "." + id }

// Deploy makes fns the active revision of app, creating the app if needed.
// It returns the revision and whether anything changed: deploying what is
// already active is a no-op (changed == false). Redeploying an older
// revision activates it again.
func (r *Registry) Deploy(ctx context.Context, app string, fns []model.Function) (*model.Revision, bool, error) {
	return r.DeploySpec(ctx, app, model.Spec{Functions: fns})
}

// DeploySpec is Deploy for a whole app: functions, topics and buckets.
func (r *Registry) DeploySpec(ctx context.Context, app string, spec model.Spec) (*model.Revision, bool, error) {
	rev, err := r.prepare(ctx, app, spec)
	if err != nil {
		return nil, false, fmt.Errorf("deploy %s: %w", app, err)
	}
	head, _, err := r.head(ctx, app)
	if err != nil && !errors.Is(err, ErrAppNotFound) {
		return nil, false, fmt.Errorf("deploy %s: %w", app, err)
	}
	if head == nil {
		// A deleted app's name stays with its tenant (its data does).
		if head, err = r.newHead(ctx, app); err != nil {
			return nil, false, fmt.Errorf("deploy %s: %w", app, err)
		}
	}
	// Refuse before storing anything under another tenant's app;
	// activate checks again under its compare-and-set.
	if err := checkTenant(ctx, head); err != nil {
		return nil, false, fmt.Errorf("deploy %s: %w", app, err)
	}
	if head != nil && head.Active == rev.ID {
		active, err := r.revision(ctx, app, rev.ID)
		if err != nil {
			return nil, false, fmt.Errorf("deploy %s: %w", app, err)
		}
		return active, false, nil
	}
	check := r.routeCheck
	if check == nil {
		check = r.checkConflicts
	}
	if err := check(ctx, rev); err != nil {
		return nil, false, fmt.Errorf("deploy %s: %w", app, err)
	}
	stored, err := r.storeRevision(ctx, rev)
	if err != nil {
		return nil, false, fmt.Errorf("deploy %s: %w", app, err)
	}
	changed, err := r.activate(ctx, app, stored.ID, "deploy", false)
	if err != nil {
		return nil, false, fmt.Errorf("deploy %s: %w", app, err)
	}
	return stored, changed, nil
}

// prepare plans the revision and checks that its modules are stored.
func (r *Registry) prepare(ctx context.Context, app string, spec model.Spec) (*model.Revision, error) {
	rev, err := model.PlanSpec(app, spec)
	if err != nil {
		return nil, err
	}
	for _, f := range rev.Functions {
		ok, err := r.artifacts.HasArtifact(ctx, f.Module)
		if err != nil {
			return nil, fmt.Errorf("function %s: check module %s: %w", f.Name, f.Module, err)
		}
		if !ok {
			return nil, fmt.Errorf("function %s: module %s: %w", f.Name, f.Module, ErrModuleNotFound)
		}
	}
	rev.CreatedAt = r.now()
	return rev, nil
}

// storeRevision writes rev unless a revision with its id exists, in which
// case the stored one (with its original CreatedAt) is returned.
func (r *Registry) storeRevision(ctx context.Context, rev *model.Revision) (*model.Revision, error) {
	b, err := json.Marshal(rev)
	if err != nil {
		return nil, err
	}
	_, err = r.kv.Create(ctx, revKey(rev.App, rev.ID), b)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return r.revision(ctx, rev.App, rev.ID)
	}
	if err != nil {
		return nil, fmt.Errorf("store revision %s: %w", rev.ID, err)
	}
	return rev, nil
}

// activate makes id the active revision of app with compare-and-set on the
// head, retrying when another writer got there first. With mustExist, a
// missing app is ErrAppNotFound instead of being created. It reports false
// when id was already active.
func (r *Registry) activate(ctx context.Context, app, id, reason string, mustExist bool) (bool, error) {
	for attempt := range casAttempts {
		head, kvRev, err := r.head(ctx, app)
		switch {
		case errors.Is(err, ErrAppNotFound) && !mustExist:
			if head, err = r.newHead(ctx, app); err != nil {
				return false, err
			}
		case err != nil:
			return false, err
		}
		if err := checkTenant(ctx, head); err != nil {
			return false, err
		}
		if head.Active == id {
			return false, nil
		}
		now := r.now()
		head.Active = id
		head.UpdatedAt = now
		head.History = append(head.History, HistoryItem{Revision: id, ActivatedAt: now, Reason: reason})
		if n := len(head.History); n > maxHistory {
			head.History = slices.Clone(head.History[n-maxHistory:])
		}
		b, err := json.Marshal(head)
		if err != nil {
			return false, err
		}
		if kvRev == 0 {
			_, err = r.kv.Create(ctx, appKey(app), b)
		} else {
			_, err = r.kv.Update(ctx, appKey(app), b, kvRev)
		}
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return false, fmt.Errorf("update app head: %w", err)
		}
		// Another writer updated the head: back off a little, re-read, retry.
		if err := backoff(ctx, attempt); err != nil {
			return false, err
		}
	}
	return false, fmt.Errorf("update app head: gave up after %d concurrent updates; retry", casAttempts)
}

// newHead is the head of app before its first revision: owned by the
// tenant it belonged to when it was deleted, if it was, else by the
// caller's tenant (DefaultTenant for a node-wide caller).
func (r *Registry) newHead(ctx context.Context, app string) (*App, error) {
	e, err := r.kv.Get(ctx, ownerKey(app))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return &App{Name: app, Tenant: model.TenantOr(model.TenantOf(ctx))}, nil
	case err != nil:
		return nil, fmt.Errorf("read the owner of %s: %w", app, err)
	}
	return &App{Name: app, Tenant: string(e.Value())}, nil
}

// checkTenant refuses a change to head by a caller acting for another
// tenant (model.WithTenant); a caller acting for every tenant passes. It
// runs inside the compare-and-set loop, so two tenants racing to create
// one app name cannot both win: the loser re-reads the head and is refused.
func checkTenant(ctx context.Context, head *App) error {
	if t := model.TenantOf(ctx); t != "" && head.TenantName() != t {
		return &model.TenantError{App: head.Name, Tenant: head.TenantName(), Caller: t}
	}
	return nil
}

func backoff(ctx context.Context, attempt int) error {
	limit := time.Millisecond << min(attempt, 6) // up to 64ms
	t := time.NewTimer(rand.N(limit))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Rollback makes toRevision the active revision of app. toRevision may be a
// unique prefix of at least 7 hex digits; "" means the revision that was
// active before the current one. Rolling back to the active revision is a
// no-op.
// Its errors are *RollbackError.
func (r *Registry) Rollback(ctx context.Context, app, toRevision string) (*model.Revision, error) {
	target, err := r.RollbackTarget(ctx, app, toRevision)
	if err != nil {
		return nil, err
	}
	// A deploy racing with this rollback may land first; the rollback then
	// still activates target (last writer wins, both are in the history).
	if _, err := r.activate(ctx, app, target.ID, "rollback", true); err != nil {
		return nil, &RollbackError{fmt.Errorf("rollback %s: %w", app, err)}
	}
	return target, nil
}

// RollbackTarget is the revision Rollback(ctx, app, toRevision) would
// activate, without activating it, so a caller can check it first. Its
// errors are *RollbackError.
func (r *Registry) RollbackTarget(ctx context.Context, app, toRevision string) (*model.Revision, error) {
	target, err := r.rollbackTarget(ctx, app, toRevision)
	if err != nil {
		return nil, &RollbackError{err}
	}
	return target, nil
}

func (r *Registry) rollbackTarget(ctx context.Context, app, toRevision string) (*model.Revision, error) {
	if err := model.CheckName("app", app); err != nil {
		return nil, fmt.Errorf("rollback %s: %w", app, err)
	}
	head, _, err := r.head(ctx, app)
	if err != nil {
		return nil, fmt.Errorf("rollback %s: %w", app, err)
	}
	var target *model.Revision
	if toRevision == "" {
		id, ok := previous(head)
		if !ok {
			return nil, fmt.Errorf("rollback: app %s has only one revision; nothing to roll back to: %w", app, ErrNoPreviousRevision)
		}
		target, err = r.revision(ctx, app, id)
	} else {
		target, err = r.Revision(ctx, app, toRevision)
	}
	if err != nil {
		return nil, fmt.Errorf("rollback %s: %w", app, err)
	}
	return target, nil
}

// previous is the most recent revision in the history that is not the
// active one.
func previous(head *App) (string, bool) {
	for i := len(head.History) - 1; i >= 0; i-- {
		if id := head.History[i].Revision; id != head.Active {
			return id, true
		}
	}
	return "", false
}

// App returns the head of app, or an error wrapping ErrAppNotFound.
func (r *Registry) App(ctx context.Context, name string) (*App, error) {
	if err := model.CheckName("app", name); err != nil {
		return nil, err
	}
	a, _, err := r.head(ctx, name)
	return a, err
}

// head reads the app head and its KV revision (for compare-and-set).
func (r *Registry) head(ctx context.Context, app string) (*App, uint64, error) {
	e, err := r.kv.Get(ctx, appKey(app))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, 0, fmt.Errorf("app %s: %w", app, ErrAppNotFound)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("app %s: %w", app, err)
	}
	var a App
	if err := json.Unmarshal(e.Value(), &a); err != nil {
		return nil, 0, fmt.Errorf("app %s: decode head: %w", app, err)
	}
	return &a, e.Revision(), nil
}

// Apps returns every app, sorted by name.
func (r *Registry) Apps(ctx context.Context) ([]*App, error) {
	// One watch streams every head's current value; a key listing followed
	// by a Get per app would cost a round trip per app.
	w, err := r.kv.WatchFiltered(ctx, []string{appPrefix + "*"}, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("list apps: %w", err)
	}
	defer w.Stop()
	var apps []*App
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("list apps: %w", ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("list apps: watcher stopped")
			}
			if e == nil { // every current value has been delivered
				slices.SortFunc(apps, func(a, b *App) int { return strings.Compare(a.Name, b.Name) })
				return apps, nil
			}
			var a App
			if err := json.Unmarshal(e.Value(), &a); err != nil {
				return nil, fmt.Errorf("list apps: %s: decode: %w", e.Key(), err)
			}
			apps = append(apps, &a)
		}
	}
}

// keys lists the keys matching filter (a NATS subject filter).
func (r *Registry) keys(ctx context.Context, filter string) ([]string, error) {
	l, err := r.kv.ListKeysFiltered(ctx, filter)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer l.Stop()
	var keys []string
	for k := range l.Keys() {
		keys = append(keys, k)
	}
	return keys, nil
}

// Revision returns revision id of app. id may be a unique prefix of at least
// 7 hex digits. A missing revision is ErrRevisionNotFound (ErrAppNotFound if
// the app does not exist).
func (r *Registry) Revision(ctx context.Context, app, id string) (*model.Revision, error) {
	if err := model.CheckName("app", app); err != nil {
		return nil, err
	}
	id = strings.ToLower(id)
	if len(id) < minPrefix || !model.IsHex(id) || len(id) > sha256.Size*2 {
		return nil, fmt.Errorf("%w: revision %q: give a revision id or a prefix of at least %d hex digits", model.ErrInvalid, id, minPrefix)
	}
	if len(id) < sha256.Size*2 {
		full, err := r.resolvePrefix(ctx, app, id)
		if err != nil {
			return nil, err
		}
		id = full
	}
	rev, err := r.revision(ctx, app, id)
	if errors.Is(err, ErrRevisionNotFound) {
		if _, _, herr := r.head(ctx, app); errors.Is(herr, ErrAppNotFound) {
			return nil, herr
		}
	}
	return rev, err
}

func (r *Registry) resolvePrefix(ctx context.Context, app, prefix string) (string, error) {
	keys, err := r.keys(ctx, revPrefix+app+".*")
	if err != nil {
		return "", fmt.Errorf("app %s: list revisions: %w", app, err)
	}
	var matches []string
	for _, k := range keys {
		if id := strings.TrimPrefix(k, revPrefix+app+"."); strings.HasPrefix(id, prefix) {
			matches = append(matches, id)
		}
	}
	switch len(matches) {
	case 0:
		if _, _, err := r.head(ctx, app); errors.Is(err, ErrAppNotFound) {
			return "", err
		}
		return "", fmt.Errorf("app %s: revision %s: %w", app, prefix, ErrRevisionNotFound)
	case 1:
		return matches[0], nil
	default:
		slices.Sort(matches)
		return "", fmt.Errorf("%w: revision prefix %s of app %s is ambiguous (matches %s); give more digits",
			model.ErrInvalid, prefix, app, strings.Join(matches, ", "))
	}
}

// revision reads one revision by full id.
func (r *Registry) revision(ctx context.Context, app, id string) (*model.Revision, error) {
	if v, ok := r.revs.Load(app + "/" + id); ok {
		return v.(*model.Revision), nil
	}
	e, err := r.kv.Get(ctx, revKey(app, id))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return nil, fmt.Errorf("app %s: revision %s: %w", app, id, ErrRevisionNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("app %s: revision %s: %w", app, id, err)
	}
	var rev model.Revision
	if err := json.Unmarshal(e.Value(), &rev); err != nil {
		return nil, fmt.Errorf("app %s: revision %s: decode: %w", app, id, err)
	}
	r.revs.Store(app+"/"+id, &rev)
	return &rev, nil
}

// Active returns the revision of app taking traffic.
func (r *Registry) Active(ctx context.Context, app string) (*model.Revision, error) {
	a, err := r.App(ctx, app)
	if err != nil {
		return nil, err
	}
	return r.revision(ctx, app, a.Active)
}

// Revisions returns every stored revision of app, newest first.
func (r *Registry) Revisions(ctx context.Context, app string) ([]*model.Revision, error) {
	if _, err := r.App(ctx, app); err != nil {
		return nil, err
	}
	keys, err := r.keys(ctx, revPrefix+app+".*")
	if err != nil {
		return nil, fmt.Errorf("app %s: list revisions: %w", app, err)
	}
	revs := make([]*model.Revision, 0, len(keys))
	for _, k := range keys {
		rev, err := r.revision(ctx, app, strings.TrimPrefix(k, revPrefix+app+"."))
		if errors.Is(err, ErrRevisionNotFound) {
			continue // deleted since listed
		}
		if err != nil {
			return nil, err
		}
		revs = append(revs, rev)
	}
	slices.SortFunc(revs, func(a, b *model.Revision) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return revs, nil
}

// Delete removes app and all its revisions. Artifacts stay in the artifact
// store (other apps may share them).
func (r *Registry) Delete(ctx context.Context, app string) error {
	head, err := r.App(ctx, app)
	if err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	if err := checkTenant(ctx, head); err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	r.revs.Range(func(k, _ any) bool {
		if strings.HasPrefix(k.(string), app+"/") {
			r.revs.Delete(k)
		}
		return true
	})
	// The name stays with its tenant: the app's buckets, secrets and logs
	// outlive the delete, and another tenant deploying the name would
	// inherit them. Written before the head goes, so no moment lets another
	// tenant claim it.
	if _, err := r.kv.Put(ctx, ownerKey(app), []byte(head.TenantName())); err != nil {
		return fmt.Errorf("delete app %s: keep its owner: %w", app, err)
	}
	// The head goes first: routing stops as soon as it is gone.
	if err := r.kv.Purge(ctx, appKey(app)); err != nil {
		return fmt.Errorf("delete app %s: %w", app, err)
	}
	keys, err := r.keys(ctx, revPrefix+app+".*")
	if err != nil {
		return fmt.Errorf("delete app %s: list revisions: %w", app, err)
	}
	for _, k := range keys {
		if err := r.kv.Purge(ctx, k); err != nil {
			return fmt.Errorf("delete app %s: %s: %w", app, k, err)
		}
	}
	return nil
}

// Watch calls fn with the app's name whenever the head of an app is
// created, changed or deleted, until ctx is done; then it returns nil. When
// the watch starts, fn is called once for every existing app, so a caller
// that loads its state in fn misses no change. fn runs on Watch's goroutine,
// one call at a time.
func (r *Registry) Watch(ctx context.Context, fn func(app string)) error {
	w, err := r.kv.Watch(ctx, appPrefix+"*")
	if err != nil {
		return fmt.Errorf("watch apps: %w", err)
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("watch apps: watcher stopped")
			}
			if e == nil {
				continue // end of the initial values
			}
			fn(strings.TrimPrefix(e.Key(), appPrefix))
		}
	}
}

// checkConflicts fails with a *ConflictError when a route of fns and a
// route of another app's active revision could not share one ServeMux
// (model.FindConflict). That keeps what is recorded servable; the stricter
// rule that a path belongs to one app (model.FindOverlap) is the gateway's
// Validate, which a deploy meets first.
//
// Two deploys of different apps racing with overlapping routes can both
// pass; the gateway resolves that at routing time. Serialising deploys across
// apps would cost a global lock for a rare mistake.
func (r *Registry) checkConflicts(ctx context.Context, rev *model.Revision) error {
	app, fns := rev.App, rev.Functions
	apps, err := r.Apps(ctx)
	if err != nil {
		return err
	}
	var others []model.OwnedRoute
	for _, a := range apps {
		if a.Name == app {
			continue
		}
		rev, err := r.revision(ctx, a.Name, a.Active)
		if err != nil {
			return fmt.Errorf("routes of app %s: %w", a.Name, err)
		}
		for _, f := range rev.Functions {
			for _, rt := range f.Routes {
				others = append(others, model.OwnedRoute{App: a.Name, Function: f.Name, Route: rt})
			}
		}
	}
	var own []model.OwnedRoute
	for _, f := range fns {
		for _, rt := range f.Routes {
			own = append(own, model.OwnedRoute{App: app, Function: f.Name, Route: rt})
		}
	}
	return model.FindConflict(own, others)
}
