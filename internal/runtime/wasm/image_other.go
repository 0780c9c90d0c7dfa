//go:build !linux

package wasm

// imageFile is never created off Linux: images are copied from bytes.
type imageFile struct{}

func (*imageFile) ok() bool                       { return false }
func (*imageFile) create(*memImage, []byte) error { return nil }
func (*imageFile) read(int) []byte                { return nil }
func (*imageFile) close()                         {}

func newLinearMemory(a *cappedAllocator, capacity, _ uint64) linearMemory {
	return newHeapMemory(a, capacity)
}
