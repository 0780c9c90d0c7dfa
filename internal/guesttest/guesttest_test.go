package guesttest

import (
	"os"
	"path/filepath"
	"testing"
)

// TestSourceHashFollowsTheSources: the build cache's key changes when a
// package the guest imports from its module changes, and not otherwise.
// The module is a small one of the test's own.
func TestSourceHashFollowsTheSources(t *testing.T) {
	root := t.TempDir()
	write := func(rel, text string) {
		t.Helper()
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module example.test/g\n\ngo 1.24\n")
	write("lib/lib.go", "package lib\n\nconst Greeting = \"hi\"\n")
	write("guest/main.go", "package main\n\nimport \"example.test/g/lib\"\n\nfunc main() { println(lib.Greeting) }\n")
	write("unrelated/u.go", "package unrelated\n")
	dir := filepath.Join(root, "guest")
	key := func(mode Mode) string {
		t.Helper()
		k, err := sourceHash(dir, mode)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	a := key(Reactor)
	if b := key(Reactor); a != b {
		t.Fatalf("same sources, two keys: %s %s", a, b)
	}
	if key(Command) == a {
		t.Fatal("the mode is not in the key")
	}
	write("unrelated/u.go", "package unrelated\n\nconst X = 1\n")
	write("guest/main_test.go", "package main\n")
	if key(Reactor) != a {
		t.Fatal("a package the guest does not import, or a test file, changed the key")
	}
	write("lib/lib.go", "package lib\n\nconst Greeting = \"hello\"\n")
	if key(Reactor) == a {
		t.Fatal("a change to an imported package of the module did not change the key")
	}
}
