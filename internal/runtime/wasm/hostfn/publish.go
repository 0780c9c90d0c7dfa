package hostfn

import (
	"context"

	"github.com/tetratelabs/wazero/api"

	"github.com/nimbus-dev/nimbus/internal/capability"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// The guest ABI and the registry agree on the dead-letter topic's name.
var _ = [1]struct{}{}[len(wire.DeadLetterTopic)-len(model.DeadLetterTopic)]

// PublishProvider provides publish (capability "publish", scoped per topic:
// "publish:orders"), which appends one CloudEvent to a topic of the calling
// app through Service. Its signature is specified in sdk/go/wire.
type PublishProvider struct {
	Service *capability.PublishService
}

// Capability implements Provider.
func (PublishProvider) Capability() string { return capability.KindPublish }

// Functions implements Provider.
func (p PublishProvider) Functions() []Function {
	i32 := api.ValueTypeI32
	return []Function{{
		Name:    wire.FuncPublish,
		Params:  []api.ValueType{i32, i32, i32, i32, i32},
		Results: []api.ValueType{i32},
		Fn:      p.publish,
	}}
}

// publish(topic_ptr, topic_len, event_ptr, event_len, out_ptr) -> status
func (p PublishProvider) publish(ctx context.Context, call *capability.Caller, mod api.Module, stack []uint64) {
	stack[0] = api.EncodeI32(p.doPublish(ctx, call, mod.Memory(), stack))
}

func (p PublishProvider) doPublish(ctx context.Context, call *capability.Caller, mem api.Memory, stack []uint64) int32 {
	topic, code := stringArg(mem, stack[0], stack[1], wire.PublishMaxTopicLen)
	if code != CodeOK {
		return code
	}
	raw, code := bytesArg(mem, stack[2], stack[3], wire.PublishMaxEventLen)
	if code != CodeOK {
		return code
	}
	out, code := outArg(mem, stack[4], wire.PublishOutSize)
	if code != CodeOK {
		return code
	}
	// raw is a view into guest memory; Publish decodes (copies) it.
	dup, err := p.Service.Publish(ctx, call, topic, raw)
	if err != nil {
		return status(err)
	}
	var flags uint32
	if dup {
		flags = wire.PublishDuplicate
	}
	mem.WriteUint32Le(out, flags)
	mem.WriteUint32Le(out+4, 0)
	return CodeOK
}
