package cron

import (
	"testing"
	"time"
)

// 2026 changes: Europe/Paris springs forward on March 29 at 02:00 CET (to
// 03:00 CEST) and falls back on October 25 at 03:00 CEST (to 02:00 CET);
// America/New_York springs forward on March 8 at 02:00 EST and falls back on
// November 1 at 02:00 EDT (to 01:00 EST).
func TestNextDST(t *testing.T) {
	tests := []struct {
		name, spec, tz, after string
		want                  []string
	}{
		// Wildcard schedules follow the wall clock: nothing in the gap, both
		// passes of a repeated hour, so @hourly fires every real hour.
		{"Paris hourly, spring forward", "0 * * * *", "Europe/Paris", "2026-03-29T00:30:00+01:00",
			[]string{"2026-03-29T01:00:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T04:00:00+02:00"}},
		{"Paris hourly, fall back", "0 * * * *", "Europe/Paris", "2026-10-25T01:30:00+02:00",
			[]string{"2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00", "2026-10-25T03:00:00+01:00"}},
		{"Paris @hourly, fall back", "@hourly", "Europe/Paris", "2026-10-25T02:30:00+02:00",
			[]string{"2026-10-25T02:00:00+01:00", "2026-10-25T03:00:00+01:00"}},
		{"New York hourly, spring forward", "0 * * * *", "America/New_York", "2026-03-08T00:30:00-05:00",
			[]string{"2026-03-08T01:00:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-08T04:00:00-04:00"}},
		{"New York hourly, fall back", "0 * * * *", "America/New_York", "2026-11-01T00:30:00-04:00",
			[]string{"2026-11-01T01:00:00-04:00", "2026-11-01T01:00:00-05:00", "2026-11-01T02:00:00-05:00"}},
		{"Paris half-hourly, spring forward", "*/30 * * * *", "Europe/Paris", "2026-03-29T01:00:00+01:00",
			[]string{"2026-03-29T01:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T03:30:00+02:00"}},
		{"Paris half-hourly, fall back", "*/30 * * * *", "Europe/Paris", "2026-10-25T02:00:00+02:00",
			[]string{"2026-10-25T02:30:00+02:00", "2026-10-25T02:00:00+01:00", "2026-10-25T02:30:00+01:00", "2026-10-25T03:00:00+01:00"}},
		{"Paris every minute of 2am: none on the spring night", "* 2 * * *", "Europe/Paris", "2026-03-29T00:00:00+01:00",
			[]string{"2026-03-30T02:00:00+02:00"}},
		{"Paris every minute of 2am: both passes on the fall night", "* 2 * * *", "Europe/Paris", "2026-10-25T02:58:00+02:00",
			[]string{"2026-10-25T02:59:00+02:00", "2026-10-25T02:00:00+01:00", "2026-10-25T02:01:00+01:00"}},

		// Fixed-time schedules fire once per matching wall time: at the end
		// of a gap, at the first of two occurrences.
		{"Paris 02:30, spring forward: at the end of the gap", "30 2 * * *", "Europe/Paris", "2026-03-28T12:00:00Z",
			[]string{"2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"}},
		{"Paris 02:30, fall back: the first occurrence", "30 2 * * *", "Europe/Paris", "2026-10-24T12:00:00Z",
			[]string{"2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"}},
		{"Paris 02:30, from the repeated hour's second pass", "30 2 * * *", "Europe/Paris", "2026-10-25T02:10:00+01:00",
			[]string{"2026-10-26T02:30:00+01:00"}},
		{"New York 02:30, spring forward: at the end of the gap", "30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z",
			[]string{"2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"}},
		{"New York 02:30, fall back: 02:30 happens once", "30 2 * * *", "America/New_York", "2026-10-31T12:00:00Z",
			[]string{"2026-11-01T02:30:00-05:00", "2026-11-02T02:30:00-05:00"}},
		{"New York 01:30, fall back: the first occurrence", "30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z",
			[]string{"2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"}},
		{"several ticks in one gap fire once", "0,15,30,45 2 * * *", "Europe/Paris", "2026-03-29T00:00:00+01:00",
			[]string{"2026-03-29T03:00:00+02:00", "2026-03-30T02:00:00+02:00"}},
		{"a gap tick and the tick at its end fire once", "0 2,3 * * *", "Europe/Paris", "2026-03-29T00:00:00+01:00",
			[]string{"2026-03-29T03:00:00+02:00", "2026-03-30T02:00:00+02:00"}},
		{"@daily where midnight was skipped (Sao Paulo, 2018)", "@daily", "America/Sao_Paulo", "2018-11-03T12:00:00-03:00",
			[]string{"2018-11-04T01:00:00-02:00", "2018-11-05T00:00:00-02:00"}},

		// Half-hour DST (Lord Howe: +10:30, +11 in summer).
		{"Lord Howe 02:15, spring forward 02:00->02:30", "15 2 * * *", "Australia/Lord_Howe", "2026-10-03T12:00:00+10:30",
			[]string{"2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00"}},
		{"Lord Howe 01:45, fall back 02:00->01:30", "45 1 * * *", "Australia/Lord_Howe", "2026-04-04T12:00:00+11:00",
			[]string{"2026-04-05T01:45:00+11:00", "2026-04-06T01:45:00+10:30"}},
		{"Lord Howe every 15 minutes, fall back", "*/15 * * * *", "Australia/Lord_Howe", "2026-04-05T01:40:00+11:00",
			[]string{"2026-04-05T01:45:00+11:00", "2026-04-05T01:30:00+10:30", "2026-04-05T01:45:00+10:30", "2026-04-05T02:00:00+10:30"}},

		// Samoa skipped December 30, 2011 (from -10 to +14).
		{"a whole day skipped: fixed time fires when it ends", "0 12 * * *", "Pacific/Apia", "2011-12-29T00:00:00-10:00",
			[]string{"2011-12-29T12:00:00-10:00", "2011-12-31T00:00:00+14:00", "2011-12-31T12:00:00+14:00"}},
		{"a whole day skipped: wildcard has no ticks in it", "0 */12 * * *", "Pacific/Apia", "2011-12-29T06:00:00-10:00",
			[]string{"2011-12-29T12:00:00-10:00", "2011-12-31T00:00:00+14:00", "2011-12-31T12:00:00+14:00"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustParse(t, tt.spec, tt.tz)
			got := ticks(s, mustTime(t, tt.after), len(tt.want))
			if !equalStrings(got, tt.want) {
				t.Errorf("Parse(%q, %q).Next from %s:\n got %q\nwant %q", tt.spec, tt.tz, tt.after, got, tt.want)
			}
		})
	}
}

