package wasmrw

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Section ids.
const (
	secCustom    = 0
	secType      = 1
	secImport    = 2
	secFunction  = 3
	secGlobal    = 6
	secMemory    = 5
	secExport    = 7
	secStart     = 8
	secElement   = 9
	secCode      = 10
	secData      = 11
	secDataCount = 12
)

// order is each known section's place in a binary (the tag section, 13,
// sits between memory and global).
var order = map[byte]int{1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 13: 6, 6: 7, 7: 8, 8: 9, 9: 10, 12: 11, 10: 12, 11: 13}

// ErrReserved is returned for a module that already imports from the
// interrupt import's module: that module name belongs to the host.
var ErrReserved = errors.New("module imports from a module name reserved for the host")

// Interrupt names the host function the fuel check calls. Its type is
// () -> (i32): it returns the new value of the fuel counter (> 0), or
// does not return (it aborts the call).
type Interrupt struct {
	Module, Name string
	// Fuel is the counter's initial value: how many loop iterations and
	// function entries run between two calls of the import. It must be
	// positive.
	Fuel int32
}

// Options say what Rewrite does. The zero value copies the module.
type Options struct {
	// Interrupt, when set, instruments the module (see the package
	// documentation).
	Interrupt *Interrupt
	// MergeDataGap, when positive, merges adjacent active data segments
	// separated by at most this many bytes (filled with zeros). Segments are
	// merged only when every active segment is in memory 0 at a constant
	// offset, in increasing order without overlap, and the module has no
	// data count section (so no instruction names a segment by index).
	MergeDataGap int
	// ExportGlobals, when set, exports every mutable global the module
	// defines (the fuel counter included) as ExportGlobals followed by its
	// index, so that a host can read and restore the module's whole state
	// (with its memory: a post-init snapshot). It needs Interrupt.
	ExportGlobals string
	// DataImage, when set, moves the bytes of the active data segments
	// out of the module into Stats.Data, leaving each segment empty at its
	// offset: a host that starts every instance's memory as a copy (or a
	// copy-on-write mapping) of them then skips applying them. It does so
	// only when every active segment is in memory 0 at a constant offset,
	// without overlap (Stats.Data is nil otherwise, and the module keeps
	// its data).
	DataImage bool
}

// Stats describes what Rewrite did.
type Stats struct {
	// Checks is the number of fuel checks inserted.
	Checks int
	// DataSegments and MergedSegments are the number of data segments
	// before and after merging; ZeroFill is the number of gap bytes added.
	DataSegments, MergedSegments, ZeroFill int
	// Globals are the names of the exported mutable globals
	// (Options.ExportGlobals).
	Globals []string
	// TableOrDropOps counts instructions that change state beyond memory
	// and globals (table.set, table.grow, table.fill, table.copy,
	// table.init, elem.drop, data.drop): a snapshot of memory and globals
	// does not capture their effect.
	TableOrDropOps int
	// Start is set when the module has a start function.
	Start bool
	// DataEnd is the end of the last byte the (merged) active data
	// segments write at instantiation, or -1 when that is not known (a
	// segment at a computed offset or in another memory).
	DataEnd int64
	// Data is the active data segments moved out of the module
	// (Options.DataImage), by increasing offset, without empty ones; nil
	// when they were not moved out (none, or not all at constant offsets).
	Data []Segment
}

type section struct {
	id      byte
	payload []byte
}

// Rewrite returns the rewritten module. It does not modify b.
func Rewrite(b []byte, opts Options) ([]byte, Stats, error) {
	var st Stats
	if len(b) < 8 || !bytes.Equal(b[:4], []byte("\x00asm")) || !bytes.Equal(b[4:8], []byte{1, 0, 0, 0}) {
		return nil, st, fmt.Errorf("%w: not a WebAssembly 1.0 binary", ErrMalformed)
	}
	var secs []section
	r := &reader{b: b, pos: 8}
	for !r.done() {
		id := r.byte()
		p := r.bytes(r.u32())
		if r.err != nil {
			return nil, st, r.err
		}
		secs = append(secs, section{id, p})
	}
	rw := &rewriter{opts: opts, secs: secs}
	if err := rw.run(&st); err != nil {
		return nil, st, err
	}
	size := 8
	for _, s := range rw.secs {
		size += 6 + len(s.payload)
	}
	out := make([]byte, 0, size)
	out = append(out, b[:8]...)
	for _, s := range rw.secs {
		out = appendSection(out, s.id, s.payload)
	}
	return out, st, nil
}

type rewriter struct {
	opts Options
	secs []section
	code code
	// exportGlobals are the indexes of the globals to export
	// (Options.ExportGlobals).
	exportGlobals []uint32
}

func (rw *rewriter) find(id byte) *section {
	for i := range rw.secs {
		if rw.secs[i].id == id {
			return &rw.secs[i]
		}
	}
	return nil
}

// ensure returns the section id, inserting an empty one (count 0) in its
// place when the module has none.
func (rw *rewriter) ensure(id byte) *section {
	if s := rw.find(id); s != nil {
		return s
	}
	at := len(rw.secs)
	for i, s := range rw.secs {
		if s.id != secCustom && order[s.id] > order[id] {
			at = i
			break
		}
	}
	rw.secs = append(rw.secs[:at], append([]section{{id, []byte{0}}}, rw.secs[at:]...)...)
	return &rw.secs[at]
}

