package wasmrw

import "fmt"

// Opcodes the rewriter acts on.
const (
	opLoop      = 0x03
	opIf        = 0x04
	opEnd       = 0x0b
	opCall      = 0x10
	opReturnCal = 0x12
	opGlobalGet = 0x23
	opGlobalSet = 0x24
	opI32Const  = 0x41
	opI32Sub    = 0x6b
	opI32Eqz    = 0x45
	opRefFunc   = 0xd2
	blockVoid   = 0x40
)

// code rewrites instruction sequences: it renumbers function indexes and,
// when check is set, inserts check at loop headers and function entries.
type code struct {
	// from and delta: a function index >= from becomes index+delta.
	from, delta uint32
	// check is the instruction sequence inserted, or nil.
	check []byte
	// checks counts the insertions.
	checks int
	// stateOps counts table and drop instructions (Stats.TableOrDropOps).
	stateOps int
}

func (c *code) fn(idx uint32) uint32 {
	if idx >= c.from {
		return idx + c.delta
	}
	return idx
}

// checkSequence is the fuel check: decrement the counter global g and, when
// it reaches zero, call f and store its result as the new counter.
func checkSequence(g, f uint32) []byte {
	var s []byte
	s = appendU32(append(s, opGlobalGet), g)
	s = append(s, opI32Const, 1, opI32Sub)
	s = appendU32(append(s, opGlobalSet), g)
	s = appendU32(append(s, opGlobalGet), g)
	s = append(s, opI32Eqz, opIf, blockVoid)
	s = appendU32(append(s, opCall), f)
	s = appendU32(append(s, opGlobalSet), g)
	return append(s, opEnd)
}

// body rewrites one function body (locals and instructions) into out.
func (c *code) body(b, out []byte) ([]byte, error) {
	r := &reader{b: b}
	groups := r.u32()
	for i := uint32(0); i < groups && r.err == nil; i++ {
		r.u32()
		r.valtype()
	}
	out = append(out, b[:r.pos]...)
	if c.check != nil && (r.pos >= len(b) || b[r.pos] != opLoop) {
		// A body that starts with a loop is checked at that loop's header on
		// entry (Go's compiler starts every function so); others here.
		out = append(out, c.check...)
		c.checks++
	}
	for !r.done() {
		out, _ = c.instr(r, out)
	}
	return out, r.err
}

// constExpr rewrites a constant expression, up to and including its end.
func (c *code) constExpr(r *reader, out []byte) []byte {
	for r.err == nil {
		var op byte
		out, op = c.instr(r, out)
		if op == opEnd {
			break
		}
	}
	return out
}

// valtype skips a value type (one byte in WebAssembly 2.0).
func (r *reader) valtype() {
	switch t := r.byte(); t {
	case 0x7f, 0x7e, 0x7d, 0x7c, 0x7b, 0x70, 0x6f:
	default:
		if r.err == nil {
			r.fail("unsupported value type %#x", t)
		}
	}
}

// memarg skips a memory argument: alignment (bit 6 set: a memory index
// follows, multi-memory) and offset.
func (r *reader) memarg() {
	if r.u32()&0x40 != 0 {
		r.u32()
	}
	r.u32()
}

// instr copies one instruction from r to out, renumbering function indexes
// and inserting the check after a loop header. It returns the opcode (the
// prefix byte for prefixed instructions).
func (c *code) instr(r *reader, out []byte) ([]byte, byte) {
	start := r.pos
	op := r.byte()
	switch {
	case op == opCall || op == opReturnCal || op == opRefFunc:
		idx := r.u32()
		if r.err != nil {
			return out, op
		}
		return appendU32(append(out, op), c.fn(idx)), op
	case op == opLoop:
		r.skipLEB(5) // block type: s33
		out = append(out, r.b[start:r.pos]...)
		if c.check != nil && r.err == nil {
			out = append(out, c.check...)
			c.checks++
		}
		return out, op
	}
	c.skipImmediates(r, op)
	return append(out, r.b[start:r.pos]...), op
}

