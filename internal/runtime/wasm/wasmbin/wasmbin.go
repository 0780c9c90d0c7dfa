// Package wasmbin encodes small WebAssembly modules by hand. Tests and
// benchmarks use it for modules that a compiler would not produce: minimal
// guests, hostile guests, and broken contracts. It supports just the sections
// those need (type, import, function, table, memory, global, export, start,
// element, code, data, custom).
package wasmbin

import "encoding/binary"

// Value types.
const (
	I32 byte = 0x7f
	I64 byte = 0x7e
)

// Export kinds.
const (
	KindFunc   byte = 0x00
	KindMemory byte = 0x02
	KindGlobal byte = 0x03
)

// FuncType is a function signature.
type FuncType struct{ Params, Results []byte }

// Import is an imported function of type index Type.
type Import struct {
	Module, Name string
	Type         uint32
}

// Func is a defined function; Body is its instructions without the final
// end opcode. Functions have no locals beyond their parameters.
type Func struct {
	Type uint32
	Body []byte
}

// Export names a function or memory.
type Export struct {
	Name  string
	Kind  byte
	Index uint32
}

// Data initializes memory 0 at Offset.
type Data struct {
	Offset uint32
	Bytes  []byte
}

// Global is a defined global initialized by Init (a constant expression
// without its end opcode).
type Global struct {
	Type    byte
	Mutable bool
	Init    []byte
}

// Custom is a custom section.
type Custom struct {
	Name    string
	Payload []byte
}

// Module is a module to encode. Function indexes count imports first.
type Module struct {
	Types   []FuncType
	Imports []Import
	Funcs   []Func
	// TableSize, when non-zero, defines funcref table 0 of that size, and
	// Elements fills it from index 0.
	TableSize uint32
	Elements  []uint32
	// MemoryPages, when non-zero, defines memory 0 with that many initial pages.
	MemoryPages uint32
	Globals     []Global
	Exports     []Export
	// Start, when non-nil, is the start function's index.
	Start   *uint32
	Data    []Data
	Customs []Custom
}

// Encode returns the binary module.
func (m *Module) Encode() []byte {
	out := []byte{0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00}
	if len(m.Types) > 0 {
		var s []byte
		s = uleb(s, uint64(len(m.Types)))
		for _, t := range m.Types {
			s = append(s, 0x60)
			s = vec(s, t.Params)
			s = vec(s, t.Results)
		}
		out = section(out, 1, s)
	}
	if len(m.Imports) > 0 {
		var s []byte
		s = uleb(s, uint64(len(m.Imports)))
		for _, im := range m.Imports {
			s = name(s, im.Module)
			s = name(s, im.Name)
			s = append(s, KindFunc)
			s = uleb(s, uint64(im.Type))
		}
		out = section(out, 2, s)
	}
	if len(m.Funcs) > 0 {
		var s []byte
		s = uleb(s, uint64(len(m.Funcs)))
		for _, f := range m.Funcs {
			s = uleb(s, uint64(f.Type))
		}
		out = section(out, 3, s)
	}
	if m.TableSize > 0 {
		s := []byte{1, 0x70, 0x00}
		s = uleb(s, uint64(m.TableSize))
		out = section(out, 4, s)
	}
	if m.MemoryPages > 0 {
		s := []byte{1, 0x00}
		s = uleb(s, uint64(m.MemoryPages))
		out = section(out, 5, s)
	}
	if len(m.Globals) > 0 {
		var s []byte
		s = uleb(s, uint64(len(m.Globals)))
		for _, g := range m.Globals {
			mut := byte(0)
			if g.Mutable {
				mut = 1
			}
			s = append(s, g.Type, mut)
			s = append(s, g.Init...)
			s = append(s, 0x0b)
		}
		out = section(out, 6, s)
	}
	if len(m.Exports) > 0 {
		var s []byte
		s = uleb(s, uint64(len(m.Exports)))
		for _, e := range m.Exports {
			s = name(s, e.Name)
			s = append(s, e.Kind)
			s = uleb(s, uint64(e.Index))
		}
		out = section(out, 7, s)
	}
	if m.Start != nil {
		out = section(out, 8, uleb(nil, uint64(*m.Start)))
	}
	if len(m.Elements) > 0 {
		s := []byte{1, 0x00}
		s = append(s, I32Const(0)...)
		s = append(s, 0x0b)
		s = uleb(s, uint64(len(m.Elements)))
		for _, f := range m.Elements {
			s = uleb(s, uint64(f))
		}
		out = section(out, 9, s)
	}
	if len(m.Funcs) > 0 {
		var s []byte
		s = uleb(s, uint64(len(m.Funcs)))
		for _, f := range m.Funcs {
			body := append([]byte{0x00}, f.Body...) // no local declarations
			body = append(body, 0x0b)               // end
			s = uleb(s, uint64(len(body)))
			s = append(s, body...)
		}
		out = section(out, 10, s)
	}
	if len(m.Data) > 0 {
		var s []byte
		s = uleb(s, uint64(len(m.Data)))
		for _, d := range m.Data {
			s = append(s, 0x00) // active, memory 0
			s = append(s, I32Const(int32(d.Offset))...)
			s = append(s, 0x0b)
			s = uleb(s, uint64(len(d.Bytes)))
			s = append(s, d.Bytes...)
		}
		out = section(out, 11, s)
	}
	for _, c := range m.Customs {
		out = section(out, 0, append(name(nil, c.Name), c.Payload...))
	}
	return out
}

