// Package cron parses cron schedules, computes their ticks, and decides
// when a cron trigger fires (the catch-up rule).
//
// A cron trigger in nimbus.yaml ("cron: */5 * * * *", "timezone:",
// "catch_up:") becomes a Schedule here. The trigger source asks Due, with
// its stored watermark and the current time, whether to fire and when to
// ask again; a firing becomes an invocation whose idempotency key is made
// from TickID, so a tick fires once even when several nodes, or a restarted
// one, evaluate it. Flow: cron trigger source -> events -> scheduler ->
// runtime. The package reads no clock and starts no goroutine: every time is
// an argument, so callers inject a clock and tests skip time.
//
// # Specs
//
// Five fields, "minute hour day-of-month month day-of-week", each a comma
// list of "*", values, ranges "a-b" and steps "/n" ("*/15", "1-30/5", "5/15"
// = "5-59/15"); months and weekdays take names (JAN, mon); day-of-week 0
// and 7 are Sunday; "?" is "*" in the day fields. Descriptors: @yearly
// (@annually), @monthly, @weekly, @daily (@midnight), @hourly, and
// "@every <duration>". The time zone is an IANA name, given beside the spec
// or as a "CRON_TZ=Europe/Paris " (or "TZ=") prefix; the default is UTC.
// "Local" is refused: nodes must agree on ticks.
//
// Day fields follow Vixie cron: if day-of-month or day-of-week starts with
// "*" (or "?"), a day matches when both fields match; otherwise, when
// either does ("0 0 1,15 * MON" is the 1st, the 15th and every Monday).
// A spec that can never match ("0 0 30 2 *") is a parse error, so every
// Schedule has ticks. Errors name the spec, the field and the problem:
//
//	cron "*/0 * * * *": minute field "*/0": step must be at least 1
//
// # Ticks and daylight saving time
//
// Ticks are whole wall-clock minutes in the schedule's zone. Where DST
// makes the wall clock skip or repeat, the rule is Vixie cron's, made
// exact:
//
//   - A fixed-time schedule, one whose minute and hour fields both do not
//     start with "*" ("30 2 * * *", "0 9-17 * * MON-FRI", @daily), names
//     wall times, and each fires once. A wall time the clocks skip (02:30
//     on the spring-forward night in Europe) fires when the gap ends (03:00
//     CEST): the job still runs that day; several skipped ticks of one gap
//     make one firing. A wall time the clocks repeat (02:30 on the
//     fall-back night) fires at its first occurrence only.
//   - A wildcard schedule, one whose minute or hour field starts with "*"
//     ("0 * * * *", "*/15 * * * *", @hourly), describes a rhythm, and fires
//     whenever the wall clock shows a matching time: nothing in the gap
//     (the hour that does not exist has no ticks), and both passes of a
//     repeated hour. So @hourly fires every real hour across both changes.
//
// "@every d" ignores wall clocks: its ticks are the instants k*d after the
// Unix epoch (1970-01-01T00:00:00Z), k an integer, so every node computes the
// same ticks without sharing a start time, and "@every 1h" fires on the hour
// in UTC. d is at least 1s and a whole number of seconds, so every tick is a
// whole second and TickID is exact.
//
// # Catch-up
//
// A trigger fires once per tick. If no server ran at a tick (or several),
// the next start fires once, for the latest missed tick, if that tick is
// within the trigger's catch-up window (NoLimit: always; 0: only on time,
// where "on time" means within Grace); older ticks are skipped; never a
// burst. A trigger created while servers run owes nothing before its
// creation: the caller stores the creation time as the watermark.
//
// # Agreement between nodes
//
// Ticks depend only on the spec, the zone and the zone database, never on
// when or where they are computed, and TickID is in UTC. Nodes with
// different tzdata versions may disagree about a zone whose rules changed
// between those versions, so a cluster's nodes should run the same one.
// (The time package reads the system's tzdata first and falls back to a
// copy embedded by importing time/tzdata in main.)
package cron
