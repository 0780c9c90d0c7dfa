// Package guestlog records what guests write (stdout and stderr outside the
// response, and the log host function) and reads it back for `nimbus logs`.
//
// Each line becomes one JSON Entry on the NIMBUS_LOGS stream (see package
// store) under the subject nimbus.logs.<app>.<function>, tagged with the
// function revision and invocation id. Writing sits on the request path, so
// it never blocks: a Writer hands lines to one background publisher through a
// bounded buffer and drops (and counts) lines when the buffer is full rather
// than slow a request down. Logs are best effort by design: the stream is
// bounded (7 days, 1 GiB) and flushed to disk asynchronously.
//
// Read replays entries of an app (optionally one function) in stream order,
// which is the order they were written, from a start time; with Follow it
// keeps streaming new entries until its context is done.
package guestlog
