package wasm

import (
	"bytes"
	"sync"
)

// memImage is the contents an instance's memory starts with (see
// cappedAllocator): held in a memory file that instances map copy-on-write
// where the platform allows (image_linux.go), otherwise as bytes copied
// into each instance. A nil *memImage is an empty image.
type memImage struct {
	size int
	once sync.Once
	// data is the contents until the file holds them.
	data []byte
	file imageFile
}

// newDataImage is a module's data image (wasmrw.Stats.Image), kept as
// bytes until an instance needs it, so that a module never instantiated
// holds no file.
func newDataImage(b []byte) *memImage {
	if len(b) == 0 {
		return nil
	}
	return &memImage{size: len(b), data: b}
}

// minFileImage is the smallest image put in a file: copying a smaller one
// costs less than the system calls that map it.
const minFileImage = 256 << 10

// captureImage is an image of live memory b (a snapshot), written to a file
// at once where possible and otherwise copied.
func captureImage(b []byte) (*memImage, error) {
	im := &memImage{size: len(b)}
	if len(b) < minFileImage {
		im.data = bytes.Clone(b)
		return im, nil
	}
	var err error
	im.once.Do(func() { err = im.file.create(im, b) })
	if err != nil || !im.file.ok() {
		im.data = bytes.Clone(b)
	}
	return im, nil
}

// mapped returns the image's file, creating it on first use; ok is false
// when there is none (the platform has none, or creating it failed), and
// the image is then copied from bytes.
func (im *memImage) mapped() (f *imageFile, ok bool) {
	if im == nil || im.size < minFileImage {
		return nil, false
	}
	im.once.Do(func() {
		if im.file.create(im, im.data) == nil && im.file.ok() {
			im.data = nil
		}
	})
	return &im.file, im.file.ok()
}

// bytes returns the image's contents, for a memory that copies them.
func (im *memImage) bytes() []byte {
	if im == nil || im.size == 0 {
		return nil
	}
	if f, ok := im.mapped(); ok {
		return f.read(im.size)
	}
	return im.data
}

// close releases the image's file; instances mapping it keep their
// mappings.
func (im *memImage) close() {
	if im != nil {
		im.once.Do(func() {})
		im.file.close()
	}
}
