package wasmrw

import (
	"context"
	"testing"

	"github.com/tetratelabs/wazero"

	"github.com/nimbus-dev/nimbus/internal/runtime/wasm/wasmbin"
)

// FuzzRewrite: Rewrite never panics, and what wazero accepts before the
// rewrite it accepts after.
func FuzzRewrite(f *testing.F) {
	f.Add(calls())
	f.Add(dataModule(wasmbin.Data{Offset: 0, Bytes: []byte("ab")}, wasmbin.Data{Offset: 9, Bytes: []byte("c")}))
	f.Add((&wasmbin.Module{Types: []wasmbin.FuncType{{}}, Funcs: []wasmbin.Func{{Body: wasmbin.LoopForever()}}}).Encode())
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer rt.Close(ctx)
	f.Fuzz(func(t *testing.T, b []byte) {
		out, _, err := Rewrite(b, Options{Interrupt: testInterrupt, MergeDataGap: 16})
		orig, cerr := rt.CompileModule(ctx, b)
		if cerr != nil {
			return
		}
		orig.Close(ctx)
		if err != nil {
			// Modules importing the reserved name are refused on purpose.
			for _, def := range orig.ImportedFunctions() {
				if mod, _, _ := def.Import(); mod == testInterrupt.Module {
					return
				}
			}
			t.Fatalf("wazero accepts the module, Rewrite does not: %v", err)
		}
		c, err := rt.CompileModule(ctx, out)
		if err != nil {
			t.Fatalf("the rewritten module does not compile: %v", err)
		}
		c.Close(ctx)
	})
}
