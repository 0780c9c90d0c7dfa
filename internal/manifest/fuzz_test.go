package manifest

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParse checks Parse never panics and keeps its contract on any input:
// either a complete manifest or Errors with positions, at most maxErrors+1.
func FuzzParse(f *testing.F) {
	for _, dir := range []string{"errors", "valid"} {
		for _, c := range goldenFiles(f, dir) {
			f.Add([]byte(c[0]))
		}
	}
	f.Add([]byte("app: a\nfunctions:\n  a: &x\n    module: a.wasm\n  b: *x\n"))
	f.Add([]byte("app: a\nfunctions:\n  a:\n    module: a.wasm\n    routes: [\"GET /{x}/{y...}\", {method: PUT, path: \"/{$}\"}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse("nimbus.yaml", data)
		if err != nil {
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error is %T, not Errors", err)
			}
			if len(errs) == 0 || len(errs) > maxErrors+1 {
				t.Fatalf("%d errors", len(errs))
			}
			for _, e := range errs {
				if !strings.HasPrefix(e.Error(), "nimbus.yaml") || e.Msg == "" {
					t.Fatalf("malformed error %q", e.Error())
				}
			}
			return
		}
		if !nameRe.MatchString(m.App) || len(m.Functions) == 0 {
			t.Fatalf("invalid manifest accepted: %+v", m)
		}
		for _, fn := range m.Functions {
			if fn.Module == "" || fn.MemoryBytes%WasmPageBytes != 0 || fn.Timeout < MinTimeout || fn.Concurrency != 1 || fn.Env == nil {
				t.Fatalf("function %s incomplete: %+v", fn.Name, fn)
			}
		}
	})
}
