package hostfn

import (
	"context"
	"net/http"
	"time"

	"github.com/tetratelabs/wazero/api"

	"github.com/nimbus-dev/nimbus/internal/capability"
	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// FetchProvider provides fetch and fetch_take (capability "http", scoped by
// host: "http:api.stripe.com"), which make one outbound HTTP request
// through Service and hand its response back. Their signatures are
// specified in sdk/go/wire.
type FetchProvider struct {
	Service *capability.FetchService
}

// Capability implements Provider.
func (FetchProvider) Capability() string { return capability.KindHTTP }

// Functions implements Provider.
func (p FetchProvider) Functions() []Function {
	i32 := api.ValueTypeI32
	return []Function{{
		Name:    wire.FuncFetch,
		Params:  []api.ValueType{i32, i32, i32, i32, i32},
		Results: []api.ValueType{i32},
		Fn:      p.fetch,
	}, {
		Name:    wire.FuncFetchTake,
		Params:  []api.ValueType{i32, i32, i32, i32},
		Results: []api.ValueType{i32},
		Fn:      p.take,
	}}
}

// fetch(req_ptr, req_len, err_ptr, err_cap, out_ptr) -> status
func (p FetchProvider) fetch(ctx context.Context, call *capability.Caller, mod api.Module, stack []uint64) {
	stack[0] = api.EncodeI32(p.doFetch(ctx, call, mod.Memory(), stack))
}

func (p FetchProvider) doFetch(ctx context.Context, call *capability.Caller, mem api.Memory, stack []uint64) int32 {
	raw, code := bytesArg(mem, stack[0], stack[1], wire.FetchMaxRequestLen)
	if code != CodeOK {
		return code
	}
	errPtr, errCap, code := bufArg(mem, stack[2], stack[3])
	if code != CodeOK {
		return code
	}
	out, code := outArg(mem, stack[4], wire.FetchOutSize)
	if code != CodeOK {
		return code
	}
	wr, err := wire.DecodeFetchRequest(raw)
	if err != nil {
		return CodeBadArgument
	}
	req := capability.FetchRequest{Method: wr.Method, URL: wr.URL, Header: http.Header(wr.Header),
		Body: wr.Body, MaxResponseBytes: int64(min(wr.MaxResponseBytes, 1<<62))}
	if wr.TimeoutMS > 0 {
		req.Timeout = time.Duration(min(wr.TimeoutMS, uint64(24*time.Hour/time.Millisecond))) * time.Millisecond
	}
	if req.Body != nil {
		req.Body = append([]byte(nil), req.Body...) // raw is a view into guest memory, which the guest may grow
	}
	resp, err := p.Service.Fetch(ctx, call, req)
	if err != nil {
		msg := err.Error()
		n := min(uint32(len(msg)), errCap)
		mem.Write(errPtr, []byte(msg[:n]))
		mem.WriteUint32Le(out, 0)
		mem.WriteUint32Le(out+4, 0)
		mem.WriteUint32Le(out+8, n)
		return status(err)
	}
	enc := wire.EncodeFetchResponse(nil, &wire.FetchResponse{Status: resp.Status, Header: resp.Header, Body: resp.Body})
	mem.WriteUint32Le(out, call.Keep(enc))
	mem.WriteUint32Le(out+4, uint32(len(enc)))
	mem.WriteUint32Le(out+8, 0)
	return CodeOK
}

// fetch_take(handle, buf_ptr, buf_cap, out_ptr) -> status
func (p FetchProvider) take(_ context.Context, call *capability.Caller, mod api.Module, stack []uint64) {
	stack[0] = api.EncodeI32(doTake(call, mod.Memory(), stack))
}

func doTake(call *capability.Caller, mem api.Memory, stack []uint64) int32 {
	h := api.DecodeU32(stack[0])
	buf, bufCap, code := bufArg(mem, stack[1], stack[2])
	if code != CodeOK {
		return code
	}
	out, code := outArg(mem, stack[3], wire.FetchTakeOutSize)
	if code != CodeOK {
		return code
	}
	if call == nil {
		return CodeDenied
	}
	v, ok := call.Peek(h)
	enc, isResp := v.([]byte)
	if !ok || !isResp {
		return wire.CodeNotFound
	}
	mem.WriteUint32Le(out, uint32(len(enc)))
	if uint32(len(enc)) > bufCap {
		return CodeTooLarge
	}
	mem.Write(buf, enc)
	call.Drop(h)
	return CodeOK
}

// SecretProvider provides secret_get (capability "secret", scoped per
// name: "secret:STRIPE_KEY"), which reads one secret of the calling app
// through Service. Its signature is specified in sdk/go/wire.
type SecretProvider struct {
	Service *capability.SecretService
}

// Capability implements Provider.
func (SecretProvider) Capability() string { return capability.KindSecret }

// Functions implements Provider.
func (p SecretProvider) Functions() []Function {
	i32 := api.ValueTypeI32
	return []Function{{
		Name:    wire.FuncSecretGet,
		Params:  []api.ValueType{i32, i32, i32, i32, i32},
		Results: []api.ValueType{i32},
		Fn:      p.get,
	}}
}

// secret_get(name_ptr, name_len, buf_ptr, buf_cap, out_ptr) -> status
func (p SecretProvider) get(ctx context.Context, call *capability.Caller, mod api.Module, stack []uint64) {
	stack[0] = api.EncodeI32(p.doGet(ctx, call, mod.Memory(), stack))
}

func (p SecretProvider) doGet(ctx context.Context, call *capability.Caller, mem api.Memory, stack []uint64) int32 {
	name, code := stringArg(mem, stack[0], stack[1], wire.SecretMaxNameLen)
	if code != CodeOK {
		return code
	}
	buf, bufCap, code := bufArg(mem, stack[2], stack[3])
	if code != CodeOK {
		return code
	}
	out, code := outArg(mem, stack[4], wire.SecretOutSize)
	if code != CodeOK {
		return code
	}
	v, err := p.Service.Get(ctx, call, name)
	if err != nil {
		return status(err)
	}
	mem.WriteUint32Le(out, uint32(len(v)))
	if uint32(len(v)) > bufCap {
		clear(v)
		return CodeTooLarge
	}
	mem.Write(buf, v)
	clear(v) // the guest has its copy; do not leave one in the host's heap longer than needed
	return CodeOK
}