// oracle lists the ticks of s in [from, to] by walking every minute of real
// time and applying the documented DST rules directly to the wall clock the
// time package reports. It shares no code with Next beyond the parsed
// fields, so it checks the zone walk, the calendar arithmetic and the rules.
// It assumes offsets are whole minutes, true for the zones tested.
func oracle(s *Schedule, from, to time.Time) []time.Time {
	wall := func(i int64) int64 {
		t := time.Unix(i, 0).In(s.loc)
		return time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), 0, 0, time.UTC).Unix()
	}
	matches := func(w int64) bool {
		t := time.Unix(w, 0).UTC()
		return s.minute&(1<<t.Minute()) != 0 && s.hour&(1<<t.Hour()) != 0 &&
			s.month&(1<<int(t.Month())) != 0 && s.dayMatches(t.Day(), int(t.Weekday()))
	}
	start := from.Unix() - from.Unix()%60 - 48*3600 // begin early so "seen" is right
	var out []time.Time
	seen := wall(start - 60)
	for i := start; i <= to.Unix(); i += 60 {
		w, prev := wall(i), wall(i-60)
		fire := false
		if !s.fixed {
			fire = matches(w)
		} else {
			for x := prev + 60; x < w; x += 60 { // the clocks skipped these
				if matches(x) {
					fire = true
					break
				}
			}
			if w > seen && matches(w) {
				fire = true
			}
			seen = max(seen, w)
		}
		if fire && i > from.Unix() {
			out = append(out, time.Unix(i, 0))
		}
	}
	return out
}

