package hostfn

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"time"

	"github.com/tetratelabs/wazero/api"

	"github.com/nimbus-dev/nimbus/internal/state"
	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// KVStore is what the kv functions need of the buckets; *state.Buckets
// implements it.
type KVStore interface {
	Get(ctx context.Context, app, bucket, key string) ([]byte, uint64, error)
	Put(ctx context.Context, app, bucket, key string, value []byte, opts state.PutOptions) (uint64, error)
	Delete(ctx context.Context, app, bucket, key string, ifRevision *uint64) error
	ListAfter(ctx context.Context, app, bucket, prefix, after string, limit int) ([]string, bool, error)
}

var _ KVStore = (*state.Buckets)(nil)

// KVProvider provides the kv functions (capability "kv", scoped per bucket)
// over the calling app's buckets. Their signatures are specified in
// sdk/go/wire.
type KVProvider struct {
	// Store holds the buckets. Optional: nil makes every call return
	// CodeUnavailable once its arguments are checked.
	Store KVStore
	// Logger receives store failures. Optional: default discards.
	Logger *slog.Logger
}

// Capability implements Provider.
func (KVProvider) Capability() string { return CapKV }

// Functions implements Provider.
func (p KVProvider) Functions() []Function {
	i32, i64 := api.ValueTypeI32, api.ValueTypeI64
	status := []api.ValueType{i32}
	return []Function{
		{Name: wire.FuncKVGet, Params: []api.ValueType{i32, i32, i32, i32, i32, i32, i32}, Results: status, Fn: p.get, Scope: readScope},
		{Name: wire.FuncKVPut, Params: []api.ValueType{i32, i32, i32, i32, i32, i32, i64, i64, i32}, Results: status, Fn: p.put, Scope: writeScope},
		{Name: wire.FuncKVDelete, Params: []api.ValueType{i32, i32, i32, i32, i64, i32}, Results: status, Fn: p.delete, Scope: writeScope},
		{Name: wire.FuncKVList, Params: []api.ValueType{i32, i32, i32, i32, i32, i32, i32, i32, i32, i32}, Results: status, Fn: p.list, Scope: readScope},
	}
}

// Every kv function takes the bucket name first, as (ptr, len).
func readScope(mod api.Module, stack []uint64) (string, bool, int32) {
	b, code := bucketArg(mod, stack)
	return b, false, code
}

func writeScope(mod api.Module, stack []uint64) (string, bool, int32) {
	b, code := bucketArg(mod, stack)
	return b, true, code
}

// bucketArg decodes the bucket name. It must be a valid name before grants
// are checked: "counts:read" must not match the grant "kv:counts:read".
func bucketArg(mod api.Module, stack []uint64) (string, int32) {
	b, code := stringArg(mod.Memory(), stack[0], stack[1], wire.KVMaxBucketLen)
	if code == CodeOK && !validName(b) {
		return "", CodeBadArgument
	}
	return b, code
}

// bytesArg returns the guest bytes at (ptr, n), at most max of them, as a
// view into guest memory: valid only until the call returns.
func bytesArg(mem api.Memory, ptr, n uint64, max int) ([]byte, int32) {
	p, l := api.DecodeU32(ptr), api.DecodeU32(n)
	if mem == nil {
		return nil, CodeBadArgument
	}
	if uint64(l) > uint64(max) {
		return nil, CodeTooLarge
	}
	b, ok := mem.Read(p, l)
	if !ok {
		return nil, CodeBadArgument
	}
	return b, CodeOK
}

// stringArg copies a string argument out of guest memory.
func stringArg(mem api.Memory, ptr, n uint64, max int) (string, int32) {
	b, code := bytesArg(mem, ptr, n, max)
	if code == CodeTooLarge {
		code = CodeBadArgument // names and keys have fixed limits; over one is malformed
	}
	return string(b), code
}

// outArg checks that size bytes at ptr are writable.
func outArg(mem api.Memory, ptr uint64, size uint32) (uint32, int32) {
	p := api.DecodeU32(ptr)
	if mem == nil {
		return 0, CodeBadArgument
	}
	if _, ok := mem.Read(p, size); !ok {
		return 0, CodeBadArgument
	}
	return p, CodeOK
}

