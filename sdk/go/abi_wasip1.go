//go:build wasip1

package nimbus

import (
	"unsafe"
)

// The exports below are the wire.Export* names of ABI v1 (see package wire).

// The ABI's buffers. The host calls one export at a time, so plain variables
// suffice; they keep the memory the host reads or writes reachable (Go's GC
// does not move objects, so the addresses stay valid).
var (
	reqBuf  []byte // handed out by nimbus_alloc, read by nimbus_handle, reused
	respBuf []byte // the last encoded response, valid until the next call
)

// minRequestBuffer is the smallest request buffer nimbus_alloc hands out:
// a usual request fits, so the host writes every request into the same
// buffer without calling nimbus_alloc again (wire.ExportReuse).
const minRequestBuffer = 4096

//go:wasmexport nimbus_abi_v1
func abiV1() {}

// reuseRequestBuffer says that the buffer nimbus_alloc returns stays valid
// for later requests (wire.ExportReuse).
//
//go:wasmexport nimbus_reuse_request_buffer
func reuseRequestBuffer() {}

//go:wasmexport nimbus_alloc
func nimbusAlloc(size int32) uint32 {
	if size <= 0 {
		return 0
	}
	if int(size) > cap(reqBuf) {
		// A new array: nothing of the old one is referenced after a
		// request (the body reader aliases it only while it is served).
		reqBuf = make([]byte, max(int(size), minRequestBuffer))
	}
	reqBuf = reqBuf[:cap(reqBuf)]
	return addr(reqBuf)
}

//go:wasmexport nimbus_handle
func nimbusHandle(ptr uint32, size int32) uint64 {
	var in []byte
	if size > 0 && len(reqBuf) >= int(size) && ptr == addr(reqBuf) {
		in = reqBuf[:size]
	}
	if f := requestHandler.Load(); f != nil {
		respBuf = serveRequest(*f, in, keepSmall(respBuf))
	} else {
		respBuf = serve(registered(), in, keepSmall(respBuf))
	}
	if len(respBuf) == 0 {
		return 0
	}
	return uint64(addr(respBuf))<<32 | uint64(len(respBuf))
}

func addr(b []byte) uint32 {
	return uint32(uintptr(unsafe.Pointer(unsafe.SliceData(b))))
}

//go:wasmimport nimbus log
func nimbusLog(level int32, ptr unsafe.Pointer, size int32) int32

func hostLog(level int32, msg string) int32 {
	return nimbusLog(level, unsafe.Pointer(unsafe.StringData(msg)), int32(len(msg)))
}

// The kv host functions (see package wire). Strings and slices are passed as
// pointer and length; Go's garbage collector does not move objects, and the
// arguments stay reachable for the duration of the call.

//go:wasmimport nimbus kv_get
func kvGet(bucket unsafe.Pointer, bucketLen int32, key unsafe.Pointer, keyLen int32, buf unsafe.Pointer, bufCap int32, out unsafe.Pointer) int32

//go:wasmimport nimbus kv_put
func kvPut(bucket unsafe.Pointer, bucketLen int32, key unsafe.Pointer, keyLen int32, val unsafe.Pointer, valLen int32, ttlMS int64, ifRevision int64, out unsafe.Pointer) int32

//go:wasmimport nimbus kv_delete
func kvDelete(bucket unsafe.Pointer, bucketLen int32, key unsafe.Pointer, keyLen int32, ifRevision int64, out unsafe.Pointer) int32

//go:wasmimport nimbus kv_list
func kvList(bucket unsafe.Pointer, bucketLen int32, prefix unsafe.Pointer, prefixLen int32, after unsafe.Pointer, afterLen int32, limit int32, buf unsafe.Pointer, bufCap int32, out unsafe.Pointer) int32

func strPtr(s string) unsafe.Pointer { return unsafe.Pointer(unsafe.StringData(s)) }

func bytesPtr(b []byte) unsafe.Pointer { return unsafe.Pointer(unsafe.SliceData(b)) }

// clampLen passes lengths above the ABI's int32 as the largest int32: the
// host rejects them as too large instead of seeing a wrapped length.
func clampLen(n int) int32 { return int32(min(n, 1<<31-1)) }

func hostKVGet(bucket, key string, buf []byte, out *[12]byte) int32 {
	return kvGet(strPtr(bucket), clampLen(len(bucket)), strPtr(key), clampLen(len(key)), bytesPtr(buf), clampLen(len(buf)), unsafe.Pointer(out))
}

func hostKVPut(bucket, key string, value []byte, ttlMS, ifRevision int64, out *[8]byte) int32 {
	return kvPut(strPtr(bucket), clampLen(len(bucket)), strPtr(key), clampLen(len(key)), bytesPtr(value), clampLen(len(value)), ttlMS, ifRevision, unsafe.Pointer(out))
}

func hostKVDelete(bucket, key string, ifRevision int64, out *[8]byte) int32 {
	return kvDelete(strPtr(bucket), clampLen(len(bucket)), strPtr(key), clampLen(len(key)), ifRevision, unsafe.Pointer(out))
}

func hostKVList(bucket, prefix, after string, limit int32, buf []byte, out *[8]byte) int32 {
	return kvList(strPtr(bucket), clampLen(len(bucket)), strPtr(prefix), clampLen(len(prefix)), strPtr(after), clampLen(len(after)), limit, bytesPtr(buf), clampLen(len(buf)), unsafe.Pointer(out))
}

