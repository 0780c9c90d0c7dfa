package capability

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/state"
	"github.com/nimbus-dev/nimbus/internal/workflow"
)

// KVStore is what the kv service needs of the buckets; *state.Buckets
// implements it. Its errors are package state's.
type KVStore interface {
	Get(ctx context.Context, app, bucket, key string) ([]byte, uint64, error)
	Put(ctx context.Context, app, bucket, key string, value []byte, opts state.PutOptions) (uint64, error)
	Delete(ctx context.Context, app, bucket, key string, ifRevision *uint64) error
	ListAfter(ctx context.Context, app, bucket, prefix, after string, limit int) ([]string, bool, error)
	// CheckPut and CheckDelete answer what Put and Delete (without a
	// condition) would for their arguments, bucket and quota, without
	// writing: a journaled step's write is checked when the step makes it
	// and applied after the step commits, where it must not fail.
	// CheckPut takes the value's bytes from the quota it checks, as Put
	// does.
	CheckPut(ctx context.Context, app, bucket, key string, value []byte, opts state.PutOptions) error
	CheckDelete(ctx context.Context, app, bucket, key string) error
}

var _ KVStore = (*state.Buckets)(nil)

// MaxListKeys caps the keys of one List.
const MaxListKeys = state.MaxListLimit

// KVService reaches the buckets of the caller's app (capability "kv",
// scoped per bucket: "kv:B" reads and writes bucket B, "kv:B:read" only
// reads it). A bucket of the same name in another app is another bucket.
type KVService struct {
	*guard
	store KVStore
	fx    StepEffects // nil: no workflow engine
}

// StepEffects is what the kv service needs of the workflow engine: the
// writes a workflow run makes inside a journaled step are buffered there,
// committed with the step and applied once (workflow/effects.go);
// *workflow.Engine implements it.
type StepEffects interface {
	InJournaledStep(app, invocation string) bool
	BufferEffect(app, invocation string, e workflow.Effect) bool
	BufferedKV(app, invocation, bucket, key string) (value []byte, deleted, ok bool)
}

var _ StepEffects = (*workflow.Engine)(nil)

// journaled reports whether call runs a journaled workflow step.
func (s *KVService) journaled(call *Caller) bool {
	return s.fx != nil && s.fx.InJournaledStep(call.App, call.InvocationID)
}

// buffer checks a write of a journaled step and buffers it. What the
// apply after the commit could fail on is checked now (the key, the
// bucket, the value's size, the TTL, the tenant's kv_bytes quota), so a
// bad write fails the step's attempt instead of being dropped after the
// step committed.
func (s *KVService) buffer(ctx context.Context, call *Caller, op string, eff workflow.Effect) error {
	var err error
	if eff.Op == workflow.EffectKVDelete {
		err = s.store.CheckDelete(ctx, call.App, eff.Bucket, eff.Key)
	} else {
		err = s.store.CheckPut(ctx, call.App, eff.Bucket, eff.Key, eff.Value, state.PutOptions{TTL: time.Duration(eff.TTLMS) * time.Millisecond})
	}
	if err != nil {
		return s.storeError(call, op, eff.Bucket, err)
	}
	if !s.fx.BufferEffect(call.App, call.InvocationID, eff) {
		return fail(op, ErrUnavailable, errors.New("the journaled step ended while the write was checked"))
	}
	return nil
}

// errJournaledCAS is the refusal of a compare-and-swap in a journaled step.
var errJournaledCAS = errors.New("a compare-and-swap (IfRevision) cannot be made inside a step whose effects are journaled: " +
	"its condition would be checked when the step commits, not when it runs; write unconditionally inside the step, " +
	"or give the step nimbus.ImmediateEffects() to make its writes at once")

// begin validates the bucket name, then checks the grant for op, then that
// there is a store. The name is checked first so that "counts:read" cannot
// match the grant "kv:counts:read".
func (s *KVService) begin(call *Caller, op, bucket string, write bool) error {
	if !model.ValidName(bucket) {
		return fail(op, ErrBadArgument, fmt.Errorf("%q is not a bucket name", bucket))
	}
	if err := s.check(call, op, kvGrant(bucket, write)); err != nil {
		return err
	}
	if s.store == nil {
		return fail(op, ErrUnavailable, errors.New("no key-value store in this process"))
	}
	return nil
}