func (rw *rewriter) run(st *Stats) error {
	if rw.find(secDataCount) == nil && rw.opts.MergeDataGap > 0 {
		if s := rw.find(secData); s != nil {
			p, n, m, fill, err := mergeData(s.payload, rw.opts.MergeDataGap)
			if err != nil {
				return errAt(err, "data section")
			}
			s.payload, st.DataSegments, st.MergedSegments, st.ZeroFill = p, n, m, fill
		}
	}
	if s := rw.find(secData); s != nil {
		st.DataEnd = dataEnd(s.payload)
		if rw.opts.DataImage && st.DataEnd > 0 {
			p, segs, err := moveData(s.payload)
			if err != nil {
				return errAt(err, "data section")
			}
			if segs != nil {
				s.payload, st.Data = p, segs
			}
		}
	}
	in := rw.opts.Interrupt
	if in == nil {
		return nil
	}
	if in.Fuel <= 0 {
		return fmt.Errorf("wasmrw: fuel %d is not positive", in.Fuel)
	}
	// The new type () -> (i32), appended to the type section.
	ts := rw.ensure(secType)
	tr := &reader{b: ts.payload}
	ntypes := tr.u32()
	if tr.err != nil {
		return errAt(tr.err, "type section")
	}
	ts.payload = append(append(appendU32(nil, ntypes+1), ts.payload[tr.pos:]...), 0x60, 0, 1, 0x7f)

	// The import, appended after the existing ones: it takes the index
	// after the last imported function, and every defined function moves
	// up by one.
	is := rw.ensure(secImport)
	funcs, globals, nimports, body, err := scanImports(is.payload, in.Module)
	if err != nil {
		return err
	}
	p := appendU32(nil, nimports+1)
	p = append(p, body...)
	p = appendName(appendName(p, in.Module), in.Name)
	is.payload = appendU32(append(p, 0x00), ntypes)
	rw.code.from, rw.code.delta = funcs, 1
	checkFn := funcs

	// The fuel global, appended after the module's own.
	gs := rw.ensure(secGlobal)
	ndefined, gp, mutable, err := rw.globals(gs.payload)
	if err != nil {
		return err
	}
	if rw.opts.ExportGlobals != "" {
		for _, i := range append(mutable, ndefined) { // and the fuel counter
			rw.exportGlobals = append(rw.exportGlobals, globals+i)
		}
	}
	gp = append(gp, 0x7f, 0x01, opI32Const)
	gp = append(appendS32(gp, in.Fuel), opEnd)
	gs.payload = append(appendU32(nil, ndefined+1), gp...)
	rw.code.check = checkSequence(globals+ndefined, checkFn)
	if len(rw.exportGlobals) > 0 {
		rw.ensure(secExport) // after the last use of gs: ensure may move it
	}

	for i := range rw.secs {
		s := &rw.secs[i]
		var err error
		switch s.id {
		case secExport:
			s.payload, err = rw.exports(s.payload)
		case secStart:
			st.Start = true
			r := &reader{b: s.payload}
			idx := r.u32()
			s.payload, err = appendU32(nil, rw.code.fn(idx)), r.err
		case secElement:
			s.payload, err = rw.elements(s.payload)
		case secCode:
			s.payload, err = rw.bodies(s.payload)
		case secCustom:
			s.payload, err = rw.custom(s.payload)
		}
		if err != nil {
			return err
		}
	}
	st.Checks = rw.code.checks
	st.TableOrDropOps = rw.code.stateOps
	for _, g := range rw.exportGlobals {
		st.Globals = append(st.Globals, rw.opts.ExportGlobals+strconv.FormatUint(uint64(g), 10))
	}
	return nil
}

// scanImports counts imported functions and globals, checks that none
// comes from the reserved module, and returns the entries' bytes.
func scanImports(p []byte, reserved string) (funcs, globals, n uint32, body []byte, err error) {
	r := &reader{b: p}
	n = r.u32()
	start := r.pos
	for i := uint32(0); i < n && r.err == nil; i++ {
		mod := r.name()
		name := r.name()
		if mod == reserved && r.err == nil {
			return 0, 0, 0, nil, fmt.Errorf("%w: it imports %q from %q", ErrReserved, name, mod)
		}
		switch kind := r.byte(); kind {
		case 0x00:
			r.u32()
			funcs++
		case 0x01: // table: reftype, limits
			r.byte()
			r.limits()
		case 0x02:
			r.limits()
		case 0x03:
			r.valtype()
			r.byte()
			globals++
		case 0x04: // tag
			r.byte()
			r.u32()
		default:
			r.fail("unknown import kind %#x", kind)
		}
	}
	if r.err != nil {
		return 0, 0, 0, nil, errAt(r.err, "import section")
	}
	return funcs, globals, n, p[start:r.pos], nil
}

