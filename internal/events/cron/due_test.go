package cron

import (
	"testing"
	"time"
)

func TestDue(t *testing.T) {
	const (
		hourly = "0 * * * *"
		at3    = "0 3 * * *"
	)
	tests := []struct {
		name, spec string
		last, now  string // "" is the zero Time
		catchUp    time.Duration
		fire       bool
		tick, next string // "" is the zero Time
	}{
		{"on time", hourly, "2026-05-01T10:00:00Z", "2026-05-01T11:00:00.2Z", time.Hour,
			true, "2026-05-01T11:00:00Z", "2026-05-01T12:00:00Z"},
		{"exactly at the tick", hourly, "2026-05-01T10:00:00Z", "2026-05-01T11:00:00Z", 0,
			true, "2026-05-01T11:00:00Z", "2026-05-01T12:00:00Z"},
		{"nothing due", hourly, "2026-05-01T11:00:00Z", "2026-05-01T11:30:00Z", time.Hour,
			false, "", "2026-05-01T12:00:00Z"},
		{"down, no tick missed", hourly, "2026-05-01T10:00:00Z", "2026-05-01T10:50:00Z", time.Hour,
			false, "", "2026-05-01T11:00:00Z"},
		{"down across one tick", hourly, "2026-05-01T10:00:00Z", "2026-05-01T11:20:00Z", time.Hour,
			true, "2026-05-01T11:00:00Z", "2026-05-01T12:00:00Z"},
		{"down across many ticks: once, for the latest", hourly, "2026-05-01T10:00:00Z", "2026-05-01T15:10:00Z", time.Hour,
			true, "2026-05-01T15:00:00Z", "2026-05-01T16:00:00Z"},
		{"latest missed tick beyond the window", at3, "2026-05-01T03:00:00Z", "2026-05-02T05:00:00Z", time.Hour,
			false, "2026-05-02T03:00:00Z", "2026-05-03T03:00:00Z"},
		{"latest missed tick at the window's edge", at3, "2026-05-01T03:00:00Z", "2026-05-02T04:00:00Z", time.Hour,
			true, "2026-05-02T03:00:00Z", "2026-05-03T03:00:00Z"},
		{"no limit: down for a year", at3, "2025-01-01T03:00:00Z", "2026-01-10T12:00:00Z", NoLimit,
			true, "2026-01-10T03:00:00Z", "2026-01-11T03:00:00Z"},
		{"window 0: late within Grace still fires", at3, "2026-05-01T03:00:00Z", "2026-05-02T03:00:59Z", 0,
			true, "2026-05-02T03:00:00Z", "2026-05-03T03:00:00Z"},
		{"window 0: never catches up after downtime", at3, "2026-05-01T03:00:00Z", "2026-05-02T03:01:01Z", 0,
			false, "2026-05-02T03:00:00Z", "2026-05-03T03:00:00Z"},
		{"negative window is 0", at3, "2026-05-01T03:00:00Z", "2026-05-02T03:02:00Z", -time.Hour,
			false, "2026-05-02T03:00:00Z", "2026-05-03T03:00:00Z"},
		{"window below Grace acts as Grace", at3, "2026-05-01T03:00:00Z", "2026-05-02T03:00:45Z", time.Second,
			true, "2026-05-02T03:00:00Z", "2026-05-03T03:00:00Z"},
		{"first run: no watermark, nothing owed", hourly, "", "2026-05-01T11:30:00Z", NoLimit,
			false, "", "2026-05-01T12:00:00Z"},
		{"first run exactly at a tick: not owed either", hourly, "", "2026-05-01T12:00:00Z", NoLimit,
			false, "", "2026-05-01T13:00:00Z"},
		{"watermark is the creation time: a tick after it is owed", hourly, "2026-05-01T11:59:30Z", "2026-05-01T12:30:00Z", time.Hour,
			true, "2026-05-01T12:00:00Z", "2026-05-01T13:00:00Z"},
		{"watermark is the creation time: a tick before it is not", hourly, "2026-05-01T12:00:30Z", "2026-05-01T12:30:00Z", time.Hour,
			false, "", "2026-05-01T13:00:00Z"},
		{"watermark ahead of a skewed clock", hourly, "2026-05-01T12:00:00Z", "2026-05-01T11:59:58Z", time.Hour,
			false, "", "2026-05-01T13:00:00Z"},
		{"@every 10s, down 5 minutes, window 0", "@every 10s", "2026-05-01T10:00:00Z", "2026-05-01T10:05:03Z", 0,
			true, "2026-05-01T10:05:00Z", "2026-05-01T10:05:10Z"},
		{"missed ticks across a fall-back hour", "CRON_TZ=Europe/Paris 30 * * * *", "2026-10-25T01:30:00+02:00", "2026-10-25T02:40:00+01:00", time.Hour,
			true, "2026-10-25T02:30:00+01:00", "2026-10-25T03:30:00+01:00"},
	}
	parse := func(s string) time.Time {
		if s == "" {
			return time.Time{}
		}
		return mustTime(t, s)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustParse(t, tt.spec, "")
			fire, tick, next := Due(s, parse(tt.last), parse(tt.now), tt.catchUp)
			if fire != tt.fire || !tick.Equal(parse(tt.tick)) || !next.Equal(parse(tt.next)) {
				t.Errorf("Due(%q, last %s, now %s, %v) = %v, %v, %v; want %v, %s, %s",
					tt.spec, tt.last, tt.now, tt.catchUp, fire, tick, next, tt.fire, tt.tick, tt.next)
			}
			if fire || !tick.IsZero() {
				// Recording the tick and asking again never fires again.
				if again, tick2, next2 := Due(s, tick, parse(tt.now), tt.catchUp); again || !tick2.IsZero() || !next2.Equal(next) {
					t.Errorf("after recording %v: Due = %v, %v, %v; want false, zero, %v", tick, again, tick2, next2, next)
				}
			}
		})
	}
}