// Get returns the value of key and its revision. A missing key is
// ErrNotFound.
func (s *KVService) Get(ctx context.Context, call *Caller, bucket, key string) ([]byte, uint64, error) {
	const op = "kv_get"
	if err := s.begin(call, op, bucket, false); err != nil {
		return nil, 0, err
	}
	if s.journaled(call) {
		// Read your writes: the step's own buffered write wins.
		if v, deleted, ok := s.fx.BufferedKV(call.App, call.InvocationID, bucket, key); ok {
			if deleted {
				return nil, 0, fail(op, ErrNotFound, fmt.Errorf("key %q was deleted by this step", key))
			}
			return v, 0, nil
		}
	}
	v, rev, err := s.store.Get(ctx, call.App, bucket, key)
	if err != nil {
		return nil, 0, s.storeError(call, op, bucket, err)
	}
	return v, rev, nil
}

// Put writes value under key and returns the new revision; it is durable
// when Put returns. opts.IfRevision makes it a compare-and-swap, which
// fails with a *RevisionMismatchError. Put is done with value when it
// returns.
func (s *KVService) Put(ctx context.Context, call *Caller, bucket, key string, value []byte, opts state.PutOptions) (uint64, error) {
	const op = "kv_put"
	if err := s.begin(call, op, bucket, true); err != nil {
		return 0, err
	}
	if s.journaled(call) {
		// Buffered until the step commits: no revision yet (0).
		if opts.IfRevision != nil {
			return 0, fail(op, ErrBadArgument, errJournaledCAS)
		}
		if opts.TTL < 0 {
			return 0, fail(op, ErrBadArgument, fmt.Errorf("%w: %s", state.ErrInvalidTTL, opts.TTL))
		}
		// The TTL in whole milliseconds, rounded up (the store rounds it
		// up to seconds); it runs from when the write is applied.
		ttl := int64((opts.TTL + time.Millisecond - 1) / time.Millisecond)
		return 0, s.buffer(ctx, call, op, workflow.Effect{Op: workflow.EffectKVPut, Bucket: bucket, Key: key, Value: bytes.Clone(value), TTLMS: ttl})
	}
	rev, err := s.store.Put(ctx, call.App, bucket, key, value, opts)
	if err != nil {
		return 0, s.storeError(call, op, bucket, err)
	}
	return rev, nil
}

// Delete removes key; deleting a missing key succeeds. A non-nil
// ifRevision makes it a compare-and-swap (0: only if there is no key).
func (s *KVService) Delete(ctx context.Context, call *Caller, bucket, key string, ifRevision *uint64) error {
	const op = "kv_delete"
	if err := s.begin(call, op, bucket, true); err != nil {
		return err
	}
	if s.journaled(call) {
		if ifRevision != nil {
			return fail(op, ErrBadArgument, errJournaledCAS)
		}
		return s.buffer(ctx, call, op, workflow.Effect{Op: workflow.EffectKVDelete, Bucket: bucket, Key: key})
	}
	if err := s.store.Delete(ctx, call.App, bucket, key, ifRevision); err != nil {
		return s.storeError(call, op, bucket, err)
	}
	return nil
}

// List returns, sorted, the keys starting with prefix that sort after the
// key after ("" for the first page), at most limit of them (0 or above
// MaxListKeys: MaxListKeys), and whether more follow.
func (s *KVService) List(ctx context.Context, call *Caller, bucket, prefix, after string, limit int) ([]string, bool, error) {
	const op = "kv_list"
	if limit < 0 {
		return nil, false, fail(op, ErrBadArgument, fmt.Errorf("negative limit %d", limit))
	}
	if limit == 0 || limit > MaxListKeys {
		limit = MaxListKeys
	}
	if err := s.begin(call, op, bucket, false); err != nil {
		return nil, false, err
	}
	keys, more, err := s.store.ListAfter(ctx, call.App, bucket, prefix, after, limit)
	if err != nil {
		return nil, false, s.storeError(call, op, bucket, err)
	}
	return keys, more, nil
}

// storeError classifies a store error; what the caller cannot act on is
// logged and becomes ErrUnavailable.
func (s *KVService) storeError(call *Caller, op, bucket string, err error) error {
	var mm *state.RevisionMismatchError
	switch {
	case errors.As(err, &mm):
		return &RevisionMismatchError{Current: mm.Current, Err: err}
	case errors.Is(err, state.ErrKeyNotFound):
		return fail(op, ErrNotFound, err)
	case errors.Is(err, state.ErrBucketNotFound):
		return fail(op, ErrNoBucket, err)
	case errors.Is(err, state.ErrInvalidKey), errors.Is(err, state.ErrInvalidName), errors.Is(err, state.ErrInvalidTTL):
		return fail(op, ErrBadArgument, err)
	case errors.Is(err, state.ErrValueTooLarge):
		return fail(op, ErrTooLarge, err)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return fail(op, ErrUnavailable, err)
	}
	s.failed(call, "kv host function failed", op, err, "bucket", bucket)
	return fail(op, ErrUnavailable, err)
}
