package cron

import (
	"math"
	"time"
)

const (
	// Grace is how late a tick may fire and still be on time, whatever the
	// catch-up window: a timer never wakes exactly at the tick, and a node
	// that is busy for a moment must not drop it. One minute is the
	// resolution of a cron spec. A catch-up window shorter than Grace
	// (including 0, "never catch up") acts as Grace.
	Grace = time.Minute

	// NoLimit is the catch-up window without a limit: however long the
	// server was down, the latest missed tick fires once on restart.
	NoLimit = time.Duration(math.MaxInt64)
)

// Due decides whether a cron trigger fires now. It is the catch-up rule:
// a trigger fires once per tick; ticks missed while no server ran collapse
// into one firing, for the latest of them, if that tick is within catchUp of
// now; never a burst.
//
// lastFired is the trigger's watermark: every tick at or before it has been
// handled. After a firing it is the tick fired. When a trigger is created,
// store its creation time as the watermark, so that ticks between creating
// it and the first server start are owed. The zero Time means "no
// watermark": nothing is owed, the trigger waits for its first tick after
// now (so a new schedule never fires for ticks before it existed).
//
// catchUp is how old the latest missed tick may be and still fire: 0 never
// catches up after downtime (but see Grace), NoLimit always does; a
// negative value is 0.
//
// Due returns:
//   - fire: whether to fire now;
//   - tick: the tick the decision is about, the latest tick in
//     (lastFired, now], or the zero Time if there is none. When fire is
//     true, the firing stands for this tick: its idempotency key is built
//     from TickID(tick), and after the firing the caller stores tick as
//     lastFired. When fire is false and tick is not zero, the tick was
//     missed beyond the window: the caller may log it and store it as
//     lastFired (Due gives the same answers whether it does or not);
//   - next: when to call Due again, the first tick after now (or after
//     lastFired, if a skewed clock put it ahead of now), or the zero Time if
//     the schedule has no more ticks.
//
// Due does not read the clock: the caller passes now, so tests skip time.
// Calling it again with the stored tick as lastFired and the same now never
// fires again.
func Due(s *Schedule, lastFired, now time.Time, catchUp time.Duration) (fire bool, tick, next time.Time) {
	from := now
	if lastFired.After(now) {
		from = lastFired // another node's clock was ahead: those ticks are done
	}
	next = s.Next(from)
	if lastFired.IsZero() {
		return false, time.Time{}, next
	}
	tick = s.Prev(now)
	if tick.IsZero() || !tick.After(lastFired) {
		return false, time.Time{}, next
	}
	window := max(catchUp, Grace)
	return now.Sub(tick) <= window, tick, next
}

// TickID returns the identity of a tick: the instant in UTC, to the second,
// in RFC 3339 ("2026-11-23T12:00:00Z"). Two nodes computing the same
// schedule agree on its ticks, so the idempotency key of a firing is
// "<app>/<function>/<trigger>@" + TickID(tick), the same on every node.
func TickID(tick time.Time) string {
	return tick.UTC().Format("2006-01-02T15:04:05Z")
}
