package manifest

import (
	"fmt"
	"math/bits"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/nimbus-dev/nimbus/internal/model"
	"gopkg.in/yaml.v3"
)

// sizeUnits maps the units a size may use to bytes: binary (1024-based) units
// as in Kubernetes and wasm, and decimal (1000-based) ones for people who
// think in MB. Units are case-sensitive: "mb" is rejected rather than
// guessed.
var sizeUnits = map[string]uint64{
	"B":   1,
	"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30,
	"KB": 1000, "MB": 1000 * 1000, "GB": 1000 * 1000 * 1000,
}

const sizeUnitList = "B, KiB, MiB, GiB (1024-based) or KB, MB, GB (1000-based)"

var sizeRe = regexp.MustCompile(`^([0-9]+) ?([A-Za-z]*)$`)

// ParseSize parses a size such as 64MiB, 512KiB, 100MB or 1024B.
func ParseSize(s string) (uint64, error) {
	m := sizeRe.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, fmt.Errorf("%q is not a size: use a whole number with a unit, such as 64MiB", s)
	}
	if m[2] == "" {
		return 0, fmt.Errorf("%q has no unit: add one, such as %sMiB (units: %s)", s, m[1], sizeUnitList)
	}
	unit, ok := sizeUnits[m[2]]
	if !ok {
		hint := ""
		for name := range sizeUnits {
			if strings.EqualFold(name, m[2]) {
				hint = fmt.Sprintf(": did you mean %s?", name)
			}
		}
		return 0, fmt.Errorf("%q has an unknown unit %q%s (units: %s)", s, m[2], hint, sizeUnitList)
	}
	n, err := strconv.ParseUint(m[1], 10, 64)
	hi, v := bits.Mul64(n, unit)
	if err != nil || hi != 0 {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return v, nil
}

// size reads a size field and checks it lies in [lo, hi].
func (p *parser) size(n *yaml.Node, field string, lo, hi uint64, example string) (uint64, bool) {
	if n.Kind != yaml.ScalarNode || (n.Tag != "!!str" && n.Tag != "!!int") {
		p.errorf(n, field, "must be a size with a unit, such as %s, not %s", example, describe(n))
		return 0, false
	}
	if n.Tag == "!!int" {
		p.errorf(n, field, "%s has no unit: add one, such as %sMiB (units: %s)", n.Value, n.Value, sizeUnitList)
		return 0, false
	}
	v, err := ParseSize(n.Value)
	if err != nil {
		p.errorf(n, field, "%s", err.Error())
		return 0, false
	}
	if v < lo || v > hi {
		p.errorf(n, field, "%s is out of range: use %s to %s", n.Value, model.FormatBytes(lo), model.FormatBytes(hi))
		return 0, false
	}
	return v, true
}

// duration reads a Go duration field and checks its range.
func (p *parser) duration(n *yaml.Node, field string, def time.Duration) time.Duration {
	if n.Kind != yaml.ScalarNode || (n.Tag != "!!str" && n.Tag != "!!int" && n.Tag != "!!float") {
		p.errorf(n, field, "must be a duration, such as 10s, not %s", describe(n))
		return def
	}
	if n.Tag != "!!str" {
		p.errorf(n, field, "%s has no unit: add one, such as %ss (units: ms, s, m, h)", n.Value, n.Value)
		return def
	}
	d, err := time.ParseDuration(n.Value)
	if err != nil {
		p.errorf(n, field, "%q is not a duration: use a number with a unit, such as 10s, 500ms or 2m", n.Value)
		return def
	}
	if d < MinTimeout || d > MaxTimeout {
		p.errorf(n, field, "%s is out of range: use %s to %s", n.Value, MinTimeout, "15m")
		return def
	}
	return d
}

// ParseDuration parses a Go duration ("90s", "1h30m", "500ms") that may
// start with a whole number of days ("7d", "1d12h"), as retention and TTLs
// are usually thought of. A day is 24h: these durations count elapsed time,
// not calendar days.
func ParseDuration(s string) (time.Duration, error) {
	days, rest := int64(0), s
	if m := daysRe.FindStringSubmatch(s); m != nil {
		n, err := strconv.ParseInt(m[1], 10, 64)
		if err != nil || n > int64(maxDuration/(24*time.Hour)) {
			return 0, fmt.Errorf("%q is too long", s)
		}
		days, rest = n, m[2]
		if rest == "" {
			return time.Duration(days) * 24 * time.Hour, nil
		}
	}
	d, err := time.ParseDuration(rest)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%q is not a duration: use a number with a unit, such as 10s, 500ms, 2m or 7d", s)
	}
	total := time.Duration(days) * 24 * time.Hour
	if d > maxDuration-total {
		return 0, fmt.Errorf("%q is too long", s)
	}
	return total + d, nil
}

const maxDuration = time.Duration(1<<63 - 1)

var daysRe = regexp.MustCompile(`^([0-9]+)d(.*)$`)

// FormatDuration formats d briefly: "1h" rather than "1h0m0s", "7d" for
// whole days.
func FormatDuration(d time.Duration) string {
	if d >= 24*time.Hour && d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// durationIn reads a duration field, days allowed, and checks it lies in
// [lo, hi].
func (p *parser) durationIn(n *yaml.Node, field string, lo, hi time.Duration, example string) (time.Duration, bool) {
	if n.Kind != yaml.ScalarNode || (n.Tag != "!!str" && n.Tag != "!!int" && n.Tag != "!!float") {
		p.errorf(n, field, "must be a duration, such as %s, not %s", example, describe(n))
		return 0, false
	}
	if n.Tag != "!!str" {
		p.errorf(n, field, "%s has no unit: add one, such as %ss (units: ms, s, m, h, d)", n.Value, n.Value)
		return 0, false
	}
	d, err := ParseDuration(n.Value)
	if err != nil {
		p.errorf(n, field, "%s", err.Error())
		return 0, false
	}
	if d < lo || d > hi {
		p.errorf(n, field, "%s is out of range: use %s to %s", n.Value, FormatDuration(lo), FormatDuration(hi))
		return 0, false
	}
	return d, true
}