//go:wasmimport nimbus publish
func publish(topic unsafe.Pointer, topicLen int32, event unsafe.Pointer, eventLen int32, out unsafe.Pointer) int32

func hostPublish(topic string, event []byte, out *[8]byte) int32 {
	return publish(strPtr(topic), clampLen(len(topic)), bytesPtr(event), clampLen(len(event)), unsafe.Pointer(out))
}

// The workflow host functions (see package wire, section Workflows).

//go:wasmimport nimbus wf_step_begin
func wfStepBegin(pos int32, name unsafe.Pointer, nameLen int32, buf unsafe.Pointer, bufCap int32, out unsafe.Pointer) int32

//go:wasmimport nimbus wf_step_end
func wfStepEnd(pos int32, name unsafe.Pointer, nameLen int32, val unsafe.Pointer, valLen int32, flags int32, retryMS int64) int32

//go:wasmimport nimbus wf_sleep
func wfSleep(pos int32, untilMS int64) int32

//go:wasmimport nimbus wf_step_effects
func wfStepEffects(pos int32) int32

func hostStepEffects(pos int32) int32 { return wfStepEffects(pos) }

func hostStepBegin(pos int32, name string, buf []byte, out *[16]byte) int32 {
	return wfStepBegin(pos, strPtr(name), clampLen(len(name)), bytesPtr(buf), clampLen(len(buf)), unsafe.Pointer(out))
}

func hostStepEnd(pos int32, name string, val []byte, flags int32, retryMS int64) int32 {
	return wfStepEnd(pos, strPtr(name), clampLen(len(name)), bytesPtr(val), clampLen(len(val)), flags, retryMS)
}

func hostSleep(pos int32, untilMS int64) int32 { return wfSleep(pos, untilMS) }

// Outbound HTTP and secrets (see package wire).

//go:wasmimport nimbus fetch
func fetch(req unsafe.Pointer, reqLen int32, errBuf unsafe.Pointer, errCap int32, out unsafe.Pointer) int32

//go:wasmimport nimbus fetch_take
func fetchTake(handle uint32, buf unsafe.Pointer, bufCap int32, out unsafe.Pointer) int32

//go:wasmimport nimbus secret_get
func secretGet(name unsafe.Pointer, nameLen int32, buf unsafe.Pointer, bufCap int32, out unsafe.Pointer) int32

func hostFetch(req []byte, errBuf []byte, out *[12]byte) int32 {
	return fetch(bytesPtr(req), clampLen(len(req)), bytesPtr(errBuf), clampLen(len(errBuf)), unsafe.Pointer(out))
}

func hostFetchTake(handle uint32, buf []byte, out *[4]byte) int32 {
	return fetchTake(handle, bytesPtr(buf), clampLen(len(buf)), unsafe.Pointer(out))
}

func hostSecretGet(name string, buf []byte, out *[4]byte) int32 {
	return secretGet(strPtr(name), clampLen(len(name)), bytesPtr(buf), clampLen(len(buf)), unsafe.Pointer(out))
}

// The workflow wait (see package wire, section Workflows).

//go:wasmimport nimbus wf_wait
func wfWait(pos int32, name unsafe.Pointer, nameLen int32, timeoutMS int64, buf unsafe.Pointer, bufCap int32, out unsafe.Pointer) int32

func hostWait(pos int32, name string, timeoutMS int64, buf []byte, out *[8]byte) int32 {
	return wfWait(pos, strPtr(name), clampLen(len(name)), timeoutMS, bytesPtr(buf), clampLen(len(buf)), unsafe.Pointer(out))
}

//go:wasmimport nimbus wf_wait_topic
func wfWaitTopic(pos int32, spec unsafe.Pointer, specLen int32, timeoutMS int64, buf unsafe.Pointer, bufCap int32, out unsafe.Pointer) int32

func hostWaitTopic(pos int32, spec []byte, timeoutMS int64, buf []byte, out *[8]byte) int32 {
	return wfWaitTopic(pos, bytesPtr(spec), clampLen(len(spec)), timeoutMS, bytesPtr(buf), clampLen(len(buf)), unsafe.Pointer(out))
}

// Calling from a workflow (see package wire, section Calling).

//go:wasmimport nimbus wf_call
func wfCall(fn unsafe.Pointer, fnLen int32, body unsafe.Pointer, bodyLen int32, key unsafe.Pointer, keyLen int32, buf unsafe.Pointer, bufCap int32, out unsafe.Pointer) int32

//go:wasmimport nimbus wf_start_child
func wfStartChild(wf unsafe.Pointer, wfLen int32, input unsafe.Pointer, inputLen int32, buf unsafe.Pointer, bufCap int32, out unsafe.Pointer) int32

func hostCall(function string, body []byte, key string, buf []byte, out *[8]byte) int32 {
	return wfCall(strPtr(function), clampLen(len(function)), bytesPtr(body), clampLen(len(body)), strPtr(key), clampLen(len(key)), bytesPtr(buf), clampLen(len(buf)), unsafe.Pointer(out))
}

func hostStartChild(workflow string, input []byte, buf []byte, out *[4]byte) int32 {
	return wfStartChild(strPtr(workflow), clampLen(len(workflow)), bytesPtr(input), clampLen(len(input)), bytesPtr(buf), clampLen(len(buf)), unsafe.Pointer(out))
}
