package layers

import (
	"bufio"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const (
	module  = "github.com/nimbus-dev/nimbus"
	docPath = "docs/dev/architecture.md"
	// heading starts the section whose first table holds the rules.
	heading = "## Which package may import which"
)

// rules reads the table under heading: package -> allowed imports of ours.
// A row's second cell lists packages separated by commas, "-" for none, or
// "any" for every package; an entry ending in "/..." allows the package and
// everything under it.
func rules(t *testing.T, root string) map[string][]string {
	t.Helper()
	f, err := os.Open(filepath.Join(root, docPath))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string][]string{}
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, heading):
			in = true
			continue
		case !in:
			continue
		case strings.HasPrefix(line, "## "):
			in = false
			continue
		case !strings.HasPrefix(line, "|"):
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) < 2 {
			continue
		}
		pkg := strings.Trim(strings.TrimSpace(cells[0]), "`")
		if pkg == "package" || strings.HasPrefix(pkg, "---") {
			continue
		}
		var allowed []string
		for _, a := range strings.Split(cells[1], ",") {
			a = strings.Trim(strings.TrimSpace(a), "`")
			if a != "" && a != "-" {
				allowed = append(allowed, a)
			}
		}
		out[pkg] = allowed
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatalf("%s: no rules table under %q", docPath, heading)
	}
	return out
}

func allows(allowed []string, imp string) bool {
	for _, a := range allowed {
		switch {
		case a == "any", a == imp:
			return true
		case strings.HasSuffix(a, "/..."):
			base := strings.TrimSuffix(a, "/...")
			if imp == base || strings.HasPrefix(imp, base+"/") {
				return true
			}
		}
	}
	return false
}

// imports lists, per package directory (relative to root), the imports of
// this module made by its non-test files.
func imports(t *testing.T, root string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if p != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(p))
		pkg := filepath.ToSlash(rel)
		if _, ok := out[pkg]; !ok {
			out[pkg] = nil
		}
		for _, s := range f.Imports {
			imp := strings.Trim(s.Path.Value, `"`)
			if imp == module || strings.HasPrefix(imp, module+"/") {
				imp = strings.TrimPrefix(strings.TrimPrefix(imp, module), "/")
				if !slices.Contains(out[pkg], imp) {
					out[pkg] = append(out[pkg], imp)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestImportRules enforces docs/dev/architecture.md's import table.
func TestImportRules(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	allowed := rules(t, root)
	for pkg, imps := range imports(t, root) {
		rule, ok := allowed[pkg]
		if !ok && strings.HasPrefix(pkg, "examples/") {
			rule, ok = allowed["examples/..."]
		}
		if !ok {
			t.Errorf("package %s has no row in %s (%q): add one saying what it may import", pkg, docPath, heading)
			continue
		}
		for _, imp := range imps {
			if !allows(rule, imp) {
				t.Errorf("%s imports %s, which %s does not allow for it (allowed: %s); "+
					"move the code, or change the rule there and say why", pkg, imp, docPath, strings.Join(rule, ", "))
			}
		}
	}
	for pkg := range allowed {
		if pkg == "examples/..." {
			continue
		}
		if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(path.Clean(pkg)))); err != nil {
			t.Errorf("%s has a row for %s, which does not exist: remove it", docPath, pkg)
		}
	}
}
