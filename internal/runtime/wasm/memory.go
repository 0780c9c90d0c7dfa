package wasm

import (
	"sync/atomic"

	"github.com/tetratelabs/wazero/experimental"
)

// cappedAllocator backs one instance's linear memory and refuses to grow it
// past limit. Refusing here, rather than with wazero's per-runtime
// WithMemoryLimitPages, gives two things: one wazero runtime serves modules
// of every memory limit, and a refused grow is recorded precisely, so a
// guest that dies after memory.grow failed (Go prints "out of memory" and
// exits 2; other guests trap) is reported as ErrMemoryLimit and not as a
// generic failure.
//
// image, when set, is what the memory starts as: the module's data
// segments (moved out of the module at Load) or a post-init snapshot. On
// Linux the memory is a private mapping reserved up to the limit at once,
// with the image mapped copy-on-write over its start, so that an instance
// costs what it writes, not its size, and growing never copies
// (memory_linux.go); elsewhere it is a Go slice the image is copied into.
type cappedAllocator struct {
	limit   uint64
	image   *memImage
	refused atomic.Bool
	mem     linearMemory
}

// Allocate implements experimental.MemoryAllocator. wazero calls it once
// per instantiation, with the module's initial size as capacity.
func (a *cappedAllocator) Allocate(capacity, max uint64) experimental.LinearMemory {
	a.mem = newLinearMemory(a, capacity, min(max, a.limit))
	return a.mem
}

// release frees the memory, if Allocate made one, for the paths where
// wazero does not (an instantiation that failed after allocating). It is
// idempotent, like linearMemory.Free.
func (a *cappedAllocator) release() {
	if a.mem != nil {
		a.mem.Free()
	}
}

// linearMemory is experimental.LinearMemory with Free idempotent.
type linearMemory interface {
	experimental.LinearMemory
}

// heapMemory is a linear memory in the Go heap.
type heapMemory struct {
	a    *cappedAllocator
	buf  []byte
	dead bool
}

func newHeapMemory(a *cappedAllocator, capacity uint64) *heapMemory {
	size := uint64(a.image.len())
	if size > a.limit {
		return &heapMemory{a: a, dead: true} // fails the instantiation
	}
	buf := make([]byte, max(capacity, size), max(min(capacity, a.limit), size))
	if !a.image.copyTo(buf) {
		// The image is gone (its module closed): no memory, which fails
		// the instantiation.
		return &heapMemory{a: a, dead: true}
	}
	return &heapMemory{a: a, buf: buf[:0]}
}

// Reallocate grows the memory to size bytes, keeping its contents; it
// returns nil (memory.grow returns -1 to the guest) past the limit.
func (m *heapMemory) Reallocate(size uint64) []byte {
	if m.dead {
		return nil
	}
	if size > m.a.limit {
		m.a.refused.Store(true)
		return nil
	}
	if size <= uint64(cap(m.buf)) {
		m.buf = m.buf[:size]
		return m.buf
	}
	// Grow geometrically, as append does, but never past the limit.
	newCap := max(size, min(2*uint64(cap(m.buf)), m.a.limit))
	buf := make([]byte, size, newCap)
	copy(buf, m.buf)
	m.buf = buf
	return m.buf
}

func (m *heapMemory) Free() { m.buf = nil }