// limits skips table or memory limits (flags, min, optional max).
func (r *reader) limits() {
	flags := r.byte()
	r.u32()
	if flags&1 != 0 {
		r.u32()
	}
}

// globals rewrites the global section's entries (ref.func in initializers)
// and returns their count and bytes, without the count, and the indexes
// (among the defined globals) of the mutable ones.
func (rw *rewriter) globals(p []byte) (uint32, []byte, []uint32, error) {
	r := &reader{b: p}
	n := r.u32()
	var out []byte
	var mutable []uint32
	for i := uint32(0); i < n && r.err == nil; i++ {
		start := r.pos
		r.valtype()
		if r.byte() == 1 {
			mutable = append(mutable, i)
		}
		out = append(out, p[start:r.pos]...)
		out = rw.code.constExpr(r, out)
	}
	return n, out, mutable, errAt(r.err, "global section")
}

func (rw *rewriter) exports(p []byte) ([]byte, error) {
	r := &reader{b: p}
	n := r.u32()
	out := appendU32(make([]byte, 0, len(p)+8), n+uint32(len(rw.exportGlobals)))
	for i := uint32(0); i < n && r.err == nil; i++ {
		name := r.name()
		kind := r.byte()
		idx := r.u32()
		if kind == 0x00 {
			idx = rw.code.fn(idx)
		}
		if rw.opts.ExportGlobals != "" && strings.HasPrefix(name, rw.opts.ExportGlobals) {
			return nil, fmt.Errorf("%w: it exports %q", ErrReserved, name)
		}
		out = appendU32(append(appendName(out, name), kind), idx)
	}
	for _, g := range rw.exportGlobals {
		out = appendU32(append(appendName(out, rw.opts.ExportGlobals+strconv.FormatUint(uint64(g), 10)), 0x03), g)
	}
	return out, errAt(r.err, "export section")
}

func (rw *rewriter) elements(p []byte) ([]byte, error) {
	r := &reader{b: p}
	n := r.u32()
	out := appendU32(make([]byte, 0, len(p)+64), n)
	for i := uint32(0); i < n && r.err == nil; i++ {
		flags := r.u32()
		out = appendU32(out, flags)
		if flags > 7 {
			r.fail("unknown element segment kind %d", flags)
			break
		}
		if flags&2 != 0 && flags&1 == 0 { // explicit table index
			out = appendU32(out, r.u32())
		}
		if flags&1 == 0 { // active: offset expression
			out = rw.code.constExpr(r, out)
		}
		if flags&3 != 0 { // elemkind or reftype byte
			out = append(out, r.byte())
		}
		count := r.u32()
		out = appendU32(out, count)
		for j := uint32(0); j < count && r.err == nil; j++ {
			if flags&4 != 0 {
				out = rw.code.constExpr(r, out)
			} else {
				out = appendU32(out, rw.code.fn(r.u32()))
			}
		}
	}
	return out, errAt(r.err, "element section")
}

func (rw *rewriter) bodies(p []byte) ([]byte, error) {
	r := &reader{b: p}
	n := r.u32()
	grow := 0
	if rw.code.check != nil {
		grow = len(p) / 8
	}
	out := appendU32(make([]byte, 0, len(p)+grow), n)
	var buf []byte
	for i := uint32(0); i < n && r.err == nil; i++ {
		b := r.bytes(r.u32())
		if r.err != nil {
			break
		}
		var err error
		if buf, err = rw.code.body(b, buf[:0]); err != nil {
			return nil, errAt(err, "code of function %d", i)
		}
		out = append(appendU32(out, uint32(len(buf))), buf...)
	}
	return out, errAt(r.err, "code section")
}

// custom renumbers the function indexes of the "name" section (function,
// local and label names); other custom sections are copied. A name section
// that does not decode is dropped: names only decorate stack traces.
func (rw *rewriter) custom(p []byte) ([]byte, error) {
	r := &reader{b: p}
	if r.name() != "name" || r.err != nil {
		return p, nil
	}
	out := append([]byte(nil), p[:r.pos]...)
	for !r.done() {
		id := r.byte()
		sub := r.bytes(r.u32())
		if r.err != nil {
			break
		}
		if id >= 1 && id <= 3 {
			sub = rw.nameMap(sub, id != 1)
		}
		out = append(appendU32(append(out, id), uint32(len(sub))), sub...)
	}
	if r.err != nil {
		return appendName(nil, "name.dropped"), nil
	}
	return out, nil
}

// nameMap renumbers the function indexes of a name map (indirect: each
// entry holds a name map of locals or labels, copied).
func (rw *rewriter) nameMap(p []byte, indirect bool) []byte {
	r := &reader{b: p}
	n := r.u32()
	out := appendU32(make([]byte, 0, len(p)+8), n)
	for i := uint32(0); i < n && r.err == nil; i++ {
		out = appendU32(out, rw.code.fn(r.u32()))
		start := r.pos
		if indirect {
			m := r.u32()
			for j := uint32(0); j < m && r.err == nil; j++ {
				r.u32()
				r.name()
			}
		} else {
			r.name()
		}
		out = append(out, p[start:r.pos]...)
	}
	if r.err != nil {
		return p
	}
	return out
}
