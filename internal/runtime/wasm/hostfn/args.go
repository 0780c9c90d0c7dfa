package hostfn

import (
	"github.com/tetratelabs/wazero/api"

	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// The decoders below read a host function's arguments out of the stack and
// the guest's memory. Every pointer and length is hostile: an area outside
// memory is CodeBadArgument, never a host panic, and nothing is read past
// what the guest named.

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

// bufArg checks that the buffer (ptr, n) the host may fill lies in memory.
func bufArg(mem api.Memory, ptr, n uint64) (uint32, uint32, int32) {
	p, l := api.DecodeU32(ptr), api.DecodeU32(n)
	if mem == nil || uint64(p)+uint64(l) > uint64(mem.Size()) {
		return 0, 0, CodeBadArgument
	}
	return p, l, CodeOK
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
