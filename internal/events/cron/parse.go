package cron

import (
	"fmt"
	"math/bits"
	"strings"
	"time"
)

// Schedule is a parsed cron schedule. It is immutable after Parse and safe
// for concurrent use. Make one with Parse; the zero Schedule is not valid.
type Schedule struct {
	// body is the canonical spec without the time zone prefix; tz is the
	// zone name as given ("UTC" when none was).
	body string
	tz   string
	loc  *time.Location

	// every is > 0 for "@every <d>"; the fields below are unused then.
	every time.Duration

	// Bit v is set when value v matches. dow uses bits 0-6 (Sunday = 0;
	// 7 is folded into 0 at parse time).
	minute, hour, dom, month, dow uint64

	// domStar and dowStar record whether the field was written starting
	// with "*" or "?" (Vixie cron's DOM_STAR/DOW_STAR): if either is, a day
	// matches when both fields match; otherwise when either does.
	domStar, dowStar bool

	// fixed is true when neither the minute nor the hour field starts with
	// "*": such a schedule names wall times, which fire once per day even
	// when a DST change skips or repeats them (see the package doc).
	fixed bool
}

// ParseError is the error Parse returns. Its message names the spec, the
// field and what is wrong, e.g.
//
//	cron "0 25 * * *": hour field "25": 25 is out of range 0-23
type ParseError struct {
	Spec  string // the spec as given to Parse
	Field string // "minute", "hour", "day-of-month", "month", "day-of-week", "@every", "time zone", or "" for the spec as a whole
	Value string // the offending text of that field
	Msg   string // what is wrong, and how to fix it where that is not obvious
	Err   error  // the underlying error, if any (loading a time zone)
}

func (e *ParseError) Error() string {
	switch e.Field {
	case "":
		return fmt.Sprintf("cron %q: %s", e.Spec, e.Msg)
	case "@every":
		return fmt.Sprintf("cron %q: @every %q: %s", e.Spec, e.Value, e.Msg)
	case "time zone":
		return fmt.Sprintf("cron %q: time zone %q: %s", e.Spec, e.Value, e.Msg)
	}
	return fmt.Sprintf("cron %q: %s field %q: %s", e.Spec, e.Field, e.Value, e.Msg)
}

func (e *ParseError) Unwrap() error { return e.Err }

// fieldSpec describes one of the five fields. The table is never mutated.
type fieldSpec struct {
	name     string
	min, max int      // accepted values (day-of-week accepts 7 for Sunday)
	names    []string // names for values min.. (month) or 0.. (weekday), upper case
	nameKind string
}

var fieldSpecs = [5]fieldSpec{
	{name: "minute", min: 0, max: 59},
	{name: "hour", min: 0, max: 23},
	{name: "day-of-month", min: 1, max: 31},
	{name: "month", min: 1, max: 12, nameKind: "month name (JAN-DEC)",
		names: []string{"JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"}},
	{name: "day-of-week", min: 0, max: 7, nameKind: "weekday name (SUN-SAT)",
		names: []string{"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"}},
}

const (
	fMinute = iota
	fHour
	fDom
	fMonth
	fDow
)

// descriptors maps the @-forms to their five fields (Vixie cron's table).
var descriptors = [...]struct{ name, fields string }{
	{"@yearly", "0 0 1 1 *"},
	{"@annually", "0 0 1 1 *"},
	{"@monthly", "0 0 1 * *"},
	{"@weekly", "0 0 * * 0"},
	{"@daily", "0 0 * * *"},
	{"@midnight", "0 0 * * *"},
	{"@hourly", "0 * * * *"},
}

const wantFields = `want 5 fields "minute hour day-of-month month day-of-week" or a descriptor (@yearly, @monthly, @weekly, @daily, @hourly, @every <duration>)`

