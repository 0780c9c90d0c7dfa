package hostfn

import (
	"context"

	"github.com/tetratelabs/wazero/api"

	"github.com/nimbus-dev/nimbus/internal/capability"
	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// The ABI's log levels are the service's.
var (
	_ = [1]struct{}{}[wire.LevelDebug-int32(capability.LevelDebug)]
	_ = [1]struct{}{}[wire.LevelError-int32(capability.LevelError)]
)

// LogProvider provides nimbus.log(level i32, ptr i32, len i32) -> i32, which
// writes one line to the invocation's log (stream "log") through Service.
type LogProvider struct {
	Service *capability.LogService
}

// Capability implements Provider.
func (LogProvider) Capability() string { return capability.KindLog }

// Functions implements Provider.
func (p LogProvider) Functions() []Function {
	i32 := api.ValueTypeI32
	return []Function{{
		Name:    "log",
		Params:  []api.ValueType{i32, i32, i32},
		Results: []api.ValueType{i32},
		Fn:      p.log,
	}}
}

func (p LogProvider) log(_ context.Context, call *capability.Caller, mod api.Module, stack []uint64) {
	stack[0] = api.EncodeI32(p.doLog(call, mod.Memory(), stack))
}

func (p LogProvider) doLog(call *capability.Caller, mem api.Memory, stack []uint64) int32 {
	level := api.DecodeI32(stack[0])
	ptr, n, code := bufArg(mem, stack[1], stack[2])
	if code != CodeOK {
		return code
	}
	msg, _ := mem.Read(ptr, n) // in range: checked above; Log copies what it keeps
	return status(p.Service.Log(call, capability.Level(level), msg))
}
