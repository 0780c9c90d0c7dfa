package guestbuild

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPack: the same files give the same bytes whatever their times; the
// executable bit survives; version-control directories and links out of
// the directory are not shipped.
func TestPack(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string, mode os.FileMode) {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("app.py", "print(1)", 0o644)
	write("bin/server", "#!/bin/sh", 0o755)
	write(".git/HEAD", "ref", 0o644)
	if err := os.Symlink("bin/server", filepath.Join(dir, "run")); err != nil {
		t.Fatal(err)
	}
	a, err := Pack(dir)
	if err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Hour)
	os.Chtimes(filepath.Join(dir, "app.py"), later, later)
	b, err := Pack(dir)
	if err != nil || !bytes.Equal(a, b) {
		t.Fatalf("Pack is not stable across mtimes: %v", err)
	}
	got := map[string]int64{}
	tr := tar.NewReader(bytes.NewReader(a))
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		got[h.Name] = h.Mode
	}
	if got["bin/server"] != 0o755 || got["app.py"] != 0o644 || got["run"] == 0 {
		t.Fatalf("entries %v", got)
	}
	for name := range got {
		if strings.HasPrefix(name, ".git") {
			t.Fatalf("packed %s", name)
		}
	}
	if err := os.Symlink("../../etc/passwd", filepath.Join(dir, "escape")); err != nil {
		t.Fatal(err)
	}
	if _, err := Pack(dir); err == nil || !strings.Contains(err.Error(), "points outside") {
		t.Fatalf("Pack with a link out: %v", err)
	}
}