// Parse parses a cron spec in the time zone tz.
//
// spec is either five fields, "minute hour day-of-month month day-of-week",
// or a descriptor: @yearly (= @annually), @monthly, @weekly, @daily
// (= @midnight), @hourly, or "@every <duration>". A field is a comma list
// of "*", a value, a range "a-b", each optionally with a step "/n"; "a/n"
// means "a-max/n". Months and weekdays also take three-letter English names
// in any case (JAN, mon); day-of-week 0 and 7 are both Sunday; "?" is "*" in
// the two day fields. When both day fields are restricted (neither starts
// with "*" or "?"), a day matches if either does, as in Vixie cron.
//
// tz is an IANA time zone name such as "Europe/Paris"; "" means UTC. The spec
// may instead start with "CRON_TZ=<zone> " or "TZ=<zone> ".
func Parse(spec, tz string) (*Schedule, error) {
	s := &Schedule{}
	perr := func(field, value, format string, args ...any) error {
		return &ParseError{Spec: spec, Field: field, Value: value, Msg: fmt.Sprintf(format, args...)}
	}

	body := strings.TrimSpace(spec)
	for _, prefix := range []string{"CRON_TZ=", "TZ="} {
		if !strings.HasPrefix(body, prefix) {
			continue
		}
		zone, rest, _ := strings.Cut(body[len(prefix):], " ")
		if i := strings.IndexAny(zone, "\t\n\v\f\r"); i >= 0 {
			zone, rest = zone[:i], zone[i:]+" "+rest
		}
		if zone == "" {
			return nil, perr("", "", "%s needs a zone name, e.g. %sEurope/Paris", prefix, prefix)
		}
		if tz != "" && tz != zone {
			return nil, perr("time zone", zone, "conflicts with the time zone %q given beside the spec; give one", tz)
		}
		tz, body = zone, strings.TrimSpace(rest)
		break
	}

	loc, err := loadZone(tz)
	if err != nil {
		return nil, &ParseError{Spec: spec, Field: "time zone", Value: tz, Msg: err.Error(), Err: err}
	}
	s.loc, s.tz = loc, loc.String()

	fields := strings.Fields(body)
	if len(fields) == 0 {
		return nil, perr("", "", "empty schedule: %s", wantFields)
	}

	if strings.HasPrefix(fields[0], "@") {
		name := strings.ToLower(fields[0])
		if name == "@every" {
			if len(fields) != 2 {
				return nil, perr("", "", `@every takes one duration, e.g. "@every 1h30m"`)
			}
			d, err := time.ParseDuration(fields[1])
			switch {
			case err != nil:
				return nil, perr("@every", fields[1], "not a duration (write e.g. 90s, 15m, 1h30m)")
			case d < time.Second:
				return nil, perr("@every", fields[1], "interval must be at least 1s")
			case d%time.Second != 0:
				return nil, perr("@every", fields[1], "interval must be a whole number of seconds")
			}
			s.every, s.body = d, "@every "+d.String()
			return s, nil
		}
		if name == "@reboot" {
			return nil, perr("", "", "@reboot is not supported: a cron trigger fires on a schedule, not when the server starts")
		}
		for _, d := range descriptors {
			if d.name != name {
				continue
			}
			if len(fields) != 1 {
				return nil, perr("", "", "%s takes no fields after it", d.name)
			}
			if err := s.parseFields(strings.Fields(d.fields), perr); err != nil {
				return nil, err
			}
			s.body = d.name
			return s, nil
		}
		return nil, perr("", "", "unknown descriptor %q: want @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly or @every <duration>", fields[0])
	}

	if len(fields) != 5 {
		hint := ""
		if len(fields) > 5 {
			hint = " (seconds and years fields are not supported; for sub-minute schedules use @every)"
		}
		return nil, perr("", "", "got %d fields, %s%s", len(fields), wantFields, hint)
	}
	if err := s.parseFields(fields, perr); err != nil {
		return nil, err
	}
	s.body = strings.Join(fields, " ")
	return s, nil
}

func (s *Schedule) parseFields(fields []string, perr func(field, value, format string, args ...any) error) error {
	var sets [5]uint64
	for i, text := range fields {
		set, msg := parseField(text, &fieldSpecs[i], i == fDom || i == fDow)
		if msg != "" {
			return perr(fieldSpecs[i].name, text, "%s", msg)
		}
		sets[i] = set
	}
	// Sunday is 0 and 7; keep it as bit 0 only.
	if sets[fDow]&(1<<7) != 0 {
		sets[fDow] = sets[fDow]&^(1<<7) | 1
	}
	s.minute, s.hour, s.dom, s.month, s.dow = sets[fMinute], sets[fHour], sets[fDom], sets[fMonth], sets[fDow]
	star := func(f string) bool { return f[0] == '*' || f[0] == '?' }
	s.domStar, s.dowStar = star(fields[fDom]), star(fields[fDow])
	s.fixed = !star(fields[fMinute]) && !star(fields[fHour])

	// When a day must match day-of-month (a day field starts with "*", so
	// both must match), some chosen month must have some chosen day, or the
	// schedule would never fire: say so now rather than never.
	if s.domStar || s.dowStar {
		longest := 0
		for m := 1; m <= 12; m++ {
			if s.month&(1<<m) != 0 {
				longest = max(longest, daysIn[m])
			}
		}
		if first := bits.TrailingZeros64(s.dom); first > longest {
			return perr("", "", "day-of-month %q never occurs in month %q (the longest of those months has %d days)", fields[fDom], fields[fMonth], longest)
		}
	}
	return nil
}

