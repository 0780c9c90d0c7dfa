package hostfn

import (
	"context"
	"encoding/binary"
	"errors"
	"time"

	"github.com/tetratelabs/wazero/api"

	"github.com/nimbus-dev/nimbus/internal/capability"
	"github.com/nimbus-dev/nimbus/internal/state"
	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// The ABI's list cap is the service's.
var _ = [1]struct{}{}[wire.KVMaxListLimit-capability.MaxListKeys]

// KVProvider provides the kv functions (capability "kv", scoped per bucket)
// over Service. Their signatures are specified in sdk/go/wire.
type KVProvider struct {
	Service *capability.KVService
}

// Capability implements Provider.
func (KVProvider) Capability() string { return capability.KindKV }

// Functions implements Provider.
func (p KVProvider) Functions() []Function {
	i32, i64 := api.ValueTypeI32, api.ValueTypeI64
	status := []api.ValueType{i32}
	return []Function{
		{Name: wire.FuncKVGet, Params: []api.ValueType{i32, i32, i32, i32, i32, i32, i32}, Results: status, Fn: p.get},
		{Name: wire.FuncKVPut, Params: []api.ValueType{i32, i32, i32, i32, i32, i32, i64, i64, i32}, Results: status, Fn: p.put},
		{Name: wire.FuncKVDelete, Params: []api.ValueType{i32, i32, i32, i32, i64, i32}, Results: status, Fn: p.delete},
		{Name: wire.FuncKVList, Params: []api.ValueType{i32, i32, i32, i32, i32, i32, i32, i32, i32, i32}, Results: status, Fn: p.list},
	}
}

// bucketKey decodes the (bucket, key) arguments every function but kv_list
// starts with.
func bucketKey(mem api.Memory, stack []uint64) (bucket, key string, code int32) {
	if bucket, code = stringArg(mem, stack[0], stack[1], wire.KVMaxBucketLen); code != CodeOK {
		return "", "", code
	}
	key, code = stringArg(mem, stack[2], stack[3], wire.KVMaxKeyLen)
	return bucket, key, code
}

// kv_get(bucket_ptr, bucket_len, key_ptr, key_len, buf_ptr, buf_cap, out_ptr) -> status
func (p KVProvider) get(ctx context.Context, call *capability.Caller, mod api.Module, stack []uint64) {
	stack[0] = api.EncodeI32(p.doGet(ctx, call, mod.Memory(), stack))
}

func (p KVProvider) doGet(ctx context.Context, call *capability.Caller, mem api.Memory, stack []uint64) int32 {
	bucket, key, code := bucketKey(mem, stack)
	if code != CodeOK {
		return code
	}
	bufPtr, bufCap, code := bufArg(mem, stack[4], stack[5])
	if code != CodeOK {
		return code
	}
	out, code := outArg(mem, stack[6], wire.KVGetOutSize)
	if code != CodeOK {
		return code
	}
	value, rev, err := p.Service.Get(ctx, call, bucket, key)
	if err != nil {
		return status(err)
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
func (p KVProvider) put(ctx context.Context, call *capability.Caller, mod api.Module, stack []uint64) {
	stack[0] = api.EncodeI32(p.doPut(ctx, call, mod.Memory(), stack))
}

func (p KVProvider) doPut(ctx context.Context, call *capability.Caller, mem api.Memory, stack []uint64) int32 {
	bucket, key, code := bucketKey(mem, stack)
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
	// value is a view into guest memory; the guest is blocked in this call,
	// and Put is done with it when it returns.
	rev, err := p.Service.Put(ctx, call, bucket, key, value, state.PutOptions{TTL: time.Duration(ttlMS) * time.Millisecond, IfRevision: ifRev})
	if err != nil {
		return failed(mem, out, err)
	}
	mem.WriteUint64Le(out, rev)
	return CodeOK
}

// kv_delete(bucket_ptr, bucket_len, key_ptr, key_len, if_revision i64, out_ptr) -> status
func (p KVProvider) delete(ctx context.Context, call *capability.Caller, mod api.Module, stack []uint64) {
	stack[0] = api.EncodeI32(p.doDelete(ctx, call, mod.Memory(), stack))
}

func (p KVProvider) doDelete(ctx context.Context, call *capability.Caller, mem api.Memory, stack []uint64) int32 {
	bucket, key, code := bucketKey(mem, stack)
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
	return failed(mem, out, p.Service.Delete(ctx, call, bucket, key, ifRev))
}

// kv_list(bucket_ptr, bucket_len, prefix_ptr, prefix_len, after_ptr, after_len, limit, buf_ptr, buf_cap, out_ptr) -> status
func (p KVProvider) list(ctx context.Context, call *capability.Caller, mod api.Module, stack []uint64) {
	stack[0] = api.EncodeI32(p.doList(ctx, call, mod.Memory(), stack))
}

func (p KVProvider) doList(ctx context.Context, call *capability.Caller, mem api.Memory, stack []uint64) int32 {
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
	bufPtr, bufCap, code := bufArg(mem, stack[7], stack[8])
	if code != CodeOK {
		return code
	}
	out, code := outArg(mem, stack[9], wire.KVListOutSize)
	if code != CodeOK {
		return code
	}
	keys, more, err := p.Service.List(ctx, call, bucket, prefix, after, int(limit))
	if err != nil {
		return status(err)
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

// failed returns err's status code; a revision mismatch also writes the
// key's current revision at out, as kv_put and kv_delete promise.
func failed(mem api.Memory, out uint32, err error) int32 {
	var mm *capability.RevisionMismatchError
	if errors.As(err, &mm) {
		mem.WriteUint64Le(out, mm.Current)
	}
	return status(err)
}
