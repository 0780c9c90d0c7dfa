package wasm

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/textproto"
	"time"

	"github.com/tetratelabs/wazero/api"

	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// maxHeaderOverhead is what an encoded SDK response may carry beyond its
// body (status, headers).
const maxHeaderOverhead = 256 << 10

// sdkInstance is one instantiated SDK reactor, serving requests in turn.
type sdkInstance struct {
	m      *module
	mod    api.Module
	alloc  api.Function
	handle api.Function
	mem    api.Memory
	memcap *cappedAllocator
	stdout *lineWriter
	stderr *lineWriter
	buf    []byte // reused request encoding buffer
	// reqPtr and reqCap are the request buffer the guest handed out, which
	// a guest exporting wire.ExportReuse lets the host write every request
	// that fits into, without calling nimbus_alloc.
	reqPtr, reqCap uint32
	broken         error
	closed         bool
}

// minRequestBuffer is the least the host asks nimbus_alloc for when the
// guest reuses its buffer: a usual request fits, so the guest is called
// once per request.
const minRequestBuffer = 4096

// newSDKInstance instantiates res, m's compiled code.
func (m *module) newSDKInstance(ctx context.Context, res *compiled) (*sdkInstance, error) {
	init := slogSink{r: m.rt, app: m.app, function: m.function}
	snap := m.snap.Load()
	memcap := &cappedAllocator{limit: m.limits.MemoryBytes, image: res.image}
	if snap != nil {
		memcap.image = snap.memory
	}
	i := &sdkInstance{
		m:      m,
		memcap: memcap,
		stdout: newLineWriter("stdout", init),
		stderr: newLineWriter("stderr", init),
	}
	cfg := m.moduleConfig().WithStdout(i.stdout).WithStderr(i.stderr)
	if m.initialize && snap == nil {
		cfg = cfg.WithStartFunctions("_initialize")
	}
	tctx, cancel := withDeadline(ctx, time.Now().Add(m.limits.Timeout))
	defer cancel()
	mod, err := m.instantiate(m.withCall(tctx, "", "", init), res.module, i.memcap, cfg)
	if err == nil && snap != nil {
		if err = snap.restore(m, mod); err != nil {
			mod.Close(ctx)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("new instance of %s/%s: %w", m.app, m.function, m.failure(ctx, err, i.memcap, i.stderr))
	}
	if snap == nil && m.snapOK {
		if s, err := m.capture(mod); err != nil {
			m.rt.logger.Warn("no snapshot: every instance runs _initialize", "app", m.app, "function", m.function, "error", err)
		} else if !m.snap.CompareAndSwap(nil, s) {
			s.memory.close() // another instance took it first
		}
	}
	i.mod = mod
	i.alloc = mod.ExportedFunction(wire.ExportAlloc)
	i.handle = mod.ExportedFunction(wire.ExportHandle)
	i.mem = mod.Memory()
	return i, nil
}

// Handle implements runtime.Instance.
func (i *sdkInstance) Handle(ctx context.Context, req *runtime.Request) (*runtime.Response, error) {
	if i.broken != nil {
		return nil, fmt.Errorf("instance of %s/%s is unusable after an earlier failure: %w", i.m.app, i.m.function, i.broken)
	}
	resp, err := i.serve(ctx, req)
	if err != nil {
		i.broken = err
	}
	return resp, err
}

func (i *sdkInstance) serve(ctx context.Context, req *runtime.Request) (*runtime.Response, error) {
	m := i.m
	i.buf = wire.EncodeRequest(i.buf[:0], &wire.Request{
		Method: req.Method, Path: req.Path, RawQuery: req.RawQuery, Host: req.Host,
		RemoteAddr: req.RemoteAddr, Route: req.Route, InvocationID: req.InvocationID,
		TraceParent: req.TraceParent, Header: req.Header, Params: req.Params, Body: req.Body,
	})
	i.stdout.reset(req.Log)
	i.stderr.reset(req.Log)
	defer runtime.FlushLog(req.Log) // after the last line of stdout and stderr
	defer i.stdout.flush()
	defer i.stderr.flush()
	i.memcap.refused.Store(false)

	tctx, cancel := withDeadline(ctx, time.Now().Add(m.limits.Timeout))
	defer cancel()
	cctx := m.withCall(tctx, req.InvocationID, req.TraceParent, req.Log)

	ptr, err := i.requestBuffer(ctx, cctx)
	if err != nil {
		return nil, err
	}
	if !i.mem.Write(ptr, i.buf) {
		return nil, guestFailed(fmt.Sprintf("%s returned a buffer at %d that does not fit %d bytes in its %d-byte memory", wire.ExportAlloc, ptr, len(i.buf), i.mem.Size()), "", nil)
	}
	res, err := i.handle.Call(cctx, uint64(ptr), uint64(len(i.buf)))
	if err != nil {
		return nil, m.failure(ctx, err, i.memcap, i.stderr)
	}
	rptr, rlen := uint32(res[0]>>32), uint32(res[0])
	if int64(rlen) > m.limits.MaxResponseBytes+maxHeaderOverhead {
		return nil, m.responseTooLarge()
	}
	raw, ok := i.mem.Read(rptr, rlen)
	if !ok {
		return nil, guestFailed(fmt.Sprintf("%s returned a response at [%d, %d+%d) outside its %d-byte memory", wire.ExportHandle, rptr, rptr, rlen, i.mem.Size()), "", nil)
	}
	// The strings are copies; the body aliases the guest's memory, which
	// the guest reuses on its next call: copied below.
	wr, err := wire.DecodeResponse(raw)
	if err != nil {
		return nil, guestFailed("undecodable response: "+err.Error(), "", err)
	}
	if wr.Error != "" {
		return nil, guestFailed(wr.Error, "", nil)
	}
	if int64(len(wr.Body)) > m.limits.MaxResponseBytes {
		return nil, m.responseTooLarge()
	}
	header, err := checkHeader(wr.Header)
	if err != nil {
		return nil, guestFailed(err.Error(), "", err)
	}
	return &runtime.Response{Status: wr.Status, Header: header, Body: bytes.Clone(wr.Body)}, nil
}

// requestBuffer returns where in the guest's memory the request i.buf goes:
// the buffer of an earlier call when the guest reuses it and it is large
// enough, otherwise a new one from nimbus_alloc.
func (i *sdkInstance) requestBuffer(parent, cctx context.Context) (uint32, error) {
	n := uint32(len(i.buf))
	if i.m.reuse && i.reqPtr != 0 && n <= i.reqCap {
		return i.reqPtr, nil
	}
	size := n
	if i.m.reuse {
		size = max(n, minRequestBuffer)
	}
	res, err := i.alloc.Call(cctx, uint64(size))
	if err != nil {
		return 0, i.m.failure(parent, err, i.memcap, i.stderr)
	}
	ptr := api.DecodeU32(res[0])
	if ptr == 0 && n > 0 {
		return 0, guestFailed(wire.ExportAlloc+" returned 0", i.stderr.reason(), nil)
	}
	if i.m.reuse {
		i.reqPtr, i.reqCap = ptr, size
	}
	return ptr, nil
}

// Close implements runtime.Instance.
func (i *sdkInstance) Close(ctx context.Context) error {
	if i.closed {
		return nil
	}
	i.closed = true
	err := i.mod.Close(ctx)
	i.memcap.release()
	i.m.rt.unuse(ctx, i.m.code)
	return err
}

// checkHeader canonicalizes a guest's headers and rejects names and values
// that could split or smuggle headers. A header whose names are all
// canonical already (the Go SDK's are) is returned as is.
func checkHeader(h map[string][]string) (http.Header, error) {
	canonical := true
	for k, vs := range h {
		if !validHeaderName(k) {
			return nil, fmt.Errorf("invalid response header name %q", truncate([]byte(k), 60))
		}
		for _, v := range vs {
			if !validHeaderValue(v) {
				return nil, fmt.Errorf("invalid value of response header %s", k)
			}
		}
		canonical = canonical && textproto.CanonicalMIMEHeaderKey(k) == k
	}
	if canonical && h != nil {
		return http.Header(h), nil
	}
	out := make(http.Header, len(h))
	for k, vs := range h {
		for _, v := range vs {
			out.Add(k, v)
		}
	}
	return out, nil
}
