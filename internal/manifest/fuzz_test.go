package manifest

import (
	"errors"
	"strings"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/capability"
	"github.com/nimbus-dev/nimbus/internal/events/cron"
	"github.com/nimbus-dev/nimbus/internal/model"
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
	f.Add([]byte(eventsManifest))
	f.Add([]byte("app: a\ntopics: {t: }\nbuckets: {b: {ttl: 1d}}\nfunctions:\n  a:\n    module: a.wasm\n    capabilities: [kv:b:read, publish:t]\n    triggers: [{topic: t, name: x}, {topic: t}, {bucket: b, key_prefix: a.}, {cron: \"@every 1s\", catch_up: never}]\n    flow: {rate: 1/s, debounce: 1s, key: header.x-y, priority: 0}\n"))
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
		if !model.ValidName(m.App) || len(m.Functions) == 0 {
			t.Fatalf("invalid manifest accepted: %+v", m)
		}
		for _, fn := range m.Functions {
			if fn.Module == "" || fn.MemoryBytes%WasmPageBytes != 0 || fn.Timeout < MinTimeout || fn.Concurrency != 1 || fn.Env == nil {
				t.Fatalf("function %s incomplete: %+v", fn.Name, fn)
			}
			names := map[string]bool{}
			for _, tr := range fn.Triggers {
				if tr.Name == "" || names[tr.Name] || tr.MaxAttempts < 1 || tr.Backoff < MinBackoff || tr.MaxBackoff < tr.Backoff {
					t.Fatalf("function %s: bad trigger %+v", fn.Name, tr)
				}
				names[tr.Name] = true
				if tr.Kind == "cron" {
					if _, err := cron.Parse(tr.Cron, tr.Timezone); err != nil {
						t.Fatalf("function %s: cron trigger does not parse back: %v", fn.Name, err)
					}
				}
			}
			for _, c := range fn.Capabilities {
				if _, err := capability.Parse(c); err != nil {
					t.Fatalf("function %s: capability %q: %v", fn.Name, c, err)
				}
			}
			if fn.Flow != nil && fn.Flow.KeyConcurrency > 0 && fn.Flow.Key == "" {
				t.Fatalf("function %s: key_concurrency without key", fn.Name)
			}
		}
	})
}
