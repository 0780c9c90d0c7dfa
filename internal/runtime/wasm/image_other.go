//go:build !linux

package wasm

import "github.com/nimbus-dev/nimbus/internal/runtime/wasm/wasmrw"

// imageFile is never created off Linux: images are copied from bytes.
type imageFile struct{}

func (*imageFile) ok() bool                                 { return false }
func (*imageFile) create(*memImage, []wasmrw.Segment) error { return nil }
func (*imageFile) read([]byte) bool                         { return false }
func (*imageFile) close()                                   {}

func newLinearMemory(a *cappedAllocator, capacity, _ uint64) linearMemory {
	return newHeapMemory(a, capacity)
}
