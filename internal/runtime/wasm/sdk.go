package wasm

import (
	"bytes"
	"context"
	"fmt"
	"net/http"

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
	broken error
}

func (m *module) newSDKInstance(ctx context.Context) (*sdkInstance, error) {
	init := slogSink{r: m.rt, app: m.app, function: m.function}
	i := &sdkInstance{
		m:      m,
		memcap: &cappedAllocator{limit: m.limits.MemoryBytes},
		stdout: newLineWriter("stdout", init),
		stderr: newLineWriter("stderr", init),
	}
	cfg := m.moduleConfig().WithStdout(i.stdout).WithStderr(i.stderr)
	if m.initialize {
		cfg = cfg.WithStartFunctions("_initialize")
	}
	tctx, cancel := context.WithTimeout(ctx, m.limits.Timeout)
	defer cancel()
	mod, err := m.instantiate(m.withCall(tctx, "", "", init), i.memcap, cfg)
	if err != nil {
		return nil, fmt.Errorf("new instance of %s/%s: %w", m.app, m.function, m.failure(ctx, err, i.memcap, i.stderr))
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

	tctx, cancel := context.WithTimeout(ctx, m.limits.Timeout)
	defer cancel()
	cctx := m.withCall(tctx, req.InvocationID, req.TraceParent, req.Log)

	res, err := i.alloc.Call(cctx, uint64(len(i.buf)))
	if err != nil {
		return nil, m.failure(ctx, err, i.memcap, i.stderr)
	}
	ptr := api.DecodeU32(res[0])
	if ptr == 0 && len(i.buf) > 0 {
		return nil, guestFailed(wire.ExportAlloc+" returned 0", i.stderr.reason(), nil)
	}
	if !i.mem.Write(ptr, i.buf) {
		return nil, guestFailed(fmt.Sprintf("%s returned a buffer at %d that does not fit %d bytes in its %d-byte memory", wire.ExportAlloc, ptr, len(i.buf), i.mem.Size()), "", nil)
	}
	res, err = i.handle.Call(cctx, uint64(ptr), uint64(len(i.buf)))
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
	// Copy out: the guest reuses that memory on its next call.
	wr, err := wire.DecodeResponse(bytes.Clone(raw))
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
	return &runtime.Response{Status: wr.Status, Header: header, Body: wr.Body}, nil
}

// Close implements runtime.Instance.
func (i *sdkInstance) Close(ctx context.Context) error {
	return i.mod.Close(ctx)
}

// checkHeader canonicalizes a guest's headers and rejects names and values
// that could split or smuggle headers.
func checkHeader(h map[string][]string) (http.Header, error) {
	out := make(http.Header, len(h))
	for k, vs := range h {
		if !validHeaderName(k) {
			return nil, fmt.Errorf("invalid response header name %q", truncate([]byte(k), 60))
		}
		for _, v := range vs {
			if !validHeaderValue(v) {
				return nil, fmt.Errorf("invalid value of response header %s", k)
			}
			out.Add(k, v)
		}
	}
	return out, nil
}
