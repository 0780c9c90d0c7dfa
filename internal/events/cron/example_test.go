package cron_test

import (
	"fmt"
	"time"

	"github.com/nimbus-dev/nimbus/internal/events/cron"
)

// A daily job at 02:30 in Paris across the spring-forward night, when 02:30
// does not exist: it runs when the gap ends, at 03:00 CEST.
func Example() {
	s, err := cron.Parse("30 2 * * *", "Europe/Paris")
	if err != nil {
		fmt.Println(err)
		return
	}
	t := time.Date(2026, 3, 28, 12, 0, 0, 0, time.UTC)
	for range 3 {
		t = s.Next(t)
		fmt.Println(t)
	}

	_, err = cron.Parse("0 25 * * *", "")
	fmt.Println(err)
	// Output:
	// 2026-03-29 03:00:00 +0200 CEST
	// 2026-03-30 02:30:00 +0200 CEST
	// 2026-03-31 02:30:00 +0200 CEST
	// cron "0 25 * * *": hour field "25": 25 is out of range 0-23
}

// A trigger's loop: the server was down from 10:30 to 13:15, missing the
// ticks of 11:00, 12:00 and 13:00. On restart they fire once, for 13:00.
func ExampleDue() {
	s, _ := cron.Parse("@hourly", "")
	lastFired := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC) // stored watermark
	now := time.Date(2026, 5, 1, 13, 15, 0, 0, time.UTC)      // injected clock

	fire, tick, next := cron.Due(s, lastFired, now, time.Hour)
	fmt.Println(fire, "shop/report/cron-0@"+cron.TickID(tick), "next", next.Format(time.Kitchen))

	// After firing, the caller stores tick as lastFired: asking again
	// never fires again, so there is no burst.
	fire, _, next = cron.Due(s, tick, now, time.Hour)
	fmt.Println(fire, "next", next.Format(time.Kitchen))
	// Output:
	// true shop/report/cron-0@2026-05-01T13:00:00Z next 2:00PM
	// false next 2:00PM
}
