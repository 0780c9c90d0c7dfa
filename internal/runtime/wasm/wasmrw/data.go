package wasmrw

import (
	"bytes"
	"cmp"
	"slices"
)

// segment is one data segment as decoded for merging.
type segment struct {
	raw []byte // the whole encoded segment
	// active at a constant offset in memory 0:
	constant bool
	offset   uint32
	data     []byte
}

// mergeData merges runs of active data segments whose gaps are at most
// maxGap bytes. It returns the payload unchanged (and n == m) when the
// active segments are not all constant and disjoint.
func mergeData(p []byte, maxGap int) (out []byte, n, m, fill int, err error) {
	r := &reader{b: p}
	count := r.u32()
	segs := make([]segment, 0, min(count, 1<<16))
	for i := uint32(0); i < count && r.err == nil; i++ {
		start := r.pos
		var s segment
		switch flags := r.u32(); flags {
		case 0, 2:
			mem := uint32(0)
			if flags == 2 {
				mem = r.u32()
			}
			exprStart := r.pos
			if r.byte() == opI32Const {
				v := r.s32()
				if r.byte() == opEnd && mem == 0 {
					s.constant, s.offset = true, uint32(v)
				}
			}
			if !s.constant && r.err == nil {
				// Any other offset expression: skip it and keep the segment.
				r.pos = exprStart
				(&code{}).constExpr(r, nil)
			}
		case 1:
		default:
			r.fail("unknown data segment kind %d", flags)
		}
		s.data = r.bytes(r.u32())
		s.raw = p[start:r.pos]
		segs = append(segs, s)
	}
	if r.err != nil {
		return nil, 0, 0, 0, r.err
	}
	n = len(segs)
	// Merging is safe only when the active segments are disjoint: then no
	// byte is written twice, the order they are applied in does not matter,
	// and the gaps between them are bytes no segment writes, zero in a fresh
	// memory. Every active segment must be in memory 0 at a constant offset.
	active := make([]segment, 0, len(segs))
	for _, s := range segs {
		if s.raw[0] == 1 { // passive: not applied at instantiation
			continue
		}
		if !s.constant {
			return p, n, n, 0, nil
		}
		active = append(active, s)
	}
	slices.SortStableFunc(active, func(a, b segment) int { return cmp.Compare(a.offset, b.offset) })
	var end uint64
	for _, s := range active {
		if uint64(s.offset) < end {
			return p, n, n, 0, nil
		}
		end = uint64(s.offset) + uint64(len(s.data))
	}
	out = appendU32(make([]byte, 0, len(p)+1024), 0) // count patched below
	flush := func(off uint32, data []byte) {
		out = append(out, 0, opI32Const)
		out = appendS32(out, int32(off))
		out = append(out, opEnd)
		out = appendU32(out, uint32(len(data)))
		out = append(out, data...)
		m++
	}
	var run []byte
	var runOff uint32
	inRun := false
	for _, s := range segs {
		if s.raw[0] == 1 {
			// Passive segments keep their order among themselves; their
			// indexes matter only with a data count section, absent here.
			out = append(out, s.raw...)
			m++
		}
	}
	for _, s := range active {
		if inRun && uint64(s.offset)-(uint64(runOff)+uint64(len(run))) <= uint64(maxGap) {
			gap := int(s.offset - runOff - uint32(len(run)))
			fill += gap
			run = append(run, make([]byte, gap)...)
			run = append(run, s.data...)
			continue
		}
		if inRun {
			flush(runOff, run)
		}
		run, runOff, inRun = append(run[:0:0], s.data...), s.offset, true
	}
	if inRun {
		flush(runOff, run)
	}
	// Re-encode with the real count in front.
	body := out[1:]
	return append(appendU32(make([]byte, 0, len(body)+5), uint32(m)), body...), n, m, fill, nil
}

// dataEnd returns the end of the highest byte the active data segments of
// the data section p write at instantiation, or -1 when one of them is not
// in memory 0 at a constant offset.
func dataEnd(p []byte) int64 {
	r := &reader{b: p}
	end := int64(0)
	for n := r.u32(); n > 0 && r.err == nil; n-- {
		flags := r.u32()
		switch flags {
		case 0:
			if r.byte() != opI32Const {
				return -1
			}
			off := uint32(r.s32())
			if r.byte() != opEnd {
				return -1
			}
			end = max(end, int64(off)+int64(len(r.bytes(r.u32()))))
		case 1:
			r.bytes(r.u32())
		default:
			return -1
		}
	}
	if r.err != nil {
		return -1
	}
	return end
}

// Segment is an active data segment: Data is written at Offset in memory 0
// at instantiation.
type Segment struct {
	Offset uint32
	Data   []byte
}

// moveData returns the data section p with every active segment emptied
// (kept, at its offset, so that segment indexes and instantiation's bounds
// check of the offset stay) and the segments, their bytes copied, sorted by
// offset, without the empty ones. It returns segs == nil when the active
// segments are not all in memory 0 at constant offsets without overlap:
// then the order in which they are applied would matter, and they stay.
func moveData(p []byte) (out []byte, segs []Segment, err error) {
	r := &reader{b: p}
	count := r.u32()
	out = appendU32(make([]byte, 0, 64), count)
	segs = []Segment{}
	for i := uint32(0); i < count && r.err == nil; i++ {
		start := r.pos
		switch flags := r.u32(); flags {
		case 0:
			if r.byte() != opI32Const {
				return p, nil, nil
			}
			off := uint32(r.s32())
			if r.byte() != opEnd {
				return p, nil, nil
			}
			data := r.bytes(r.u32())
			if r.err != nil {
				break
			}
			if len(data) > 0 {
				segs = append(segs, Segment{Offset: off, Data: bytes.Clone(data)})
			}
			out = append(out, 0, opI32Const)
			out = appendS32(out, int32(off))
			out = append(out, opEnd, 0)
		case 1:
			r.bytes(r.u32())
			out = append(out, p[start:r.pos]...)
		default:
			return p, nil, nil
		}
	}
	if r.err != nil {
		return nil, nil, r.err
	}
	slices.SortStableFunc(segs, func(a, b Segment) int { return cmp.Compare(a.Offset, b.Offset) })
	for i := 1; i < len(segs); i++ {
		if uint64(segs[i].Offset) < uint64(segs[i-1].Offset)+uint64(len(segs[i-1].Data)) {
			return p, nil, nil // overlapping: the order of application matters
		}
	}
	return out, segs, nil
}

// InitialMemory returns the initial size in pages of the memory module b
// defines, and false when it defines none (or b is malformed).
func InitialMemory(b []byte) (pages uint32, ok bool) {
	if len(b) < 8 {
		return 0, false
	}
	r := &reader{b: b, pos: 8}
	for !r.done() && r.err == nil {
		id := r.byte()
		p := r.bytes(r.u32())
		if id != secMemory {
			continue
		}
		m := &reader{b: p}
		if m.u32() == 0 {
			return 0, false
		}
		m.byte() // flags
		pages = m.u32()
		return pages, m.err == nil
	}
	return 0, false
}
