package store

import (
	"errors"
	"strings"
	"testing"
)

// TestSpaceGuard: writes are refused below the reserve with an error that
// says what is free, what is kept and what to do; a filesystem that
// cannot be read, or no reserve, stops nothing.
func TestSpaceGuard(t *testing.T) {
	for _, c := range []struct {
		name    string
		free    uint64
		err     error
		reserve uint64
		refused bool
	}{
		{"room", 100 << 20, nil, 64 << 20, false},
		{"below the reserve", 3 << 20, nil, 64 << 20, true},
		{"unreadable", 0, errors.New("statfs: no"), 64 << 20, false},
		{"no reserve", 0, nil, 0, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := &spaceGuard{dir: "/data", reserve: c.reserve, free: func(string) (uint64, error) { return c.free, c.err }}
			err := g.check()
			if refused := err != nil; refused != c.refused {
				t.Fatalf("check() = %v, refused %v, want %v", err, refused, c.refused)
			}
			if !c.refused {
				return
			}
			var dfe *DiskFullError
			if !errors.Is(err, ErrDiskFull) || !errors.As(err, &dfe) || dfe.Free != c.free {
				t.Fatalf("check() = %#v, want a *DiskFullError", err)
			}
			for _, want := range []string{"3.0 MiB free", "/data", "64.0 MiB", "resume by themselves"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("message %q lacks %q", err, want)
				}
			}
		})
	}
	var nilGuard *spaceGuard
	if err := nilGuard.check(); err != nil {
		t.Fatalf("a store without a guard refused a write: %v", err)
	}
}