// skipImmediates skips the immediates of op (other than those instr handles).
func (c *code) skipImmediates(r *reader, op byte) {
	switch {
	case op == 0x00 || op == 0x01 || op == 0x05 || op == opEnd || op == 0x0f ||
		op == 0x1a || op == 0x1b || op == 0xd1:
		// unreachable, nop, else, end, return, drop, select, ref.is_null
	case op == 0x02 || op == opIf:
		r.skipLEB(5) // block type
	case op == 0x0c || op == 0x0d: // br, br_if
		r.u32()
	case op == 0x0e: // br_table
		n := r.u32()
		for i := uint32(0); i <= n && r.err == nil; i++ {
			r.u32()
		}
	case op == 0x11 || op == 0x13: // call_indirect, return_call_indirect
		r.u32()
		r.u32()
	case op == 0x1c: // select t*
		n := r.u32()
		for i := uint32(0); i < n && r.err == nil; i++ {
			r.valtype()
		}
	case op >= 0x20 && op <= 0x26: // local.*, global.*, table.get/set
		if op == 0x26 {
			c.stateOps++
		}
		r.u32()
	case op >= 0x28 && op <= 0x3e: // loads and stores
		r.memarg()
	case op == 0x3f || op == 0x40: // memory.size, memory.grow
		r.u32()
	case op == opI32Const:
		r.skipLEB(5)
	case op == 0x42: // i64.const
		r.skipLEB(10)
	case op == 0x43: // f32.const
		r.bytes(4)
	case op == 0x44: // f64.const
		r.bytes(8)
	case op >= 0x45 && op <= 0xc4: // numeric, sign extension
	case op == 0xd0: // ref.null
		r.skipLEB(5)
	case op == 0xfc:
		switch fcImmediates(r) {
		case 9, 12, 13, 14, 15, 17: // data.drop, table.init, elem.drop, table.copy, table.grow, table.fill
			c.stateOps++
		}
	case op == 0xfd:
		simdImmediates(r)
	case op == 0xfe:
		atomicImmediates(r)
	default:
		r.pos--
		r.fail("unknown opcode %#x", op)
	}
}

// fcImmediates skips the immediates of a 0xfc instruction and returns its
// sub-opcode.
func fcImmediates(r *reader) uint32 {
	sub := r.u32()
	switch {
	case sub <= 7: // saturating truncation
	case sub == 8: // memory.init data mem
		r.u32()
		r.u32()
	case sub == 9: // data.drop
		r.u32()
	case sub == 10: // memory.copy
		r.u32()
		r.u32()
	case sub == 11: // memory.fill
		r.u32()
	case sub == 12: // table.init elem table
		r.u32()
		r.u32()
	case sub == 13: // elem.drop
		r.u32()
	case sub == 14: // table.copy
		r.u32()
		r.u32()
	case sub >= 15 && sub <= 17: // table.grow, table.size, table.fill
		r.u32()
	default:
		if r.err == nil {
			r.fail("unknown instruction 0xfc %d", sub)
		}
	}
	return sub
}

func simdImmediates(r *reader) {
	switch sub := r.u32(); {
	case sub <= 11: // v128 loads and stores
		r.memarg()
	case sub == 12: // v128.const
		r.bytes(16)
	case sub == 13: // i8x16.shuffle
		r.bytes(16)
	case sub >= 21 && sub <= 34: // extract_lane, replace_lane
		r.byte()
	case sub >= 84 && sub <= 91: // load/store lane
		r.memarg()
		r.byte()
	case sub == 92 || sub == 93: // load32_zero, load64_zero
		r.memarg()
	case sub <= 0xff:
		// every other SIMD instruction has no immediate
	default:
		if r.err == nil {
			r.fail("unknown instruction 0xfd %d", sub)
		}
	}
}

func atomicImmediates(r *reader) {
	switch sub := r.u32(); {
	case sub == 3: // atomic.fence
		r.byte()
	case sub <= 2 || (sub >= 0x10 && sub <= 0x4e):
		r.memarg()
	default:
		if r.err == nil {
			r.fail("unknown instruction 0xfe %d", sub)
		}
	}
}

// errAt wraps err with where it happened.
func errAt(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), err)
}
