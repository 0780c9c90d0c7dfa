package throttle

import "time"

// Clock is the time source of a Limiter. Tests inject a fake one
// (flowtest.Clock) so rate limits and debounce skip time instead of
// spending it.
type Clock interface {
	Now() time.Time
	// AfterFunc calls f once, in its own goroutine or synchronously from
	// the clock's owner, after d has passed.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc call: Stop prevents the call if it has not
// started, and reports whether it did so. It is an alias of an unnamed
// interface so that fake clocks (flowtest) satisfy Clock without importing
// this package.
type Timer = interface{ Stop() bool }

// System returns the real clock.
func System() Clock { return systemClock{} }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }
