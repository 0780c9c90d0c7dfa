package cron

import (
	"testing"
	"time"
)

func benchSchedules() []struct{ name, spec, tz string } {
	return []struct{ name, spec, tz string }{
		{"every5m", "*/5 * * * *", ""},
		{"daily-paris", "30 2 * * *", "Europe/Paris"},
		{"weekday-ny", "0 9-17 * * MON-FRI", "America/New_York"},
		{"every90m", "@every 90m", ""},
		// The worst case: a rare date (Feb 29 on a Sunday) in a DST zone.
		{"rare-paris", "0 0 29 2 */7", "Europe/Paris"},
	}
}

func BenchmarkNext(b *testing.B) {
	at := time.Date(2026, 3, 28, 23, 59, 0, 0, time.UTC)
	for _, c := range benchSchedules() {
		s := mustParse(b, c.spec, c.tz)
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				s.Next(at)
			}
		})
	}
}

func BenchmarkPrev(b *testing.B) {
	at := time.Date(2026, 3, 28, 23, 59, 0, 0, time.UTC)
	for _, c := range benchSchedules() {
		s := mustParse(b, c.spec, c.tz)
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				s.Prev(at)
			}
		})
	}
}

func BenchmarkDue(b *testing.B) {
	s := mustParse(b, "*/5 * * * *", "Europe/Paris")
	last := time.Date(2026, 3, 28, 10, 0, 0, 0, time.UTC)
	now := last.Add(3*time.Hour + 7*time.Second)
	for b.Loop() {
		Due(s, last, now, time.Hour)
	}
}

func BenchmarkParse(b *testing.B) {
	for b.Loop() {
		if _, err := Parse("0,30 9-17/2 1-15 JAN-JUN MON-FRI", "Europe/Paris"); err != nil {
			b.Fatal(err)
		}
	}
}