func TestTickID(t *testing.T) {
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		tick time.Time
		want string
	}{
		{time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC), "2026-11-23T12:00:00Z"},
		{time.Date(2026, 11, 23, 13, 0, 0, 0, paris), "2026-11-23T12:00:00Z"},
		// The two 02:30s of the fall-back night are different ticks.
		{time.Date(2026, 10, 25, 0, 30, 0, 0, time.UTC).In(paris), "2026-10-25T00:30:00Z"},
		{time.Date(2026, 10, 25, 1, 30, 0, 0, time.UTC).In(paris), "2026-10-25T01:30:00Z"},
	}
	for _, tt := range tests {
		if got := TickID(tt.tick); got != tt.want {
			t.Errorf("TickID(%v) = %q, want %q", tt.tick, got, tt.want)
		}
	}
}

type outage struct{ from, to time.Time }

type firing struct{ tick, at time.Time }

// runTrigger plays a cron trigger's loop under a simulated clock: it wakes
// at each next (a little late, as timers are), is down during the outages
// (waking at their end: the restart), and records what it fires.
func runTrigger(t *testing.T, s *Schedule, created, end time.Time, outages []outage, catchUp time.Duration) []firing {
	t.Helper()
	var fired []firing
	last, now := created, created
	for i := 0; now.Before(end); i++ {
		if i > 100_000 {
			t.Fatal("trigger loop does not advance")
		}
		for _, o := range outages {
			if !now.Before(o.from) && now.Before(o.to) {
				now = o.to
			}
		}
		fire, tick, next := Due(s, last, now, catchUp)
		if fire {
			fired = append(fired, firing{tick, now})
		}
		if !tick.IsZero() {
			last = tick // fired, or skipped beyond the window: handled either way
		}
		if next.IsZero() || !next.After(now) {
			t.Fatalf("Due(now %v) = next %v, not after now", now, next)
		}
		now = next.Add(time.Duration(i%5) * 7 * time.Second) // 0-28s late
	}
	return fired
}

// TestTriggerLoopFiresOncePerTick runs a trigger for two days across the
// Paris fall-back night, with outages of several lengths, and checks the
// catch-up rule end to end: every tick while up fires exactly once; the
// ticks of an outage fire at most once, for the latest, at the restart, if
// it is within the window; never a burst.
func TestTriggerLoopFiresOncePerTick(t *testing.T) {
	s := mustParse(t, "*/10 * * * *", "Europe/Paris")
	created := mustTime(t, "2026-10-24T00:00:00+02:00")
	end := mustTime(t, "2026-10-26T00:00:00+01:00")
	outages := []outage{
		{mustTime(t, "2026-10-24T06:05:00+02:00"), mustTime(t, "2026-10-24T06:08:00+02:00")}, // no tick missed
		{mustTime(t, "2026-10-24T09:05:00+02:00"), mustTime(t, "2026-10-24T09:12:00+02:00")}, // one
		{mustTime(t, "2026-10-24T12:05:00+02:00"), mustTime(t, "2026-10-24T13:07:00+02:00")}, // many
		{mustTime(t, "2026-10-24T20:05:00+02:00"), mustTime(t, "2026-10-25T02:00:30+02:00")}, // hours
		{mustTime(t, "2026-10-25T02:45:00+02:00"), mustTime(t, "2026-10-25T02:25:00+01:00")}, // across the change
	}
	for _, catchUp := range []time.Duration{0, 5 * time.Minute, 15 * time.Minute, time.Hour, NoLimit} {
		fired := runTrigger(t, s, created, end, outages, catchUp)
		byTick := map[int64]firing{}
		for i, f := range fired {
			if i > 0 && !f.tick.After(fired[i-1].tick) {
				t.Fatalf("catch-up %v: firing %d for %v does not follow %v", catchUp, i, f.tick, fired[i-1].tick)
			}
			byTick[f.tick.Unix()] = f
		}
		down := func(x time.Time) int {
			for i, o := range outages {
				if !x.Before(o.from) && x.Before(o.to) {
					return i
				}
			}
			return -1
		}
		latestMissed := map[int]time.Time{}
		var all []time.Time
		for x := s.Next(created); x.Before(end); x = s.Next(x) {
			all = append(all, x)
			if o := down(x); o >= 0 {
				latestMissed[o] = x
			}
		}
		for _, x := range all {
			f, ok := byTick[x.Unix()]
			o := down(x)
			switch {
			case o < 0 && !ok:
				t.Errorf("catch-up %v: tick %v while up did not fire", catchUp, x)
			case o < 0 && f.at.Sub(x) >= Grace:
				t.Errorf("catch-up %v: tick %v fired late, at %v", catchUp, x, f.at)
			case o >= 0 && !x.Equal(latestMissed[o]) && ok:
				t.Errorf("catch-up %v: missed tick %v fired, but it is not the latest of its outage (%v)", catchUp, x, latestMissed[o])
			case o >= 0 && x.Equal(latestMissed[o]):
				want := outages[o].to.Sub(x) <= max(catchUp, Grace)
				if ok != want {
					t.Errorf("catch-up %v: latest missed tick %v (restart %v) fired = %v, want %v", catchUp, x, outages[o].to, ok, want)
				}
				if ok && !f.at.Equal(outages[o].to) {
					t.Errorf("catch-up %v: missed tick %v fired at %v, not at the restart %v", catchUp, x, f.at, outages[o].to)
				}
			}
		}
		if len(byTick) != len(fired) {
			t.Errorf("catch-up %v: a tick fired twice", catchUp)
		}
	}
}
