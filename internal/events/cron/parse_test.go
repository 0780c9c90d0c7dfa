package cron

import (
	"errors"
	"testing"
	"time"
)

func mustParse(t testing.TB, spec, tz string) *Schedule {
	t.Helper()
	s, err := Parse(spec, tz)
	if err != nil {
		t.Fatalf("Parse(%q, %q): %v", spec, tz, err)
	}
	return s
}

func mustTime(t testing.TB, s string) time.Time {
	t.Helper()
	tm, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

// ticks returns the next n ticks after after, in RFC 3339 with the zone's
// offset.
func ticks(s *Schedule, after time.Time, n int) []string {
	var out []string
	for range n {
		after = s.Next(after)
		if after.IsZero() {
			out = append(out, "zero")
			break
		}
		out = append(out, after.Format(time.RFC3339))
	}
	return out
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestNext(t *testing.T) {
	const jan1 = "2026-01-01T00:00:00Z" // a Thursday
	tests := []struct {
		name, spec, tz, after string
		want                  []string
	}{
		{"every minute", "* * * * *", "", "2026-01-01T00:00:30Z",
			[]string{"2026-01-01T00:01:00Z", "2026-01-01T00:02:00Z"}},
		{"strictly after a tick", "0 * * * *", "", "2026-01-01T01:00:00Z",
			[]string{"2026-01-01T02:00:00Z"}},
		{"nanoseconds after a tick", "0 * * * *", "", "2026-01-01T01:00:00.000000001Z",
			[]string{"2026-01-01T02:00:00Z"}},
		{"step", "*/15 * * * *", "", "2026-01-01T00:07:00Z",
			[]string{"2026-01-01T00:15:00Z", "2026-01-01T00:30:00Z", "2026-01-01T00:45:00Z", "2026-01-01T01:00:00Z"}},
		{"step from a start", "5/20 * * * *", "", jan1,
			[]string{"2026-01-01T00:05:00Z", "2026-01-01T00:25:00Z", "2026-01-01T00:45:00Z", "2026-01-01T01:05:00Z"}},
		{"step in a range", "0 1-10/4 * * *", "", jan1,
			[]string{"2026-01-01T01:00:00Z", "2026-01-01T05:00:00Z", "2026-01-01T09:00:00Z", "2026-01-02T01:00:00Z"}},
		{"list", "0 8,12,18 * * *", "", "2026-01-01T12:00:00Z",
			[]string{"2026-01-01T18:00:00Z", "2026-01-02T08:00:00Z"}},
		{"31st skips short months", "0 0 31 * *", "", jan1,
			[]string{"2026-01-31T00:00:00Z", "2026-03-31T00:00:00Z", "2026-05-31T00:00:00Z", "2026-07-31T00:00:00Z",
				"2026-08-31T00:00:00Z", "2026-10-31T00:00:00Z", "2026-12-31T00:00:00Z", "2027-01-31T00:00:00Z"}},
		{"30th skips February", "59 23 30 * *", "", jan1,
			[]string{"2026-01-30T23:59:00Z", "2026-03-30T23:59:00Z", "2026-04-30T23:59:00Z"}},
		{"leap day", "0 0 29 2 *", "", jan1,
			[]string{"2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z", "2036-02-29T00:00:00Z"}},
		{"leap day across 2100, not a leap year", "0 0 29 2 *", "", "2096-03-01T00:00:00Z",
			[]string{"2104-02-29T00:00:00Z"}},
		{"year end", "0 0 1 1 *", "", "2026-12-31T23:59:59Z",
			[]string{"2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z"}},
		{"either day field (Friday or the 13th)", "0 0 13 * FRI", "", jan1,
			[]string{"2026-01-02T00:00:00Z", "2026-01-09T00:00:00Z", "2026-01-13T00:00:00Z", "2026-01-16T00:00:00Z",
				"2026-01-23T00:00:00Z", "2026-01-30T00:00:00Z", "2026-02-06T00:00:00Z", "2026-02-13T00:00:00Z", "2026-02-20T00:00:00Z"}},
		{"either day field (first week or Monday)", "0 0 1-3 * MON", "", "2026-01-02T12:00:00Z",
			[]string{"2026-01-03T00:00:00Z", "2026-01-05T00:00:00Z", "2026-01-12T00:00:00Z", "2026-01-19T00:00:00Z",
				"2026-01-26T00:00:00Z", "2026-02-01T00:00:00Z", "2026-02-02T00:00:00Z", "2026-02-03T00:00:00Z", "2026-02-09T00:00:00Z"}},
		{"either day field (leap day or a Monday in February)", "0 0 29 2 1", "", jan1,
			[]string{"2026-02-02T00:00:00Z", "2026-02-09T00:00:00Z", "2026-02-16T00:00:00Z", "2026-02-23T00:00:00Z", "2027-02-01T00:00:00Z"}},
		{"day-of-month starting with * means both", "0 0 */10 * MON", "", jan1,
			[]string{"2026-05-11T00:00:00Z", "2026-06-01T00:00:00Z"}}, // days 1, 11, 21, 31 that are Mondays
		{"? is *", "0 0 ? * MON", "", jan1,
			[]string{"2026-01-05T00:00:00Z", "2026-01-12T00:00:00Z"}},
		{"names, any case", "0 12 * jan-MAR Mon-fri", "", "2026-01-01T12:00:00Z",
			[]string{"2026-01-02T12:00:00Z", "2026-01-05T12:00:00Z", "2026-01-06T12:00:00Z"}},
		{"month names past the range", "0 0 1 NOV,dec,Jan *", "", jan1,
			[]string{"2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z", "2027-11-01T00:00:00Z"}},
		{"7 is Sunday", "0 0 * * 7", "", jan1,
			[]string{"2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z"}},
		{"range ending in 7", "0 0 * * 5-7", "", jan1,
			[]string{"2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z", "2026-01-04T00:00:00Z", "2026-01-09T00:00:00Z"}},
		{"0 and 7 together", "0 0 * * 0,7", "", jan1,
			[]string{"2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z"}},
		{"weekday step", "0 0 * * */3", "", jan1, // Sunday, Wednesday, Saturday
			[]string{"2026-01-03T00:00:00Z", "2026-01-04T00:00:00Z", "2026-01-07T00:00:00Z", "2026-01-10T00:00:00Z"}},
		{"@yearly", "@yearly", "", jan1, []string{"2027-01-01T00:00:00Z"}},
		{"@annually", "@annually", "", jan1, []string{"2027-01-01T00:00:00Z"}},
		{"@monthly", "@monthly", "", jan1, []string{"2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"}},
		{"@weekly is Sunday midnight", "@weekly", "", jan1, []string{"2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z"}},
		{"@daily", "@daily", "", jan1, []string{"2026-01-02T00:00:00Z"}},
		{"@midnight", "@MIDNIGHT", "", jan1, []string{"2026-01-02T00:00:00Z"}},
		{"@hourly", "@hourly", "", "2026-01-01T00:59:59Z", []string{"2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z"}},
		// @every counts from the Unix epoch: 2026-01-01T00:00Z is 327264
		// periods of 90m after it, so it is a tick.
		{"@every aligned to the epoch", "@every 90m", "", jan1,
			[]string{"2026-01-01T01:30:00Z", "2026-01-01T03:00:00Z", "2026-01-01T04:30:00Z"}},
		// 1767225600 (2026-01-01) = 2677614*660 + 360: the last tick was at
		// 23:54, the next at 00:05.
		{"@every not dividing a day", "@every 11m", "", jan1,
			[]string{"2026-01-01T00:05:00Z", "2026-01-01T00:16:00Z", "2026-01-01T00:27:00Z"}},
		{"@every seconds", "@every 1s", "", "2026-01-01T00:00:00.5Z",
			[]string{"2026-01-01T00:00:01Z", "2026-01-01T00:00:02Z"}},
		{"@every ignores the zone's wall clock", "@every 1h", "Asia/Kolkata", jan1,
			[]string{"2026-01-01T06:30:00+05:30", "2026-01-01T07:30:00+05:30"}},
		{"@every before the epoch", "@every 7h", "", "1969-12-31T00:00:00Z",
			[]string{"1969-12-31T03:00:00Z", "1969-12-31T10:00:00Z", "1969-12-31T17:00:00Z", "1970-01-01T00:00:00Z"}},
		{"time zone", "0 9 * * *", "Asia/Kolkata", jan1,
			[]string{"2026-01-01T09:00:00+05:30", "2026-01-02T09:00:00+05:30"}},
		{"CRON_TZ prefix", "CRON_TZ=America/New_York 0 0 1 1 *", "", jan1,
			[]string{"2026-01-01T00:00:00-05:00", "2027-01-01T00:00:00-05:00"}},
		{"TZ prefix, same zone beside it", "TZ=Europe/Paris @daily", "Europe/Paris", jan1,
			[]string{"2026-01-02T00:00:00+01:00", "2026-01-03T00:00:00+01:00"}},
		{"UTC by name", "0 0 * * *", "UTC", jan1, []string{"2026-01-02T00:00:00Z"}},
		{"before 1970", "30 6 29 2 *", "", "1900-01-01T00:00:00Z", // 1900 is not a leap year
			[]string{"1904-02-29T06:30:00Z", "1908-02-29T06:30:00Z"}},
		{"far future", "0 0 1 1 *", "", "9999-06-01T00:00:00Z", []string{"10000-01-01T00:00:00Z"}},
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

func TestParseErrors(t *testing.T) {
	const fields = `want 5 fields "minute hour day-of-month month day-of-week" or a descriptor (@yearly, @monthly, @weekly, @daily, @hourly, @every <duration>)`
	const zoneHint = `unknown time zone: want an IANA name such as "Europe/Paris" or "America/New_York" ("" means UTC); if the name is right, this machine lacks tzdata`
	tests := []struct{ spec, tz, want string }{
		{"*/0 * * * *", "", `cron "*/0 * * * *": minute field "*/0": step must be at least 1`},
		{"0 25 * * *", "", `cron "0 25 * * *": hour field "25": 25 is out of range 0-23`},
		{"0 1,2,25 * * *", "", `cron "0 1,2,25 * * *": hour field "1,2,25": 25 is out of range 0-23`},
		{"60 * * * *", "", `cron "60 * * * *": minute field "60": 60 is out of range 0-59`},
		{"99999 * * * *", "", `cron "99999 * * * *": minute field "99999": 99999 is out of range 0-59`},
		{"0 0 0 * *", "", `cron "0 0 0 * *": day-of-month field "0": 0 is out of range 1-31`},
		{"0 0 32 * *", "", `cron "0 0 32 * *": day-of-month field "32": 32 is out of range 1-31`},
		{"0 0 * 13 *", "", `cron "0 0 * 13 *": month field "13": 13 is out of range 1-12`},
		{"0 0 * 0 *", "", `cron "0 0 * 0 *": month field "0": 0 is out of range 1-12`},
		{"0 0 * * 8", "", `cron "0 0 * * 8": day-of-week field "8": 8 is out of range 0-7`},
		{"0 0 * FOO *", "", `cron "0 0 * FOO *": month field "FOO": "FOO" is not a number or a month name (JAN-DEC)`},
		{"0 0 * * MONDAY", "", `cron "0 0 * * MONDAY": day-of-week field "MONDAY": "MONDAY" is not a number or a weekday name (SUN-SAT)`},
		{"0 0 MON * *", "", `cron "0 0 MON * *": day-of-month field "MON": "MON" is not a number`},
		{"0 0 L * *", "", `cron "0 0 L * *": day-of-month field "L": "L" is not a number`},
		{"? * * * *", "", `cron "? * * * *": minute field "?": "?" is not a number`},
		{"-5 * * * *", "", `cron "-5 * * * *": minute field "-5": missing value in range`},
		{"1-2-3 * * * *", "", `cron "1-2-3 * * * *": minute field "1-2-3": "2-3" is not a number`},
		{"0 22-2 * * *", "", `cron "0 22-2 * * *": hour field "22-2": range 22-2 runs backwards (22 > 2); split it, e.g. "22-23,0-2"`},
		{"1,,2 * * * *", "", `cron "1,,2 * * * *": minute field "1,,2": empty element in list`},
		{"1, * * * *", "", `cron "1, * * * *": minute field "1,": empty element in list`},
		{"*/61 * * * *", "", `cron "*/61 * * * *": minute field "*/61": step 61 is out of range 1-60`},
		{"0 0 * * */8", "", `cron "0 0 * * */8": day-of-week field "*/8": step 8 is out of range 1-7`},
		{"*/x * * * *", "", `cron "*/x * * * *": minute field "*/x": step "x" is not a number`},
		{"*/ * * * *", "", `cron "*/ * * * *": minute field "*/": step "" is not a number`},
		{"0 0 30 2 *", "", `cron "0 0 30 2 *": day-of-month "30" never occurs in month "2" (the longest of those months has 29 days)`},
		{"0 0 31 APR,jun,9,11 *", "", `cron "0 0 31 APR,jun,9,11 *": day-of-month "31" never occurs in month "APR,jun,9,11" (the longest of those months has 30 days)`},
		{"0 0 31 4 */2", "", `cron "0 0 31 4 */2": day-of-month "31" never occurs in month "4" (the longest of those months has 30 days)`},
		{"", "", `cron "": empty schedule: ` + fields},
		{"   ", "", `cron "   ": empty schedule: ` + fields},
		{"* * * *", "", `cron "* * * *": got 4 fields, ` + fields},
		{"0 0 * * * *", "", `cron "0 0 * * * *": got 6 fields, ` + fields + ` (seconds and years fields are not supported; for sub-minute schedules use @every)`},
		{"@every", "", `cron "@every": @every takes one duration, e.g. "@every 1h30m"`},
		{"@every 1h 30m", "", `cron "@every 1h 30m": @every takes one duration, e.g. "@every 1h30m"`},
		{"@every soon", "", `cron "@every soon": @every "soon": not a duration (write e.g. 90s, 15m, 1h30m)`},
		{"@every 500ms", "", `cron "@every 500ms": @every "500ms": interval must be at least 1s`},
		{"@every -1h", "", `cron "@every -1h": @every "-1h": interval must be at least 1s`},
		{"@every 1.5s", "", `cron "@every 1.5s": @every "1.5s": interval must be a whole number of seconds`},
		{"@reboot", "", `cron "@reboot": @reboot is not supported: a cron trigger fires on a schedule, not when the server starts`},
		{"@fortnightly", "", `cron "@fortnightly": unknown descriptor "@fortnightly": want @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly or @every <duration>`},
		{"@daily 5", "", `cron "@daily 5": @daily takes no fields after it`},
		{"0 * * * *", "Europe/Pariss", `cron "0 * * * *": time zone "Europe/Pariss": ` + zoneHint},
		{"CRON_TZ=Mars/Olympus 0 * * * *", "", `cron "CRON_TZ=Mars/Olympus 0 * * * *": time zone "Mars/Olympus": ` + zoneHint},
		{"0 * * * *", "Local", `cron "0 * * * *": time zone "Local": "Local" is the machine's zone, which nodes need not share; name an IANA zone such as "Europe/Paris"`},
		{"CRON_TZ=Europe/Paris 0 * * * *", "America/New_York", `cron "CRON_TZ=Europe/Paris 0 * * * *": time zone "Europe/Paris": conflicts with the time zone "America/New_York" given beside the spec; give one`},
		{"CRON_TZ= 0 * * * *", "", `cron "CRON_TZ= 0 * * * *": CRON_TZ= needs a zone name, e.g. CRON_TZ=Europe/Paris`},
		{"TZ=Europe/Paris", "", `cron "TZ=Europe/Paris": empty schedule: ` + fields},
	}
	for _, tt := range tests {
		s, err := Parse(tt.spec, tt.tz)
		if err == nil {
			t.Errorf("Parse(%q, %q) = %v, want error %s", tt.spec, tt.tz, s, tt.want)
			continue
		}
		if err.Error() != tt.want {
			t.Errorf("Parse(%q, %q):\n got %s\nwant %s", tt.spec, tt.tz, err, tt.want)
		}
		var pe *ParseError
		if !errors.As(err, &pe) || pe.Spec != tt.spec {
			t.Errorf("Parse(%q, %q): error %T is not a *ParseError for the spec", tt.spec, tt.tz, err)
		}
	}
}

func TestParseErrorFields(t *testing.T) {
	_, err := Parse("0 25 * * *", "")
	var pe *ParseError
	if !errors.As(err, &pe) || pe.Field != "hour" || pe.Value != "25" || pe.Msg != "25 is out of range 0-23" {
		t.Fatalf("got %#v", err)
	}
	_, err = Parse("@daily", "No/Such_Zone")
	if !errors.As(err, &pe) || pe.Field != "time zone" || pe.Err == nil {
		t.Fatalf("got %#v", err)
	}
}

func TestString(t *testing.T) {
	tests := []struct{ spec, tz, want string }{
		{"*/5  *\t* * *", "", "*/5 * * * *"},
		{" 30 2 * * MON-FRI ", "UTC", "30 2 * * MON-FRI"},
		{"30 2 * * *", "Europe/Paris", "CRON_TZ=Europe/Paris 30 2 * * *"},
		{"TZ=America/New_York   @Daily", "", "CRON_TZ=America/New_York @daily"},
		{"@every 90m", "", "@every 1h30m0s"},
		{"@EVERY 86400s", "Asia/Tokyo", "CRON_TZ=Asia/Tokyo @every 24h0m0s"},
	}
	from := mustTime(t, "2026-03-01T00:00:00Z")
	for _, tt := range tests {
		s := mustParse(t, tt.spec, tt.tz)
		if got := s.String(); got != tt.want {
			t.Errorf("Parse(%q, %q).String() = %q, want %q", tt.spec, tt.tz, got, tt.want)
		}
		// The canonical form parses to the same schedule.
		again := mustParse(t, s.String(), "")
		if a, b := ticks(s, from, 5), ticks(again, from, 5); !equalStrings(a, b) {
			t.Errorf("%q and its String %q differ: %q vs %q", tt.spec, s.String(), a, b)
		}
		if again.Location().String() != s.Location().String() {
			t.Errorf("%q: zone %s, reparsed %s", tt.spec, s.Location(), again.Location())
		}
	}
}
