package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/nimbus-dev/nimbus/internal/apierror"
	"github.com/nimbus-dev/nimbus/internal/gateway"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/security"
	"github.com/nimbus-dev/nimbus/internal/state"
)

// KV is the key-value state the API exposes; *state.Buckets implements it.
type KV interface {
	Get(ctx context.Context, app, bucket, key string) ([]byte, uint64, error)
	Put(ctx context.Context, app, bucket, key string, value []byte, opts state.PutOptions) (uint64, error)
	Delete(ctx context.Context, app, bucket, key string, ifRevision *uint64) error
	ListAfter(ctx context.Context, app, bucket, prefix, after string, limit int) ([]string, bool, error)
}

var _ KV = (*state.Buckets)(nil)

// HeaderRevision carries a key's revision on GET and PUT answers.
const HeaderRevision = "X-Nimbus-Revision"

// maxKeysPage caps one listing.
const maxKeysPage = 1000

func (a *api) kvRoutes(handle func(string, security.Scope, func(http.ResponseWriter, *http.Request) error)) {
	handle("GET /api/v1/apps/{app}/buckets/{bucket}/keys", security.ScopeRead, a.kvList)
	handle("GET /api/v1/apps/{app}/buckets/{bucket}/keys/{key...}", security.ScopeRead, a.kvGet)
	handle("PUT /api/v1/apps/{app}/buckets/{bucket}/keys/{key...}", security.ScopeInvoke, a.kvPut)
	handle("DELETE /api/v1/apps/{app}/buckets/{bucket}/keys/{key...}", security.ScopeInvoke, a.kvDelete)
}

// ifRevision reads ?if_revision=N (N=0: the key must not exist).
func ifRevision(r *http.Request) (*uint64, error) {
	s := r.URL.Query().Get("if_revision")
	if s == "" {
		return nil, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return nil, apierror.New(http.StatusBadRequest, "bad_if_revision", "if_revision must be a revision number (0: the key must not exist yet)")
	}
	return &n, nil
}

func (a *api) kvGet(w http.ResponseWriter, r *http.Request) error {
	v, rev, err := a.p.KV().Get(r.Context(), r.PathValue("app"), r.PathValue("bucket"), r.PathValue("key"))
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set(HeaderRevision, strconv.FormatUint(rev, 10))
	w.Write(v)
	return nil
}

// KVPutResult is the answer of a PUT.
type KVPutResult struct {
	Revision uint64 `json:"revision"`
}

func (a *api) kvPut(w http.ResponseWriter, r *http.Request) error {
	var opts state.PutOptions
	var err error
	if opts.IfRevision, err = ifRevision(r); err != nil {
		return err
	}
	if s := r.URL.Query().Get("ttl"); s != "" {
		if opts.TTL, err = time.ParseDuration(s); err != nil || opts.TTL <= 0 {
			return apierror.New(http.StatusBadRequest, "bad_ttl", fmt.Sprintf("ttl %q is not a positive duration such as 30s or 1h", s))
		}
	}
	if r.ContentLength <= 1<<20 {
		// (a larger one is a 413 below, before it costs any budget)
		if err := gateway.ChargeBody(r, r.PathValue("app")); err != nil {
			return err
		}
	}
	value, err := gateway.ReadBody(w, r, 1<<20)
	if err != nil {
		if errors.Is(err, runtime.ErrRequestTooLarge) {
			return apierror.New(http.StatusRequestEntityTooLarge, "value_too_large", "value is larger than 1MiB")
		}
		return err
	}
	rev, err := a.p.KV().Put(r.Context(), r.PathValue("app"), r.PathValue("bucket"), r.PathValue("key"), value, opts)
	if err != nil {
		return err
	}
	w.Header().Set(HeaderRevision, strconv.FormatUint(rev, 10))
	return writeJSON(w, http.StatusOK, KVPutResult{Revision: rev})
}

func (a *api) kvDelete(w http.ResponseWriter, r *http.Request) error {
	ifRev, err := ifRevision(r)
	if err != nil {
		return err
	}
	if err := a.p.KV().Delete(r.Context(), r.PathValue("app"), r.PathValue("bucket"), r.PathValue("key"), ifRev); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// KVKeys is the answer of a listing.
type KVKeys struct {
	Keys []string `json:"keys"`
	// More is set when keys beyond the last one exist: ask again with
	// ?after=<last key>.
	More bool `json:"more"`
}

func (a *api) kvList(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit := maxKeysPage
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 || n > maxKeysPage {
			return apierror.New(http.StatusBadRequest, "bad_limit", fmt.Sprintf("limit must be 1 to %d", maxKeysPage))
		}
		limit = n
	}
	keys, more, err := a.p.KV().ListAfter(r.Context(), r.PathValue("app"), r.PathValue("bucket"), q.Get("prefix"), q.Get("after"), limit)
	if err != nil {
		return err
	}
	if keys == nil {
		keys = []string{}
	}
	return writeJSON(w, http.StatusOK, KVKeys{Keys: keys, More: more})
}
