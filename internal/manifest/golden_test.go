package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/model"
)

var update = flag.Bool("update", false, "rewrite the expected output of testdata golden files")

// separator divides a golden file's input manifest from its expected output
// (Caddy's adapter tests do the same).
const separator = "\n----------\n"

// goldenFiles returns the golden files in dir with their input and expected
// output.
func goldenFiles(t testing.TB, dir string) map[string][2]string {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("testdata", dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) == 0 {
		t.Fatalf("no golden files in testdata/%s", dir)
	}
	out := map[string][2]string{}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		in, want, _ := strings.Cut(string(data), separator)
		out[p] = [2]string{in, want}
	}
	return out
}

func checkGolden(t *testing.T, path, in, got, want string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, []byte(in+separator+got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if got != want {
		t.Errorf("%s: output differs (run go test -update to accept)\n--- got:\n%s--- want:\n%s", path, got, want)
	}
}

// TestGoldenErrors parses each bad manifest in testdata/errors and compares
// the exact error text with the file's expected output.
func TestGoldenErrors(t *testing.T) {
	files := goldenFiles(t, "errors")
	if len(files) < 25 {
		t.Errorf("only %d golden error cases; keep at least 25", len(files))
	}
	for path, c := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			m, err := Parse("nimbus.yaml", []byte(c[0]))
			if err == nil {
				t.Fatalf("Parse succeeded (%d functions); want errors", len(m.Functions))
			}
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error is %T, not Errors: %v", err, err)
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe != errs[0] {
				t.Errorf("errors.As(*FieldError) does not find the first error")
			}
			checkGolden(t, path, c[0], err.Error()+"\n", c[1])
		})
	}
}

// resolved is the JSON form of a valid manifest used by the valid golden
// files: paths relative to the manifest's directory so the files do not
// depend on where the repo lives.
type resolved struct {
	App string
	// Topics and Buckets are shown as the registry records the server gets.
	Topics    []model.Topic  `json:",omitempty"`
	Buckets   []model.Bucket `json:",omitempty"`
	Functions []resolvedFunction
}

type resolvedFunction struct {
	Function
	Module   string
	BuildDir string `json:",omitempty"`
	Timeout  string
	// Triggers and Flow are shown as registry records (durations in ms),
	// which also checks the conversion.
	Triggers []model.Trigger `json:",omitempty"`
	Flow     *model.Flow     `json:",omitempty"`
}

func resolve(t *testing.T, m *Manifest) string {
	t.Helper()
	r := resolved{App: m.App, Topics: m.RegistryTopics(), Buckets: m.RegistryBuckets()}
	rel := func(p string) string {
		s, err := filepath.Rel(m.Dir, p)
		if err != nil {
			t.Fatal(err)
		}
		return filepath.ToSlash(s)
	}
	for _, f := range m.Functions {
		rf := resolvedFunction{Function: *f, Module: rel(f.Module), Timeout: f.Timeout.String(),
			Triggers: f.Registry("").Triggers, Flow: f.Flow.Registry()}
		if f.Build != nil {
			b := *f.Build
			rf.BuildDir = rel(b.Dir)
			b.Dir = ""
			rf.Function.Build = &b
		}
		r.Functions = append(r.Functions, rf)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// TestGoldenValid parses each good manifest in testdata/valid and compares
// the resolved manifest (defaults filled in) with the expected JSON.
func TestGoldenValid(t *testing.T) {
	for path, c := range goldenFiles(t, "valid") {
		t.Run(filepath.Base(path), func(t *testing.T) {
			m, err := Parse("nimbus.yaml", []byte(c[0]))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			checkGolden(t, path, c[0], resolve(t, m), c[1])
		})
	}
}