// revisionArg decodes an if_revision argument: KVAnyRevision is nil.
func revisionArg(v uint64) (*uint64, int32) {
	r := int64(v)
	switch {
	case r == wire.KVAnyRevision:
		return nil, CodeOK
	case r < 0:
		return nil, CodeBadArgument
	}
	u := uint64(r)
	return &u, CodeOK
}

// kvArgs are the decoded arguments of a kv call.
type kvArgs struct {
	bucket, key string
}

// bucketKey decodes the (bucket, key) arguments every function but kv_list
// starts with.
func bucketKey(mem api.Memory, stack []uint64) (kvArgs, int32) {
	var a kvArgs
	var code int32
	if a.bucket, code = stringArg(mem, stack[0], stack[1], wire.KVMaxBucketLen); code != CodeOK {
		return a, code
	}
	a.key, code = stringArg(mem, stack[2], stack[3], wire.KVMaxKeyLen)
	return a, code
}

// kv_get(bucket_ptr, bucket_len, key_ptr, key_len, buf_ptr, buf_cap, out_ptr) -> status
func (p KVProvider) get(ctx context.Context, call *Call, mod api.Module, stack []uint64) {
	stack[0] = api.EncodeI32(p.doGet(ctx, call, mod.Memory(), stack))
}

func (p KVProvider) doGet(ctx context.Context, call *Call, mem api.Memory, stack []uint64) int32 {
	a, code := bucketKey(mem, stack)
	if code != CodeOK {
		return code
	}
	bufPtr, bufCap := api.DecodeU32(stack[4]), api.DecodeU32(stack[5])
	if mem == nil || uint64(bufPtr)+uint64(bufCap) > uint64(mem.Size()) {
		return CodeBadArgument
	}
	out, code := outArg(mem, stack[6], wire.KVGetOutSize)
	if code != CodeOK {
		return code
	}
	if p.Store == nil {
		return CodeUnavailable
	}
	value, rev, err := p.Store.Get(ctx, call.App, a.bucket, a.key)
	if err != nil {
		return p.code(call, "kv_get", a.bucket, err, nil, 0)
	}
	var o [wire.KVGetOutSize]byte
	binary.LittleEndian.PutUint64(o[0:], rev)
	binary.LittleEndian.PutUint32(o[8:], uint32(len(value)))
	mem.Write(out, o[:])
	if uint64(len(value)) > uint64(bufCap) {
		return CodeTooLarge // the guest retries with a buffer of the size in out
	}
	mem.Write(bufPtr, value)
	return CodeOK
}

// kv_put(bucket_ptr, bucket_len, key_ptr, key_len, val_ptr, val_len, ttl_ms i64, if_revision i64, out_ptr) -> status
func (p KVProvider) put(ctx context.Context, call *Call, mod api.Module, stack []uint64) {
	stack[0] = api.EncodeI32(p.doPut(ctx, call, mod.Memory(), stack))
}

func (p KVProvider) doPut(ctx context.Context, call *Call, mem api.Memory, stack []uint64) int32 {
	a, code := bucketKey(mem, stack)
	if code != CodeOK {
		return code
	}
	value, code := bytesArg(mem, stack[4], stack[5], wire.KVMaxValueLen)
	if code != CodeOK {
		return code
	}
	ttlMS := int64(stack[6])
	if ttlMS < 0 || ttlMS > int64(time.Duration(1<<63-1)/time.Millisecond) {
		return CodeBadArgument
	}
	ifRev, code := revisionArg(stack[7])
	if code != CodeOK {
		return code
	}
	out, code := outArg(mem, stack[8], wire.KVPutOutSize)
	if code != CodeOK {
		return code
	}
	if p.Store == nil {
		return CodeUnavailable
	}
	// value is a view into guest memory; the guest is blocked in this call,
	// and Put is done with it when it returns.
	rev, err := p.Store.Put(ctx, call.App, a.bucket, a.key, value, state.PutOptions{TTL: time.Duration(ttlMS) * time.Millisecond, IfRevision: ifRev})
	if err != nil {
		return p.code(call, "kv_put", a.bucket, err, mem, out)
	}
	mem.WriteUint64Le(out, rev)
	return CodeOK
}

