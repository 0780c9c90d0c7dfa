package hostfn

import (
	"context"

	"github.com/tetratelabs/wazero/api"

	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// DefaultMaxLogBytes caps one log message; longer messages are truncated.
const DefaultMaxLogBytes = 8 << 10

// LogProvider provides nimbus.log(level i32, ptr i32, len i32) -> i32, which
// writes one line to the invocation's log (stream "log").
type LogProvider struct {
	// MaxBytes caps a message. Optional: default DefaultMaxLogBytes.
	MaxBytes int
}

var levelNames = [...]string{wire.LevelDebug: "debug", wire.LevelInfo: "info", wire.LevelWarn: "warn", wire.LevelError: "error"}

// Capability implements Provider.
func (LogProvider) Capability() string { return CapLog }

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

const truncatedMark = " …(truncated)"

func (p LogProvider) log(_ context.Context, call *Call, mod api.Module, stack []uint64) {
	level := api.DecodeI32(stack[0])
	ptr, n := api.DecodeU32(stack[1]), api.DecodeU32(stack[2])
	stack[0] = api.EncodeI32(p.write(call, mod, level, ptr, n))
}

func (p LogProvider) write(call *Call, mod api.Module, level int32, ptr, n uint32) int32 {
	if level < 0 || int(level) >= len(levelNames) {
		return CodeBadArgument
	}
	mem := mod.Memory()
	if mem == nil || uint64(ptr)+uint64(n) > uint64(mem.Size()) {
		return CodeBadArgument
	}
	limit := p.MaxBytes
	if limit <= 0 {
		limit = DefaultMaxLogBytes
	}
	read := n
	if read > uint32(limit) {
		read = uint32(limit)
	}
	b, ok := mem.Read(ptr, read)
	if !ok {
		return CodeBadArgument
	}
	line := make([]byte, len(b), len(b)+len(truncatedMark))
	copy(line, b) // the guest's memory changes after we return
	if read < n {
		line = append(line, truncatedMark...)
	}
	if call.Sink != nil {
		call.Sink.Log("log", levelNames[level], line)
	}
	return CodeOK
}
