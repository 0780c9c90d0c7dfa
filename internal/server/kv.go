package server

import (
	"context"
	"errors"

	"github.com/nimbus-dev/nimbus/internal/api"
	"github.com/nimbus-dev/nimbus/internal/state"
)

// appKV is the node's key-value buckets as the API serves them: a call for
// an app that is not deployed fails with registry.ErrAppNotFound (404
// app_not_found) rather than state.ErrBucketNotFound, which is kept for a
// bucket the app does not declare. The app is looked up only when the
// bucket is missing, so a call that succeeds costs nothing more.
type appKV struct {
	*state.Buckets
	s *Server
}

var _ api.KV = appKV{}

func (k appKV) err(app string, err error) error {
	if errors.Is(err, state.ErrBucketNotFound) && k.s.activeRevision(app) == nil {
		return appNotFound(app)
	}
	return err
}

// Get implements api.KV.
func (k appKV) Get(ctx context.Context, app, bucket, key string) ([]byte, uint64, error) {
	v, rev, err := k.Buckets.Get(ctx, app, bucket, key)
	return v, rev, k.err(app, err)
}

// Put implements api.KV.
func (k appKV) Put(ctx context.Context, app, bucket, key string, value []byte, opts state.PutOptions) (uint64, error) {
	rev, err := quotaKV{k.Buckets, k.s.admit}.Put(ctx, app, bucket, key, value, opts)
	return rev, k.err(app, err)
}

// Delete implements api.KV.
func (k appKV) Delete(ctx context.Context, app, bucket, key string, ifRevision *uint64) error {
	return k.err(app, quotaKV{k.Buckets, k.s.admit}.Delete(ctx, app, bucket, key, ifRevision))
}

// ListAfter implements api.KV.
func (k appKV) ListAfter(ctx context.Context, app, bucket, prefix, after string, limit int) ([]string, bool, error) {
	keys, more, err := k.Buckets.ListAfter(ctx, app, bucket, prefix, after, limit)
	return keys, more, k.err(app, err)
}