// kv_delete(bucket_ptr, bucket_len, key_ptr, key_len, if_revision i64, out_ptr) -> status
func (p KVProvider) delete(ctx context.Context, call *Call, mod api.Module, stack []uint64) {
	stack[0] = api.EncodeI32(p.doDelete(ctx, call, mod.Memory(), stack))
}

func (p KVProvider) doDelete(ctx context.Context, call *Call, mem api.Memory, stack []uint64) int32 {
	a, code := bucketKey(mem, stack)
	if code != CodeOK {
		return code
	}
	ifRev, code := revisionArg(stack[4])
	if code != CodeOK {
		return code
	}
	out, code := outArg(mem, stack[5], wire.KVPutOutSize)
	if code != CodeOK {
		return code
	}
	if p.Store == nil {
		return CodeUnavailable
	}
	if err := p.Store.Delete(ctx, call.App, a.bucket, a.key, ifRev); err != nil {
		return p.code(call, "kv_delete", a.bucket, err, mem, out)
	}
	return CodeOK
}

// kv_list(bucket_ptr, bucket_len, prefix_ptr, prefix_len, after_ptr, after_len, limit, buf_ptr, buf_cap, out_ptr) -> status
func (p KVProvider) list(ctx context.Context, call *Call, mod api.Module, stack []uint64) {
	stack[0] = api.EncodeI32(p.doList(ctx, call, mod.Memory(), stack))
}

func (p KVProvider) doList(ctx context.Context, call *Call, mem api.Memory, stack []uint64) int32 {
	bucket, code := stringArg(mem, stack[0], stack[1], wire.KVMaxBucketLen)
	if code != CodeOK {
		return code
	}
	prefix, code := stringArg(mem, stack[2], stack[3], wire.KVMaxKeyLen)
	if code != CodeOK {
		return code
	}
	after, code := stringArg(mem, stack[4], stack[5], wire.KVMaxKeyLen)
	if code != CodeOK {
		return code
	}
	limit := api.DecodeI32(stack[6])
	if limit < 0 {
		return CodeBadArgument
	}
	if limit == 0 || limit > wire.KVMaxListLimit {
		limit = wire.KVMaxListLimit
	}
	bufPtr, bufCap := api.DecodeU32(stack[7]), api.DecodeU32(stack[8])
	if mem == nil || uint64(bufPtr)+uint64(bufCap) > uint64(mem.Size()) {
		return CodeBadArgument
	}
	out, code := outArg(mem, stack[9], wire.KVListOutSize)
	if code != CodeOK {
		return code
	}
	if p.Store == nil {
		return CodeUnavailable
	}
	keys, more, err := p.Store.ListAfter(ctx, call.App, bucket, prefix, after, int(limit))
	if err != nil {
		return p.code(call, "kv_list", bucket, err, nil, 0)
	}
	size := wire.KeysSize(keys)
	var flags uint32
	if more {
		flags = wire.KVListMore
	}
	mem.WriteUint32Le(out, uint32(size))
	mem.WriteUint32Le(out+4, flags)
	if uint64(size) > uint64(bufCap) {
		return CodeTooLarge // the guest retries with a buffer of the size in out
	}
	mem.Write(bufPtr, wire.AppendKeys(make([]byte, 0, size), keys))
	return CodeOK
}

// code maps a store error to a status code. A revision mismatch writes the
// current revision at out when mem is set.
func (p KVProvider) code(call *Call, fn, bucket string, err error, mem api.Memory, out uint32) int32 {
	var mm *state.RevisionMismatchError
	switch {
	case errors.As(err, &mm):
		if mem != nil {
			mem.WriteUint64Le(out, mm.Current)
		}
		return wire.CodeRevisionMismatch
	case errors.Is(err, state.ErrKeyNotFound):
		return wire.CodeNotFound
	case errors.Is(err, state.ErrBucketNotFound):
		return wire.CodeNoBucket
	case errors.Is(err, state.ErrInvalidKey), errors.Is(err, state.ErrInvalidName), errors.Is(err, state.ErrInvalidTTL):
		return CodeBadArgument
	case errors.Is(err, state.ErrValueTooLarge):
		return CodeTooLarge
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return CodeUnavailable
	}
	logger := p.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger.Warn("kv host function failed", "app", call.App, "function", call.Function, "invocation", call.InvocationID,
		"host_function", fn, "bucket", bucket, "err", err)
	return CodeUnavailable
}
