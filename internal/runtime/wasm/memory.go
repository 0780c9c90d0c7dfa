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
// prefill, when set, is a snapshot's memory: the memory starts as a copy of
// it (one copy, without clearing it first), of which instantiation
// exposes the initial pages and restore grows it to the rest.
type cappedAllocator struct {
	limit   uint64
	refused atomic.Bool
	prefill []byte
	// prefilled is set when Allocate used prefill.
	prefilled bool
}

func (a *cappedAllocator) Allocate(capacity, _ uint64) experimental.LinearMemory {
	if a.prefill != nil && uint64(len(a.prefill)) <= a.limit && capacity <= uint64(len(a.prefill)) {
		// append copies into memory it does not clear first.
		a.prefilled = true
		return &linearMemory{a: a, buf: append([]byte(nil), a.prefill...)[:0]}
	}
	return &linearMemory{a: a, buf: make([]byte, 0, min(capacity, a.limit))}
}

type linearMemory struct {
	a   *cappedAllocator
	buf []byte
}

// Reallocate grows the memory to size bytes, keeping its contents; it
// returns nil (memory.grow returns -1 to the guest) past the limit.
func (m *linearMemory) Reallocate(size uint64) []byte {
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

func (m *linearMemory) Free() { m.buf = nil }
