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