// daysIn is the most days each month can have (February: 29).
var daysIn = [13]int{0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}

// parseField returns the set of values text selects, or a message saying
// what is wrong.
func parseField(text string, f *fieldSpec, question bool) (uint64, string) {
	var set uint64
	for _, part := range strings.Split(text, ",") {
		if part == "" {
			return 0, "empty element in list"
		}
		rng, stepText, hasStep := strings.Cut(part, "/")
		var lo, hi int
		switch {
		case rng == "*" || (rng == "?" && question):
			lo, hi = f.min, f.max
			if f.max == 7 { // "*" in day-of-week is 0-6; 7 only repeats Sunday
				hi = 6
			}
		case strings.Contains(rng, "-"):
			a, b, _ := strings.Cut(rng, "-")
			var msg string
			if lo, msg = parseValue(a, f); msg != "" {
				return 0, msg
			}
			if hi, msg = parseValue(b, f); msg != "" {
				return 0, msg
			}
			if lo > hi {
				return 0, fmt.Sprintf("range %s runs backwards (%d > %d); split it, e.g. %q", rng, lo, hi, fmt.Sprintf("%s-%d,%d-%s", a, f.max, f.min, b))
			}
		default:
			var msg string
			if lo, msg = parseValue(rng, f); msg != "" {
				return 0, msg
			}
			hi = lo
			if hasStep { // "a/n" is "a-max/n"
				hi = f.max
				if f.max == 7 {
					hi = max(lo, 6)
				}
			}
		}
		step := 1
		if hasStep {
			span := f.max - f.min + 1
			if f.max == 7 {
				span = 7
			}
			n, ok := atoi(stepText)
			switch {
			case !ok:
				return 0, fmt.Sprintf("step %q is not a number", stepText)
			case n < 1:
				return 0, "step must be at least 1"
			case n > span:
				return 0, fmt.Sprintf("step %s is out of range 1-%d", stepText, span)
			}
			step = n
		}
		for v := lo; v <= hi; v += step {
			set |= 1 << v
		}
	}
	return set, ""
}

// parseValue parses one number or name of field f.
func parseValue(text string, f *fieldSpec) (int, string) {
	if text == "" {
		return 0, "missing value in range"
	}
	if n, ok := atoi(text); ok {
		if n < f.min || n > f.max {
			return 0, fmt.Sprintf("%s is out of range %d-%d", text, f.min, f.max)
		}
		return n, ""
	}
	if isDigits(text) { // too many digits for atoi
		return 0, fmt.Sprintf("%s is out of range %d-%d", text, f.min, f.max)
	}
	for i, name := range f.names {
		if strings.EqualFold(text, name) {
			if f.max == 7 {
				return i, ""
			}
			return f.min + i, ""
		}
	}
	if f.nameKind != "" {
		return 0, fmt.Sprintf("%q is not a number or a %s", text, f.nameKind)
	}
	return 0, fmt.Sprintf("%q is not a number", text)
}

// atoi parses a short run of decimal digits (no sign), so values never
// overflow.
func atoi(s string) (int, bool) {
	if s == "" || len(s) > 4 || !isDigits(s) {
		return 0, false
	}
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n, true
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// loadZone loads an IANA zone; "" and "UTC" are UTC. "Local" is refused:
// nodes of a cluster must agree on every tick, and the machine's zone is not
// something they share.
func loadZone(name string) (*time.Location, error) {
	switch name {
	case "", "UTC":
		return time.UTC, nil
	case "Local":
		return nil, fmt.Errorf(`"Local" is the machine's zone, which nodes need not share; name an IANA zone such as "Europe/Paris"`)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, &zoneError{err}
	}
	return loc, nil
}

// zoneError keeps LoadLocation's error for errors.Is/As but says it in
// words a user can act on.
type zoneError struct{ err error }

func (e *zoneError) Error() string {
	return `unknown time zone: want an IANA name such as "Europe/Paris" or "America/New_York" ("" means UTC); if the name is right, this machine lacks tzdata`
}

func (e *zoneError) Unwrap() error { return e.err }

// String returns the schedule in a canonical form that Parse accepts and
// that parses to the same schedule: the fields as given, separated by single
// spaces (or the descriptor in lower case, or "@every" with Go's duration
// form), prefixed by "CRON_TZ=<zone> " unless the zone is UTC.
func (s *Schedule) String() string {
	if s.tz == "UTC" {
		return s.body
	}
	return "CRON_TZ=" + s.tz + " " + s.body
}

// Location returns the schedule's time zone.
func (s *Schedule) Location() *time.Location { return s.loc }
