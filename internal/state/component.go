package state

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nimbus-dev/nimbus/internal/model"
)

// ErrInvalidBucket means a revision declares a bucket this node cannot
// create as declared (a size or history over the limits).
var ErrInvalidBucket = errors.New("invalid bucket")

// Buckets is the first component (see internal/server) a revision is
// provisioned into: its buckets exist before any function that uses them
// can run, and before bucket triggers watch them.

// configOf is the BucketConfig of a bucket a revision declares.
func configOf(app string, b model.Bucket) BucketConfig {
	return BucketConfig{App: app, Name: b.Name, MaxValueBytes: int(b.MaxValueBytes),
		TTL: time.Duration(b.TTLMS) * time.Millisecond, History: b.History}
}

// Validate checks every bucket rev declares without creating any; an error
// wraps ErrInvalidBucket.
func (b *Buckets) Validate(_ context.Context, rev *model.Revision) error {
	var errs []error
	for _, bk := range rev.Buckets {
		if _, _, err := b.kvConfig(configOf(rev.App, bk)); err != nil {
			errs = append(errs, fmt.Errorf("bucket %s: %w: %w", bk.Name, ErrInvalidBucket, err))
		}
	}
	return errors.Join(errs...)
}

// Provision creates (or updates) every bucket rev declares (Ensure).
func (b *Buckets) Provision(ctx context.Context, rev *model.Revision) error {
	var errs []error
	for _, bk := range rev.Buckets {
		if err := b.Ensure(ctx, configOf(rev.App, bk)); err != nil {
			errs = append(errs, fmt.Errorf("bucket %s: %w", bk.Name, err))
		}
	}
	return errors.Join(errs...)
}

// Retire keeps the app's buckets: deleting an app does not delete its data
// (Remove does, when asked).
func (b *Buckets) Retire(context.Context, string) error { return nil }

// Close implements the component contract; the buckets live on the store's
// connection, which the server closes.
func (b *Buckets) Close(context.Context) error { return nil }