func TestNextMatchesOracleAroundTransitions(t *testing.T) {
	specs := []string{"0 * * * *", "30 2 * * *", "30 1 * * *", "*/20 * * * *", "* 2 * * *", "0,30 1-3 * * *",
		"15 2 * * SUN", "45 1 * * *", "0 0 * * *", "5 */2 * * *", "0 3 25,29 * *"}
	windows := []struct{ tz, at string }{
		{"Europe/Paris", "2026-03-29T01:00:00Z"},
		{"Europe/Paris", "2026-10-25T01:00:00Z"},
		{"America/New_York", "2026-03-08T07:00:00Z"},
		{"America/New_York", "2026-11-01T06:00:00Z"},
		{"Australia/Lord_Howe", "2026-10-03T15:30:00Z"},
		{"Australia/Lord_Howe", "2026-04-04T15:00:00Z"},
		{"America/Sao_Paulo", "2018-11-04T03:00:00Z"},
		{"Pacific/Apia", "2011-12-30T10:00:00Z"},
	}
	for _, w := range windows {
		at := mustTime(t, w.at)
		from, to := at.Add(-20*time.Hour), at.Add(28*time.Hour)
		for _, spec := range specs {
			s := mustParse(t, spec, w.tz)
			want := oracle(s, from, to)
			var got []time.Time
			for x := s.Next(from); !x.After(to); x = s.Next(x) {
				got = append(got, x)
			}
			if len(got) != len(want) {
				t.Errorf("%s in %s around %s: %d ticks, oracle %d\n got %v\nwant %v", spec, w.tz, w.at, len(got), len(want), got, want)
				continue
			}
			for i := range got {
				if !got[i].Equal(want[i]) {
					t.Errorf("%s in %s around %s: tick %d is %v, oracle %v", spec, w.tz, w.at, i, got[i], want[i])
					break
				}
			}
			// Prev agrees with Next on every tick and between ticks.
			for i, x := range want {
				if p := s.Prev(x); !p.Equal(x) {
					t.Errorf("%s in %s: Prev(%v) = %v, want the tick itself", spec, w.tz, x, p)
				}
				if i > 0 {
					if p := s.Prev(x.Add(-time.Second)); !p.Equal(want[i-1]) {
						t.Errorf("%s in %s: Prev(%v - 1s) = %v, want %v", spec, w.tz, x, p, want[i-1])
					}
				}
			}
		}
	}
}

// TestCalendarMatchesTimePackage checks the calendar arithmetic Next uses
// against the time package, day by day over 1,000 years around the epoch
// and across the proleptic Gregorian calendar's edge years.
func TestCalendarMatchesTimePackage(t *testing.T) {
	for _, startYear := range []int{-401, 1600, 1899, 2096, 9990} {
		day := time.Date(startYear, 1, 1, 0, 0, 0, 0, time.UTC)
		for range 366 * 12 {
			days := floorDiv(day.Unix(), 86400)
			y, m, d := civilFromDays(days)
			if y != int64(day.Year()) || m != int(day.Month()) || d != day.Day() {
				t.Fatalf("civilFromDays(%d) = %d-%d-%d, want %s", days, y, m, d, day.Format(time.DateOnly))
			}
			if back := daysFromCivil(y, m, d); back != days {
				t.Fatalf("daysFromCivil(%d-%d-%d) = %d, want %d", y, m, d, back, days)
			}
			if wd := weekday(days); wd != int(day.Weekday()) {
				t.Fatalf("weekday(%s) = %d, want %d", day.Format(time.DateOnly), wd, day.Weekday())
			}
			day = day.AddDate(0, 0, 1)
		}
	}
}
