package hostfn

import (
	"context"
	"errors"
	"time"

	"github.com/tetratelabs/wazero/api"

	"github.com/nimbus-dev/nimbus/internal/capability"
	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// CapabilityWorkflow names the workflow host functions' provider. It is
// not a grant: the service lets exactly the activations of workflow runs
// call them.
const CapabilityWorkflow = "workflow"

// WorkflowProvider provides wf_step_begin, wf_step_end, wf_step_effects,
// wf_sleep, wf_wait, wf_wait_topic, wf_call and wf_start_child over
// Service. Their signatures are specified in sdk/go/wire.
type WorkflowProvider struct {
	Service *capability.WorkflowService
}

// Capability implements Provider.
func (WorkflowProvider) Capability() string { return CapabilityWorkflow }

// Functions implements Provider.
func (p WorkflowProvider) Functions() []Function {
	i32, i64 := api.ValueTypeI32, api.ValueTypeI64
	return []Function{
		{Name: wire.FuncStepBegin, Params: []api.ValueType{i32, i32, i32, i32, i32, i32}, Results: []api.ValueType{i32},
			Fn: func(ctx context.Context, call *capability.Caller, mod api.Module, stack []uint64) {
				stack[0] = api.EncodeI32(p.stepBegin(ctx, call, mod.Memory(), stack))
			}},
		{Name: wire.FuncStepEnd, Params: []api.ValueType{i32, i32, i32, i32, i32, i32, i64}, Results: []api.ValueType{i32},
			Fn: func(ctx context.Context, call *capability.Caller, mod api.Module, stack []uint64) {
				stack[0] = api.EncodeI32(p.stepEnd(ctx, call, mod.Memory(), stack))
			}},
		{Name: wire.FuncStepEffects, Params: []api.ValueType{i32}, Results: []api.ValueType{i32},
			Fn: func(ctx context.Context, call *capability.Caller, mod api.Module, stack []uint64) {
				pos, code := posArg(stack[0])
				if code == CodeOK {
					code = wfStatus(p.Service.JournalEffects(call, pos))
				}
				stack[0] = api.EncodeI32(code)
			}},
		{Name: wire.FuncSleep, Params: []api.ValueType{i32, i64}, Results: []api.ValueType{i32},
			Fn: func(ctx context.Context, call *capability.Caller, mod api.Module, stack []uint64) {
				stack[0] = api.EncodeI32(p.sleep(ctx, call, stack))
			}},
		{Name: wire.FuncWait, Params: []api.ValueType{i32, i32, i32, i64, i32, i32, i32}, Results: []api.ValueType{i32},
			Fn: func(ctx context.Context, call *capability.Caller, mod api.Module, stack []uint64) {
				stack[0] = api.EncodeI32(p.wait(ctx, call, mod.Memory(), stack))
			}},
		{Name: wire.FuncWaitTopic, Params: []api.ValueType{i32, i32, i32, i64, i32, i32, i32}, Results: []api.ValueType{i32},
			Fn: func(ctx context.Context, call *capability.Caller, mod api.Module, stack []uint64) {
				stack[0] = api.EncodeI32(p.waitTopic(ctx, call, mod.Memory(), stack))
			}},
		{Name: wire.FuncCall, Params: []api.ValueType{i32, i32, i32, i32, i32, i32, i32, i32, i32}, Results: []api.ValueType{i32},
			Fn: func(ctx context.Context, call *capability.Caller, mod api.Module, stack []uint64) {
				stack[0] = api.EncodeI32(p.call(ctx, call, mod.Memory(), stack))
			}},
		{Name: wire.FuncStartChild, Params: []api.ValueType{i32, i32, i32, i32, i32, i32, i32}, Results: []api.ValueType{i32},
			Fn: func(ctx context.Context, call *capability.Caller, mod api.Module, stack []uint64) {
				stack[0] = api.EncodeI32(p.startChild(ctx, call, mod.Memory(), stack))
			}},
	}
}

// wfStatus is status with the workflow service's own errors.
func wfStatus(err error) int32 {
	switch {
	case errors.Is(err, capability.ErrSuspended):
		return wire.CodeSuspend
	case errors.Is(err, capability.ErrNonDeterminism):
		return wire.CodeNonDeterminism
	case errors.Is(err, capability.ErrNoRun):
		return wire.CodeNoRun
	case errors.Is(err, capability.ErrCancelled):
		return wire.CodeCancelled
	}
	return status(err)
}

// posArg decodes a position: a non-negative i32.
func posArg(v uint64) (int, int32) {
	p := int32(api.DecodeI32(v))
	if p < 0 {
		return 0, CodeBadArgument
	}
	return int(p), CodeOK
}

// wf_step_begin(pos, name_ptr, name_len, buf_ptr, buf_cap, out_ptr) -> status
func (p WorkflowProvider) stepBegin(ctx context.Context, call *capability.Caller, mem api.Memory, stack []uint64) int32 {
	pos, code := posArg(stack[0])
	if code != CodeOK {
		return code
	}
	name, code := stringArg(mem, stack[1], stack[2], wire.StepMaxNameLen)
	if code != CodeOK {
		return code
	}
	buf, bufCap, code := bufArg(mem, stack[3], stack[4])
	if code != CodeOK {
		return code
	}
	out, code := outArg(mem, stack[5], wire.StepBeginOutSize)
	if code != CodeOK {
		return code
	}
	ans, err := p.Service.StepBegin(ctx, call, pos, name)
	if err != nil {
		return wfStatus(err)
	}
	var flags uint32
	if ans.Failed {
		flags = wire.StepFailed
	}
	mem.WriteUint32Le(out, uint32(len(ans.Result)))
	mem.WriteUint32Le(out+4, flags)
	mem.WriteUint32Le(out+8, uint32(ans.Attempt))
	mem.WriteUint32Le(out+12, 0)
	if !ans.Replay {
		return wire.CodeRunStep
	}
	if uint64(len(ans.Result)) > uint64(bufCap) {
		// The guest asks again with a larger buffer (the engine answers a
		// replayed position again).
		return CodeTooLarge
	}
	mem.Write(buf, ans.Result)
	return CodeOK
}

// wf_step_end(pos, name_ptr, name_len, val_ptr, val_len, flags, retry_ms) -> status
func (p WorkflowProvider) stepEnd(ctx context.Context, call *capability.Caller, mem api.Memory, stack []uint64) int32 {
	pos, code := posArg(stack[0])
	if code != CodeOK {
		return code
	}
	name, code := stringArg(mem, stack[1], stack[2], wire.StepMaxNameLen)
	if code != CodeOK {
		return code
	}
	val, code := bytesArg(mem, stack[3], stack[4], wire.StepMaxResultLen)
	if code != CodeOK {
		return code
	}
	flags := api.DecodeU32(stack[5])
	failed := flags&wire.StepFailed != 0
	retry := time.Duration(-1)
	if ms := int64(stack[6]); failed && flags&wire.StepNonRetryable == 0 && ms >= 0 {
		retry = time.Duration(min(ms, int64(365*24*time.Hour/time.Millisecond))) * time.Millisecond
	}
	// val is a view into guest memory: the service copies what it keeps.
	again, err := p.Service.StepEnd(ctx, call, pos, name, append([]byte(nil), val...), failed, retry)
	if err != nil {
		return wfStatus(err)
	}
	if again {
		return wire.CodeRunStep
	}
	return CodeOK
}

// wf_sleep(pos, until_ms) -> status
func (p WorkflowProvider) sleep(ctx context.Context, call *capability.Caller, stack []uint64) int32 {
	pos, code := posArg(stack[0])
	if code != CodeOK {
		return code
	}
	until := time.UnixMilli(int64(stack[1]))
	return wfStatus(p.Service.Sleep(ctx, call, pos, until))
}

// wf_wait(pos, name_ptr, name_len, timeout_ms, buf_ptr, buf_cap, out_ptr) -> status
func (p WorkflowProvider) wait(ctx context.Context, call *capability.Caller, mem api.Memory, stack []uint64) int32 {
	pos, code := posArg(stack[0])
	if code != CodeOK {
		return code
	}
	name, code := stringArg(mem, stack[1], stack[2], wire.StepMaxNameLen)
	if code != CodeOK {
		return code
	}
	var timeout time.Duration
	if ms := int64(stack[3]); ms > 0 {
		timeout = time.Duration(min(ms, int64(10*365*24*time.Hour/time.Millisecond))) * time.Millisecond
	}
	buf, bufCap, code := bufArg(mem, stack[4], stack[5])
	if code != CodeOK {
		return code
	}
	out, code := outArg(mem, stack[6], wire.WaitOutSize)
	if code != CodeOK {
		return code
	}
	ans, err := p.Service.WaitSignal(ctx, call, pos, name, timeout)
	return waitOut(mem, ans.Payload, ans.TimedOut, err, buf, bufCap, out)
}

// wf_wait_topic(pos, spec_ptr, spec_len, timeout_ms, buf_ptr, buf_cap, out_ptr) -> status
func (p WorkflowProvider) waitTopic(ctx context.Context, call *capability.Caller, mem api.Memory, stack []uint64) int32 {
	pos, code := posArg(stack[0])
	if code != CodeOK {
		return code
	}
	spec, code := bytesArg(mem, stack[1], stack[2], wire.MaxTopicSpecLen)
	if code != CodeOK {
		return code
	}
	var timeout time.Duration
	if ms := int64(stack[3]); ms > 0 {
		timeout = time.Duration(min(ms, int64(10*365*24*time.Hour/time.Millisecond))) * time.Millisecond
	}
	buf, bufCap, code := bufArg(mem, stack[4], stack[5])
	if code != CodeOK {
		return code
	}
	out, code := outArg(mem, stack[6], wire.WaitOutSize)
	if code != CodeOK {
		return code
	}
	ans, err := p.Service.WaitTopic(ctx, call, pos, spec, timeout)
	return waitOut(mem, ans.Payload, ans.TimedOut, err, buf, bufCap, out)
}

// waitOut answers a wait: its status, and its outcome in out and buf.
func waitOut(mem api.Memory, payload []byte, timedOut bool, err error, buf, bufCap, out uint32) int32 {
	if err != nil {
		return wfStatus(err)
	}
	var flags uint32
	if timedOut {
		flags = wire.WaitTimedOut
	}
	mem.WriteUint32Le(out, uint32(len(payload)))
	mem.WriteUint32Le(out+4, flags)
	if uint64(len(payload)) > uint64(bufCap) {
		return CodeTooLarge // asked again with a larger buffer
	}
	mem.Write(buf, payload)
	return CodeOK
}

// wf_call(fn_ptr, fn_len, body_ptr, body_len, key_ptr, key_len, buf_ptr, buf_cap, out_ptr) -> status
func (p WorkflowProvider) call(ctx context.Context, call *capability.Caller, mem api.Memory, stack []uint64) int32 {
	function, code := stringArg(mem, stack[0], stack[1], wire.StepMaxNameLen)
	if code != CodeOK {
		return code
	}
	body, code := bytesArg(mem, stack[2], stack[3], wire.MaxCallLen)
	if code != CodeOK {
		return code
	}
	key, code := stringArg(mem, stack[4], stack[5], 1024)
	if code != CodeOK {
		return code
	}
	buf, bufCap, code := bufArg(mem, stack[6], stack[7])
	if code != CodeOK {
		return code
	}
	out, code := outArg(mem, stack[8], wire.CallOutSize)
	if code != CodeOK {
		return code
	}
	// body is a view into guest memory, which the callee's invocation
	// does not touch; the engine passes it on before this returns.
	ans, err := p.Service.Call(ctx, call, function, append([]byte(nil), body...), key)
	if err != nil {
		return wfStatus(err)
	}
	mem.WriteUint32Le(out, uint32(len(ans.Body)))
	mem.WriteUint32Le(out+4, uint32(ans.Status))
	if uint64(len(ans.Body)) > uint64(bufCap) {
		return CodeTooLarge // asked again with a larger buffer: the answer is kept
	}
	mem.Write(buf, ans.Body)
	p.Service.TookCall(call)
	return CodeOK
}

// wf_start_child(wf_ptr, wf_len, input_ptr, input_len, buf_ptr, buf_cap, out_ptr) -> status
func (p WorkflowProvider) startChild(ctx context.Context, call *capability.Caller, mem api.Memory, stack []uint64) int32 {
	name, code := stringArg(mem, stack[0], stack[1], wire.StepMaxNameLen)
	if code != CodeOK {
		return code
	}
	input, code := bytesArg(mem, stack[2], stack[3], wire.MaxCallLen)
	if code != CodeOK {
		return code
	}
	buf, bufCap, code := bufArg(mem, stack[4], stack[5])
	if code != CodeOK {
		return code
	}
	out, code := outArg(mem, stack[6], wire.StartChildOutSize)
	if code != CodeOK {
		return code
	}
	id, err := p.Service.StartChild(ctx, call, name, append([]byte(nil), input...))
	if err != nil {
		return wfStatus(err)
	}
	mem.WriteUint32Le(out, uint32(len(id)))
	if uint64(len(id)) > uint64(bufCap) {
		return CodeTooLarge // starting again answers the same id
	}
	mem.Write(buf, []byte(id))
	return CodeOK
}
