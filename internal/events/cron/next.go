package cron

import (
	"math"
	"math/bits"
	"time"
)

const (
	// horizon bounds how far Next and Prev look. The Gregorian calendar
	// repeats every 400 years (146,097 days, a whole number of weeks), so a
	// schedule that Parse accepted has a tick in any 400-year span; the
	// horizon is only reached near the ends of supported time.
	horizon = 401 * 366 * 86400 // seconds

	// maxAbsUnix bounds the times Next and Prev accept (about ±1 million
	// years), so that no arithmetic below can overflow.
	maxAbsUnix = 1 << 45

	// maxPeriods bounds the zone periods one Next call walks through: a
	// zone has at most a few transitions a year, so this is far more than
	// the horizon needs and only guards against a broken zone database.
	maxPeriods = 8192
)

// Next returns the first tick strictly after after, in the schedule's time
// zone, or the zero Time if there is none within 400 years (which, for a
// schedule Parse accepted, happens only near the ends of representable
// time). Ticks are whole seconds: whole minutes of the zone's wall clock, or
// whole multiples of an @every interval since the Unix epoch.
//
// Around daylight-saving changes, see the package documentation: a schedule
// whose minute and hour fields are both fixed (such as "30 2 * * *") fires
// once for each matching wall time, at the end of the gap if the clocks
// skipped it and at the first occurrence if they repeated it; a schedule
// with "*" in its minute or hour field (such as "0 * * * *") fires at every
// instant the wall clock shows a matching time, which skips the gap and runs
// in both passes of a repeated hour.
func (s *Schedule) Next(after time.Time) time.Time {
	u := after.Unix()
	if u > maxAbsUnix || u < -maxAbsUnix {
		return time.Time{}
	}
	if s.every > 0 {
		d := int64(s.every / time.Second)
		// Ticks are k*d seconds after the epoch; the first one > after
		// is the first one > floor(after), since ticks are whole seconds.
		return time.Unix((floorDiv(u, d)+1)*d, 0).In(s.loc)
	}
	return s.nextWall(u + 1)
}

// Prev returns the last tick at or before at, or the zero Time if there is
// none within 400 years. It is consistent with Next: Next(Prev(t)) > t.
func (s *Schedule) Prev(at time.Time) time.Time {
	u := at.Unix() // a tick <= at is a whole second <= floor(at)
	if u > maxAbsUnix || u < -maxAbsUnix {
		return time.Time{}
	}
	if s.every > 0 {
		d := int64(s.every / time.Second)
		return time.Unix(floorDiv(u, d)*d, 0).In(s.loc)
	}
	// Search backwards in widening windows, walking forward with Next
	// inside each, so that Prev sees exactly the ticks Next produces
	// (including the DST rules) without a second implementation of them.
	for span := int64(120); span <= horizon; span *= 4 {
		from := u - span
		if from < -maxAbsUnix {
			from = -maxAbsUnix
		}
		var last time.Time
		for t := s.nextWall(from + 1); !t.IsZero() && t.Unix() <= u; t = s.nextWall(t.Unix() + 1) {
			last = t
		}
		if !last.IsZero() || from == -maxAbsUnix {
			return last
		}
	}
	return time.Time{}
}

// nextWall returns the first tick of a five-field schedule at or after the
// Unix second minI.
//
// It walks the zone's periods, the spans between two offset changes, in
// order. Within a period the wall clock is the instant plus a constant
// offset, so the first matching wall minute in the period's range is the
// period's first tick. Between periods, the DST rules apply: a forward jump
// leaves a gap of wall times that never occur, a backward jump repeats wall
// times.
func (s *Schedule) nextWall(minI int64) time.Time {
	limit := minI + horizon
	cur := time.Unix(minI, 0).In(s.loc)
	for range maxPeriods {
		_, offset := cur.Zone()
		off := int64(offset)
		start, end := cur.ZoneBounds()
		pStart, pEnd := int64(math.MinInt64), int64(math.MaxInt64)
		if !start.IsZero() {
			pStart = start.Unix()
		}
		if !end.IsZero() {
			pEnd = end.Unix()
		}

		lo := max(minI, pStart) + off
		if s.fixed && !start.IsZero() {
			// A fixed wall time fires at its first occurrence only: after
			// the clocks went back, skip the wall times already shown.
			_, prevOff := start.Add(-time.Second).Zone()
			lo = max(lo, pStart+int64(prevOff))
		}
		hiI := min(pEnd, limit)
		if w, ok := s.firstMatch(lo, hiI+off); ok {
			return time.Unix(w-off, 0).In(s.loc)
		}
		if pEnd >= limit {
			return time.Time{}
		}
		_, nextOffset := end.Zone()
		if next := int64(nextOffset); s.fixed && next > off && pEnd >= minI {
			// The clocks jump forward at pEnd: the wall times
			// [pEnd+off, pEnd+next) never occur. A fixed wall time among
			// them fires when the gap ends, once however many matched.
			if _, ok := s.firstMatch(pEnd+off, pEnd+next); ok {
				return end.In(s.loc)
			}
		}
		cur = end
	}
	return time.Time{}
}

