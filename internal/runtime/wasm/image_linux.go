//go:build linux

package wasm

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/nimbus-dev/nimbus/internal/runtime/wasm/wasmrw"
)

var hostPage = os.Getpagesize()

func roundUpPage(n uint64) uint64 {
	p := uint64(hostPage)
	return (n + p - 1) / p * p
}

// imageFile is a sealed memfd holding an image, its size rounded up to
// whole host pages so that a mapping of it never reaches past its end.
// Pages of zeros are never written: they stay holes, which cost nothing
// and map the kernel's zero page until an instance writes to them.
type imageFile struct {
	box *fdBox
}

// fdBox owns the file descriptor; it is closed once, by close or by the
// cleanup of the image that became garbage.
type fdBox struct {
	mu     sync.Mutex
	fd     int // -1 once closed
	mapLen uint64
}

func (b *fdBox) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fd >= 0 {
		unix.Close(b.fd)
		b.fd = -1
	}
}

func (f *imageFile) ok() bool { return f.box != nil }

func (f *imageFile) create(im *memImage, segs []wasmrw.Segment) error {
	fd, err := unix.MemfdCreate("nimbus-wasm-image", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return fmt.Errorf("memfd_create: %w", err)
	}
	n := roundUpPage(uint64(im.size))
	if err := unix.Ftruncate(fd, int64(n)); err != nil {
		unix.Close(fd)
		return fmt.Errorf("ftruncate image: %w", err)
	}
	zero := make([]byte, hostPage)
	for _, s := range segs {
		// In chunks that end on page boundaries, skipping chunks of zeros.
		for off := int(s.Offset); off < int(s.Offset)+len(s.Data); {
			end := min((off/hostPage+1)*hostPage, int(s.Offset)+len(s.Data))
			chunk := s.Data[off-int(s.Offset) : end-int(s.Offset)]
			if !bytes.Equal(chunk, zero[:len(chunk)]) {
				if err := pwriteAll(fd, chunk, off); err != nil {
					unix.Close(fd)
					return err
				}
			}
			off = end
		}
	}
	// Sealed, the file cannot change under the instances mapping it.
	_, _ = unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SEAL|unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_WRITE)
	f.box = &fdBox{fd: fd, mapLen: n}
	runtime.AddCleanup(im, (*fdBox).close, f.box)
	return nil
}

func pwriteAll(fd int, b []byte, off int) error {
	for len(b) > 0 {
		n, err := unix.Pwrite(fd, b, int64(off))
		if err != nil {
			return fmt.Errorf("write image: %w", err)
		}
		b, off = b[n:], off+n
	}
	return nil
}

// read fills dst from the file's start; it returns false once the file is
// closed.
func (f *imageFile) read(dst []byte) bool {
	f.box.mu.Lock()
	defer f.box.mu.Unlock()
	if f.box.fd < 0 {
		return false
	}
	for off := 0; off < len(dst); {
		n, err := unix.Pread(f.box.fd, dst[off:], int64(off))
		if err != nil || n == 0 {
			return false
		}
		off += n
	}
	return true
}

func (f *imageFile) close() {
	if f.box != nil {
		f.box.close()
	}
}

// mmapMemory is a linear memory in a private anonymous mapping of the
// whole allowed size (reserved address space, MAP_NORESERVE: pages cost
// memory only once written), with the image mapped copy-on-write over its
// start. Growing only lengthens the slice.
type mmapMemory struct {
	a    *cappedAllocator
	reg  *region
	size uint64
}

type region struct {
	mu   sync.Mutex
	base unsafe.Pointer
	len  uint64
}

func (r *region) unmap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.base != nil {
		_ = unix.MunmapPtr(r.base, uintptr(r.len))
		r.base = nil
	}
}

// minMappedMemory is the smallest initial memory without an image file
// that is mapped: a smaller one costs less in the Go heap than the system
// calls that map and unmap it, until it grows.
const minMappedMemory = 1 << 20

func newLinearMemory(a *cappedAllocator, capacity, max uint64) linearMemory {
	if m := newMmapMemory(a, capacity, max); m != nil {
		return m
	}
	return newHeapMemory(a, capacity)
}

func newMmapMemory(a *cappedAllocator, capacity, max uint64) *mmapMemory {
	reserve := roundUpPage(max)
	if reserve == 0 || reserve > 1<<32 {
		return nil
	}
	f, hasFile := a.image.mapped()
	if !hasFile && (a.image.len() > 0 || capacity < minMappedMemory) {
		return nil // a small memory, or a small image: in the Go heap
	}
	base, err := unix.MmapPtr(-1, 0, nil, uintptr(reserve), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil
	}
	reg := &region{base: base, len: reserve}
	if hasFile {
		f.box.mu.Lock()
		fd, n := f.box.fd, f.box.mapLen
		if fd >= 0 && n <= reserve {
			_, err = unix.MmapPtr(fd, 0, base, uintptr(n), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_FIXED)
		} else {
			err = fmt.Errorf("image file closed or larger than the memory")
		}
		f.box.mu.Unlock()
		if err != nil {
			reg.unmap()
			return nil
		}
	}
	m := &mmapMemory{a: a, reg: reg}
	// A memory wazero never frees (an instantiation that failed halfway)
	// is unmapped when it becomes garbage.
	runtime.AddCleanup(m, (*region).unmap, reg)
	return m
}

// Reallocate grows the memory to size bytes; it returns nil (memory.grow
// returns -1 to the guest) past the limit.
func (m *mmapMemory) Reallocate(size uint64) []byte {
	if size > m.a.limit {
		m.a.refused.Store(true)
		return nil
	}
	if size > m.reg.len || m.reg.base == nil {
		return nil
	}
	m.size = size
	return unsafe.Slice((*byte)(m.reg.base), m.reg.len)[:size:size]
}

// Free unmaps the memory; further calls do nothing.
func (m *mmapMemory) Free() { m.reg.unmap() }
