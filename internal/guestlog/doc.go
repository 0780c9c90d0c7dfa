// Package guestlog records what guests write (stdout and stderr outside the
// response, and the log host function) and reads it back for `nimbus logs`.
//
// Each line becomes one JSON Entry on the app's own logs stream,
// NIMBUS_LOGS_<app> (created by the Writer when the app first logs), under
// the subject nimbus.applogs.<app>.<function>, tagged with the function
// revision and invocation id. One stream per app is the isolation guarantee:
// a stream's limits (128 MiB, 7 days by default; discard old) evict only
// that app's own oldest entries, never another app's.
//
// Writing sits on the request path, so it never blocks. The sink of an
// invocation stores lines within two budgets and counts the rest:
//
//   - the invocation's (Config.InvocationLines and InvocationBytes, default
//     1000 lines or 1 MiB);
//   - the app's rate on this node (AppLinesPerSecond and AppBytesPerSecond,
//     default 1000 lines/s and 1 MiB/s, token buckets holding
//     AppBurstSeconds of rate).
//
// When the runtime flushes the sink at the end of the invocation
// (runtime.LogFlusher), it writes one marker entry (Stream "nimbus", level
// "warn") saying how many lines were dropped and by which budget; an app
// gets at most one marker a second, later counts carry over. A Writer hands
// lines to one background publisher through a bounded buffer and drops (and
// counts) lines when the buffer is full rather than slow a request down.
// Every dropped line is counted in Dropped and, by app and reason, in
// nimbus_guest_log_dropped_lines_total. Logs are best effort by design:
// bounded, and flushed to disk asynchronously.
//
// Read replays entries of an app (optionally one function) in stream order,
// which is the order they were written, from a start time; with Follow it
// keeps streaming new entries until its context is done.
package guestlog
