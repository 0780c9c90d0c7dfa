package wasmrw

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/nimbus-dev/nimbus/internal/runtime/wasm/wasmbin"
)

const (
	i32 = wasmbin.I32
	// op bytes used to write test bodies.
	opBlock = 0x02
	opBrIf  = 0x0d
	opBr    = 0x0c
	opAdd   = 0x6a
	opLocSt = 0x21
	opTblSt = 0x26
)

var testInterrupt = &Interrupt{Module: "nimbus_test", Name: "check", Fuel: 3}

// calls is a module that uses every kind of function reference: calls to
// an import and to defined functions, exports, a start function, an element
// segment, call_indirect, a funcref global initialized by ref.func, a loop,
// and a name section.
func calls() []byte {
	start := uint32(5)
	m := &wasmbin.Module{
		Types: []wasmbin.FuncType{
			{Params: []byte{i32}, Results: []byte{i32}}, // 0
			{Results: []byte{i32}},                      // 1
			{},                                          // 2
		},
		Imports: []wasmbin.Import{{Module: "env", Name: "add1000", Type: 0}},
		Funcs: []wasmbin.Func{
			// 1 add(x) = add1000(x)
			{Type: 0, Body: wasmbin.Concat(wasmbin.LocalGet(0), wasmbin.Call(0))},
			// 2 sum(n): acc += n while n-- > 0; return acc
			{Type: 0, Body: wasmbin.Concat(
				[]byte{opBlock, 0x40, opLoop, 0x40},
				wasmbin.LocalGet(0), []byte{opI32Eqz, opBrIf, 1},
				wasmbin.GlobalGet(1), wasmbin.LocalGet(0), []byte{opAdd, opGlobalSet, 1},
				wasmbin.LocalGet(0), wasmbin.I32Const(1), []byte{opI32Sub, opLocSt, 0},
				[]byte{opBr, 0, opEnd, opEnd},
				wasmbin.GlobalGet(1),
			)},
			// 3 seven() = 7
			{Type: 1, Body: wasmbin.I32Const(7)},
			// 4 indirect(x) = table[0](x)
			{Type: 0, Body: wasmbin.Concat(wasmbin.LocalGet(0), wasmbin.I32Const(0), wasmbin.CallIndirect(0))},
			// 5 start: acc = 5
			{Type: 2, Body: wasmbin.Concat(wasmbin.I32Const(5), []byte{opGlobalSet, 1})},
			// 6 viaref(): table[1] = global 0 (ref.func 3); table[1]()
			{Type: 1, Body: wasmbin.Concat(wasmbin.I32Const(1), wasmbin.GlobalGet(0), []byte{opTblSt, 0}, wasmbin.I32Const(1), wasmbin.CallIndirect(1))},
		},
		TableSize: 2,
		Elements:  []uint32{1, 1},
		Globals: []wasmbin.Global{
			{Type: 0x70, Init: wasmbin.RefFunc(3)},
			{Type: i32, Mutable: true, Init: wasmbin.I32Const(0)},
		},
		Exports: []wasmbin.Export{
			{Name: "add", Kind: wasmbin.KindFunc, Index: 1},
			{Name: "sum", Kind: wasmbin.KindFunc, Index: 2},
			{Name: "indirect", Kind: wasmbin.KindFunc, Index: 4},
			{Name: "viaref", Kind: wasmbin.KindFunc, Index: 6},
		},
		Start:   &start,
		Customs: []wasmbin.Custom{wasmbin.NameSection(map[uint32]string{0: "add1000", 1: "add", 2: "sum"}, []uint32{0, 1, 2})},
	}
	return m.Encode()
}

