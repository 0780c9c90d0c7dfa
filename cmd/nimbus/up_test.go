package main

import (
	"strings"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/server"
)

// TestBodyFlags: --body-budget and --body-min-rate take sizes; 0B turns
// the rate off; anything else is refused with what to write instead.
func TestBodyFlags(t *testing.T) {
	t.Parallel()
	var cfg server.Config
	if err := bodyFlags(&cfg, "512MiB", "8KiB"); err != nil || cfg.BodyBudget != 512<<20 || cfg.BodyRate.MinRate != 8<<10 {
		t.Fatalf("512MiB, 8KiB: %v %+v", err, cfg)
	}
	if err := bodyFlags(&cfg, "256MiB", "0B"); err != nil || !cfg.BodyRate.Off() {
		t.Fatalf("0B: %v %+v", err, cfg.BodyRate)
	}
	for _, c := range []struct{ budget, rate, want string }{
		{"256", "16KiB", "--body-budget \"256\": use a size from 1MiB to 1TiB"},
		{"1KiB", "16KiB", "--body-budget \"1KiB\""},
		{"256MiB", "fast", "--body-min-rate \"fast\": use a size per second"},
	} {
		if err := bodyFlags(&cfg, c.budget, c.rate); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %s: %v, want %q", c.budget, c.rate, err, c.want)
		}
	}
}

// TestIdleCodeFlags: --idle-code-modules and --idle-code-bytes reach the
// server's config; a bad value is refused with what to write instead.
func TestIdleCodeFlags(t *testing.T) {
	t.Parallel()
	var cfg server.Config
	if err := idleCodeFlags(&cfg, 100, "8MiB"); err != nil || cfg.WasmIdleModules != 100 || cfg.WasmIdleModuleBytes != 8<<20 {
		t.Fatalf("100, 8MiB: %v %d %d", err, cfg.WasmIdleModules, cfg.WasmIdleModuleBytes)
	}
	for _, c := range []struct {
		modules     int
		bytes, want string
	}{
		{0, "64MiB", "--idle-code-modules 0: use at least 1"},
		{10, "lots", "--idle-code-bytes \"lots\": use a size"},
	} {
		if err := idleCodeFlags(&cfg, c.modules, c.bytes); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%d %s: %v, want %q", c.modules, c.bytes, err, c.want)
		}
	}
}