// I32Const is the instruction i32.const v.
func I32Const(v int32) []byte { return sleb([]byte{0x41}, int64(v)) }

// I64Const is the instruction i64.const v.
func I64Const(v int64) []byte { return sleb([]byte{0x42}, v) }

// LocalGet is the instruction local.get i.
func LocalGet(i uint32) []byte { return uleb([]byte{0x20}, uint64(i)) }

// Call is the instruction call f.
func Call(f uint32) []byte { return uleb([]byte{0x10}, uint64(f)) }

// Drop is the instruction drop.
func Drop() []byte { return []byte{0x1a} }

// Unreachable is the instruction unreachable (a trap).
func Unreachable() []byte { return []byte{0x00} }

// LoopForever is an infinite loop: loop br 0 end.
func LoopForever() []byte { return []byte{0x03, 0x40, 0x0c, 0x00, 0x0b} }

// RefFunc is the instruction ref.func f.
func RefFunc(f uint32) []byte { return uleb([]byte{0xd2}, uint64(f)) }

// GlobalGet is the instruction global.get g.
func GlobalGet(g uint32) []byte { return uleb([]byte{0x23}, uint64(g)) }

// CallIndirect is the instruction call_indirect of type t in table 0.
func CallIndirect(t uint32) []byte { return append(uleb([]byte{0x11}, uint64(t)), 0x00) }

// NameSection is a "name" custom section naming functions (index order).
func NameSection(funcs map[uint32]string, order []uint32) Custom {
	var sub []byte
	sub = uleb(sub, uint64(len(order)))
	for _, i := range order {
		sub = uleb(sub, uint64(i))
		sub = name(sub, funcs[i])
	}
	return Custom{Name: "name", Payload: section(nil, 1, sub)}
}

// Concat joins instructions.
func Concat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func section(out []byte, id byte, body []byte) []byte {
	out = append(out, id)
	out = uleb(out, uint64(len(body)))
	return append(out, body...)
}

func vec(out, b []byte) []byte {
	out = uleb(out, uint64(len(b)))
	return append(out, b...)
}

func name(out []byte, s string) []byte {
	out = uleb(out, uint64(len(s)))
	return append(out, s...)
}

func uleb(out []byte, v uint64) []byte { return binary.AppendUvarint(out, v) }

func sleb(out []byte, v int64) []byte {
	for {
		b := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && b&0x40 == 0) || (v == -1 && b&0x40 != 0) {
			return append(out, b)
		}
		out = append(out, b|0x80)
	}
}