// run instantiates b with env.add1000 and the interrupt import (counting
// its calls; stop, when set, aborts on the nth call) and calls fn(args).
func run(t *testing.T, b []byte, fn string, args ...uint64) (res []uint64, checks int64, err error) {
	t.Helper()
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigCompiler())
	defer rt.Close(ctx)
	var n atomic.Int64
	if _, err := rt.NewHostModuleBuilder("env").NewFunctionBuilder().
		WithFunc(func(x uint32) uint32 { return x + 1000 }).Export("add1000").Instantiate(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.NewHostModuleBuilder(testInterrupt.Module).NewFunctionBuilder().
		WithGoFunction(api.GoFunc(func(_ context.Context, stack []uint64) {
			if n.Add(1) > 1000 {
				panic(errors.New("interrupted"))
			}
			stack[0] = uint64(testInterrupt.Fuel)
		}), nil, []api.ValueType{api.ValueTypeI32}).Export(testInterrupt.Name).Instantiate(ctx); err != nil {
		t.Fatal(err)
	}
	mod, err := rt.Instantiate(ctx, b)
	if err != nil {
		t.Fatalf("instantiate: %v", err)
	}
	res, err = mod.ExportedFunction(fn).Call(ctx, args...)
	return res, n.Load(), err
}

func TestRewritePreservesBehaviour(t *testing.T) {
	orig := calls()
	out, st, err := Rewrite(orig, Options{Interrupt: testInterrupt})
	if err != nil {
		t.Fatal(err)
	}
	// Entry checks in add, seven, indirect, start, viaref (5) and in sum,
	// whose body starts with a block, plus sum's loop header.
	if st.Checks != 7 {
		t.Errorf("checks = %d, want 7", st.Checks)
	}
	for _, c := range []struct {
		fn   string
		args []uint64
	}{{"add", []uint64{1}}, {"sum", []uint64{100}}, {"indirect", []uint64{2}}, {"viaref", nil}} {
		want, _, err := run(t, orig, c.fn, c.args...)
		if err != nil {
			t.Fatalf("original %s: %v", c.fn, err)
		}
		got, checks, err := run(t, out, c.fn, c.args...)
		if err != nil {
			t.Fatalf("rewritten %s: %v", c.fn, err)
		}
		if want[0] != got[0] {
			t.Errorf("%s%v = %d rewritten, %d originally", c.fn, c.args, got[0], want[0])
		}
		t.Logf("%s%v = %d, %d interrupt calls", c.fn, c.args, got[0], checks)
		if c.fn == "sum" && checks < 100/int64(testInterrupt.Fuel) {
			t.Errorf("sum(100) called the interrupt import %d times, want >= %d", checks, 100/testInterrupt.Fuel)
		}
	}
	// The name section still names the right functions after the shift.
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	cm, err := rt.CompileModule(ctx, out)
	if err != nil {
		t.Fatal(err)
	}
	if got := cm.ExportedFunctions()["sum"].DebugName(); !strings.HasSuffix(got, ".sum") {
		t.Errorf("export sum is named %q, want it to end in .sum", got)
	}
}

func TestRewriteStopsEndlessCode(t *testing.T) {
	loop := wasmbin.LoopForever()
	// spin calls an empty function forever; deep recurses twice per level
	// (2^40 calls, no loop, shallow stack).
	fns := []wasmbin.Func{
		{Type: 0, Body: loop},
		{Type: 0, Body: wasmbin.Concat([]byte{opLoop, 0x40}, wasmbin.Call(2), []byte{opBr, 0, opEnd})},
		{Type: 0},
		{Type: 1, Body: wasmbin.Concat(
			wasmbin.LocalGet(0), []byte{opI32Eqz, opIf, 0x40, 0x0f, opEnd},
			wasmbin.LocalGet(0), wasmbin.I32Const(1), []byte{opI32Sub}, wasmbin.Call(3),
			wasmbin.LocalGet(0), wasmbin.I32Const(1), []byte{opI32Sub}, wasmbin.Call(3),
		)},
	}
	m := &wasmbin.Module{
		Types:   []wasmbin.FuncType{{}, {Params: []byte{i32}}},
		Funcs:   fns,
		Exports: []wasmbin.Export{{Name: "loop", Index: 0}, {Name: "spin", Index: 1}, {Name: "deep", Index: 3}},
	}
	out, _, err := Rewrite(m.Encode(), Options{Interrupt: testInterrupt})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		fn   string
		args []uint64
	}{{"loop", nil}, {"spin", nil}, {"deep", []uint64{40}}} {
		_, checks, err := run(t, out, c.fn, c.args...)
		if err == nil || !strings.Contains(err.Error(), "interrupted") {
			t.Errorf("%s: err = %v, want the interrupt's abort", c.fn, err)
		}
		t.Logf("%s: stopped after %d interrupt calls: %v", c.fn, checks, firstLine(err))
	}
}

