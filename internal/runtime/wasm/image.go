package wasm

import (
	"bytes"
	"sync"

	"github.com/nimbus-dev/nimbus/internal/runtime/wasm/wasmrw"
)

// memImage is the contents an instance's memory starts with (see
// cappedAllocator): the first size bytes of memory, as segments (the rest
// zeros). Where the platform allows and the image is large, it is put in a
// memory file that instances map copy-on-write (image_linux.go); otherwise
// each instance copies the segments. A nil *memImage is an empty image.
type memImage struct {
	size int
	once sync.Once
	// segs are the contents until the file holds them: for a module, its
	// data segments (so that an image costs what the data section did); for
	// a small snapshot, one segment.
	segs []wasmrw.Segment
	file imageFile
}

// minFileImage is the smallest image put in a file: copying a smaller one
// costs less than the system calls that map it.
const minFileImage = 256 << 10

// newDataImage is a module's data image (wasmrw.Stats.Data), kept as
// segments until an instance needs it, so that a module never instantiated
// holds no file.
func newDataImage(segs []wasmrw.Segment) *memImage {
	if len(segs) == 0 {
		return nil
	}
	last := segs[len(segs)-1]
	return &memImage{size: int(last.Offset) + len(last.Data), segs: segs}
}

// captureImage is an image of live memory b (a snapshot), written to a file
// at once where possible and otherwise copied.
func captureImage(b []byte) *memImage {
	im := &memImage{size: len(b)}
	if len(b) >= minFileImage {
		im.once.Do(func() {
			_ = im.file.create(im, []wasmrw.Segment{{Data: b}})
		})
		if im.file.ok() {
			return im
		}
	}
	im.segs = []wasmrw.Segment{{Data: bytes.Clone(b)}}
	return im
}

// mapped returns the image's file, creating it on first use; ok is false
// when there is none (the image is small, the platform has no files, or
// creating one failed), and the image is then copied from its segments.
func (im *memImage) mapped() (f *imageFile, ok bool) {
	if im == nil || im.size < minFileImage {
		return nil, false
	}
	im.once.Do(func() {
		if im.file.create(im, im.segs) == nil && im.file.ok() {
			im.segs = nil
		}
	})
	return &im.file, im.file.ok()
}

// copyTo writes the image into dst, which is at least size bytes of zeros,
// and reports whether it could (not once the image's file is closed).
func (im *memImage) copyTo(dst []byte) bool {
	if im == nil {
		return true
	}
	if f, ok := im.mapped(); ok {
		return f.read(dst[:im.size])
	}
	for _, s := range im.segs {
		copy(dst[s.Offset:], s.Data)
	}
	return true
}

// len is the image's size in bytes.
func (im *memImage) len() int {
	if im == nil {
		return 0
	}
	return im.size
}

// close releases the image's file; instances mapping it keep their
// mappings.
func (im *memImage) close() {
	if im != nil {
		im.once.Do(func() {})
		im.file.close()
	}
}
