package cron

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// FuzzParse checks that Parse never panics, that its errors are
// *ParseErrors naming the spec, and that an accepted schedule keeps Next's
// and Prev's contract: every accepted schedule has ticks; Next(t) > t,
// Next(Next(t)) > Next(t); Prev(t) <= t < Next(Prev(t)); a tick is its own
// Prev; and String parses back to the same ticks. Seeds are in
// testdata/fuzz/FuzzParse; crashers found later belong there too.
func FuzzParse(f *testing.F) {
	f.Add("*/15 * * * *", int64(1767225600))
	f.Add("CRON_TZ=Europe/Paris 30 2 * * *", int64(1774746000))
	f.Add("@every 1h30m", int64(-1))
	f.Fuzz(func(t *testing.T, spec string, sec int64) {
		s, err := Parse(spec, "")
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Spec != spec || pe.Msg == "" || !strings.HasPrefix(err.Error(), "cron ") {
				t.Fatalf("Parse(%q): malformed error %#v", spec, err)
			}
			return
		}
		again, err := Parse(s.String(), "")
		if err != nil {
			t.Fatalf("Parse(%q).String() = %q does not parse: %v", spec, s.String(), err)
		}
		if again.String() != s.String() {
			t.Fatalf("String not canonical: %q -> %q -> %q", spec, s.String(), again.String())
		}
		// Times from 1900 to 2200, plus both 2026 DST nights in Europe.
		const from, span = -2208988800, 300 * 365 * 86400
		at := time.Unix(from+(sec%span+span)%span, sec&0x3fffffff%1e9)
		for _, x := range []time.Time{at, time.Unix(1774746000, 0), time.Unix(1792890000, 0)} {
			n := s.Next(x)
			if n.IsZero() || !n.After(x) {
				t.Fatalf("%q: Next(%v) = %v, not after it", spec, x, n)
			}
			if n2 := s.Next(n); n2.IsZero() || !n2.After(n) {
				t.Fatalf("%q: Next(%v) = %v, not after it", spec, n, n2)
			}
			if a := again.Next(x); !a.Equal(n) {
				t.Fatalf("%q: Next(%v) = %v, but its String %q gives %v", spec, x, n, s.String(), a)
			}
			if p := s.Prev(n); !p.Equal(n) {
				t.Fatalf("%q: Prev(%v) = %v, want the tick itself", spec, n, p)
			}
			p := s.Prev(x)
			if p.IsZero() || p.After(x) {
				t.Fatalf("%q: Prev(%v) = %v", spec, x, p)
			}
			if np := s.Next(p); !np.Equal(n) {
				t.Fatalf("%q: Next(Prev(%v) = %v) = %v, want Next(%v) = %v", spec, x, p, np, x, n)
			}
		}
	})
}

// TestConcurrentUse hammers one Schedule from several goroutines (run with
// -race): a Schedule is immutable and shared by every trigger evaluation.
func TestConcurrentUse(t *testing.T) {
	s := mustParse(t, "*/7 2-5 * * MON-FRI", "America/New_York")
	start := mustTime(t, "2026-03-01T00:00:00Z")
	want := ticks(s, start, 50)
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for range 8 {
		wg.Go(func() {
			got := ticks(s, start, 50)
			if !equalStrings(got, want) {
				errs <- strings.Join(got, " ")
			}
			Due(s, start, start.Add(72*time.Hour), time.Hour)
			_ = s.Prev(start.Add(96 * time.Hour))
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("concurrent ticks differ: %s", e)
	}
}