func firstLine(err error) string {
	if err == nil {
		return "<nil>"
	}
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

func TestRewriteRefusesReservedImport(t *testing.T) {
	m := &wasmbin.Module{
		Types:   []wasmbin.FuncType{{}},
		Imports: []wasmbin.Import{{Module: testInterrupt.Module, Name: "anything"}},
	}
	if _, _, err := Rewrite(m.Encode(), Options{Interrupt: testInterrupt}); !errors.Is(err, ErrReserved) {
		t.Fatalf("err = %v, want ErrReserved", err)
	}
}

func TestRewriteEmptyModule(t *testing.T) {
	// No type, import or global section: all three are created in order.
	out, _, err := Rewrite((&wasmbin.Module{}).Encode(), Options{Interrupt: testInterrupt})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	if _, err := rt.CompileModule(ctx, out); err != nil {
		t.Fatalf("rewritten empty module does not compile: %v", err)
	}
}

func TestRewriteRejectsMalformed(t *testing.T) {
	good := calls()
	for name, b := range map[string][]byte{
		"empty":          nil,
		"bad magic":      []byte("\x00asx\x01\x00\x00\x00"),
		"truncated":      good[:len(good)-3],
		"unknown opcode": (&wasmbin.Module{Types: []wasmbin.FuncType{{}}, Funcs: []wasmbin.Func{{Body: []byte{0xff}}}}).Encode(),
	} {
		if _, _, err := Rewrite(b, Options{Interrupt: testInterrupt}); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
}

// TestInstructionLengths: the decoder consumes exactly each instruction's
// bytes, for every immediate shape (one instruction per case, then a nop).
func TestInstructionLengths(t *testing.T) {
	for _, ins := range [][]byte{
		{0x00}, {0x01}, {0x02, 0x40}, {0x03, 0x7f}, {0x04, 0x81, 0x01}, {0x05}, {0x0b},
		{0x0c, 0x81, 0x01}, {0x0d, 0}, {0x0e, 2, 0, 1, 0x81, 0x01}, {0x0f},
		{0x10, 0x80, 0x80, 0x01}, {0x11, 3, 0}, {0x12, 1}, {0x13, 1, 0},
		{0x1a}, {0x1b}, {0x1c, 1, 0x7f},
		{0x20, 1}, {0x21, 1}, {0x22, 1}, {0x23, 1}, {0x24, 1}, {0x25, 0}, {0x26, 0},
		{0x28, 2, 0x80, 0x01}, {0x3e, 0, 0}, {0x2d, 0x40, 1, 8}, // multi-memory memarg
		{0x3f, 0}, {0x40, 0},
		{0x41, 0x80, 0x7f}, {0x42, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		{0x43, 1, 2, 3, 4}, {0x44, 1, 2, 3, 4, 5, 6, 7, 8},
		{0x45}, {0x6b}, {0xbf}, {0xc4},
		{0xd0, 0x70}, {0xd1}, {0xd2, 5},
		{0xfc, 0}, {0xfc, 7}, {0xfc, 8, 1, 0}, {0xfc, 9, 1}, {0xfc, 10, 0, 0}, {0xfc, 11, 0},
		{0xfc, 12, 1, 0}, {0xfc, 13, 1}, {0xfc, 14, 0, 0}, {0xfc, 15, 0}, {0xfc, 16, 0}, {0xfc, 17, 0},
		{0xfd, 0, 4, 0}, {0xfd, 11, 4, 16},
		{0xfd, 12, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
		{0xfd, 13, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
		{0xfd, 14}, {0xfd, 21, 3}, {0xfd, 34, 1}, {0xfd, 84, 0, 0, 15}, {0xfd, 91, 3, 8, 1},
		{0xfd, 92, 2, 0}, {0xfd, 93, 3, 0}, {0xfd, 0x80, 0x01}, {0xfd, 0xff, 0x01},
		{0xfe, 0, 2, 0}, {0xfe, 3, 0}, {0xfe, 0x10, 2, 0}, {0xfe, 0x4e, 3, 0},
	} {
		r := &reader{b: append(bytes.Clone(ins), 0x01)}
		c := &code{}
		out, _ := c.instr(r, nil)
		if r.err != nil || r.pos != len(ins) || !bytes.Equal(out, ins) {
			t.Errorf("% x: consumed %d bytes (err %v), want %d", ins, r.pos, r.err, len(ins))
		}
	}
	for _, bad := range [][]byte{{0x06}, {0x1d}, {0xc5}, {0xfc, 18}, {0xfd, 0x80, 0x02}, {0xfe, 4}, {0x1c, 1, 0x55}} {
		r := &reader{b: bad}
		if (&code{}).instr(r, nil); r.err == nil {
			t.Errorf("% x decoded without error", bad)
		}
	}
}

func TestShiftRenumbersOnlyDefinedFunctions(t *testing.T) {
	c := &code{from: 2, delta: 1}
	for _, tc := range []struct{ in, want []byte }{
		{[]byte{opCall, 1}, []byte{opCall, 1}},
		{[]byte{opCall, 2}, []byte{opCall, 3}},
		{[]byte{opRefFunc, 0x7f}, []byte{opRefFunc, 0x80, 0x01}}, // grows by a byte
		{[]byte{opReturnCal, 5}, []byte{opReturnCal, 6}},
	} {
		out, _ := c.instr(&reader{b: tc.in}, nil)
		if !bytes.Equal(out, tc.want) {
			t.Errorf("% x -> % x, want % x", tc.in, out, tc.want)
		}
	}
}

// TestExportGlobals: every mutable defined global and the fuel counter are
// exported under the prefix (immutable ones are not), and a module that
// already exports a name with the prefix is refused.
func TestExportGlobals(t *testing.T) {
	m := &wasmbin.Module{
		Types: []wasmbin.FuncType{{}},
		Funcs: []wasmbin.Func{{Type: 0, Body: wasmbin.Concat(wasmbin.I32Const(7), []byte{opGlobalSet, 1})}},
		Globals: []wasmbin.Global{
			{Type: i32, Init: wasmbin.I32Const(1)},
			{Type: i32, Mutable: true, Init: wasmbin.I32Const(2)},
		},
		Exports: []wasmbin.Export{{Name: "set", Kind: wasmbin.KindFunc}},
	}
	opts := Options{Interrupt: testInterrupt, ExportGlobals: "g."}
	out, st, err := Rewrite(m.Encode(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"g.1", "g.2"}; strings.Join(st.Globals, ",") != strings.Join(want, ",") || st.Start || st.TableOrDropOps != 0 {
		t.Fatalf("stats %+v, want globals %v", st, want)
	}
	ctx := context.Background()
	rt := wazero.NewRuntime(ctx)
	defer rt.Close(ctx)
	if _, err := rt.NewHostModuleBuilder(testInterrupt.Module).NewFunctionBuilder().
		WithFunc(func() int32 { return 3 }).Export(testInterrupt.Name).Instantiate(ctx); err != nil {
		t.Fatal(err)
	}
	mod, err := rt.Instantiate(ctx, out)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mod.ExportedFunction("set").Call(ctx); err != nil {
		t.Fatal(err)
	}
	g, ok := mod.ExportedGlobal("g.1").(api.MutableGlobal)
	if !ok || g.Get() != 7 {
		t.Fatalf("g.1 = %v (mutable %v), want 7", mod.ExportedGlobal("g.1"), ok)
	}
	g.Set(9)
	if fuel := mod.ExportedGlobal("g.2"); fuel == nil || fuel.Get() != 2 { // 3, minus set's entry
		t.Fatalf("fuel global g.2 = %v, want 2", fuel)
	}

	m.Exports = append(m.Exports, wasmbin.Export{Name: "g.x", Kind: wasmbin.KindFunc})
	if _, _, err := Rewrite(m.Encode(), opts); !errors.Is(err, ErrReserved) {
		t.Fatalf("a module exporting g.x: %v, want ErrReserved", err)
	}
}