// firstMatch returns the first whole wall-clock minute w with lo <= w < hi
// that the fields match. Wall times are seconds since 1970-01-01 00:00 of
// the wall clock (as if it were UTC), so calendar arithmetic is plain.
func (s *Schedule) firstMatch(lo, hi int64) (int64, bool) {
	w := -floorDiv(-lo, 60) * 60 // round up to a whole minute
	for w < hi {
		days := floorDiv(w, 86400)
		sod := w - days*86400
		y, m, d := civilFromDays(days)
		if s.month&(1<<m) == 0 {
			if m++; m > 12 {
				m, y = 1, y+1
			}
			w = daysFromCivil(y, m, 1) * 86400
			continue
		}
		if !s.dayMatches(d, weekday(days)) {
			w = (days + 1) * 86400
			continue
		}
		h := int(sod / 3600)
		if s.hour&(1<<h) == 0 {
			if nh := nextBit(s.hour, h+1); nh >= 0 {
				w = days*86400 + int64(nh)*3600
			} else {
				w = (days + 1) * 86400
			}
			continue
		}
		mi := int(sod % 3600 / 60)
		if s.minute&(1<<mi) == 0 {
			if nm := nextBit(s.minute, mi+1); nm >= 0 {
				w = days*86400 + int64(h)*3600 + int64(nm)*60
			} else {
				w = days*86400 + int64(h+1)*3600
			}
			continue
		}
		return w, true
	}
	return 0, false
}

// dayMatches applies Vixie cron's day rule: if either day field starts with
// "*", both must match; otherwise either may.
func (s *Schedule) dayMatches(dom, dow int) bool {
	domOK, dowOK := s.dom&(1<<dom) != 0, s.dow&(1<<dow) != 0
	if s.domStar || s.dowStar {
		return domOK && dowOK
	}
	return domOK || dowOK
}

// nextBit returns the lowest set bit of set at or above from, or -1.
func nextBit(set uint64, from int) int {
	if from >= 64 {
		return -1
	}
	if rest := set >> from << from; rest != 0 {
		return bits.TrailingZeros64(rest)
	}
	return -1
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// civilFromDays converts days since 1970-01-01 to a proleptic Gregorian
// date (Howard Hinnant's algorithm).
func civilFromDays(days int64) (year int64, month, day int) {
	z := days + 719468
	era := floorDiv(z, 146097)
	doe := z - era*146097
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	day = int(doy - (153*mp+2)/5 + 1)
	if mp < 10 {
		month = int(mp + 3)
	} else {
		month = int(mp - 9)
	}
	year = yoe + era*400
	if month <= 2 {
		year++
	}
	return year, month, day
}

// daysFromCivil is the inverse of civilFromDays.
func daysFromCivil(year int64, month, day int) int64 {
	if month <= 2 {
		year--
	}
	era := floorDiv(year, 400)
	yoe := year - era*400
	mp := int64((month + 9) % 12)
	doy := (153*mp+2)/5 + int64(day) - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return era*146097 + doe - 719468
}

// weekday returns the day of the week (Sunday = 0) of days since 1970-01-01,
// a Thursday.
func weekday(days int64) int {
	return int(days - floorDiv(days+4, 7)*7 + 4)
}
