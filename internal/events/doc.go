// Package events is Nimbus's durable, event-driven invocation: topics of
// CloudEvents, the triggers that deliver them to functions (topic, cron and
// bucket-change triggers), retries with backoff, dead letters and their
// replay, idempotency, per-key ordering, and async invocations (a request
// queued as an event and run like one).
//
// # Where it sits
//
//	gateway ingress, nimbus publish, publish capability ─> Log ─> stream NIMBUS_EVENTS ─> Dispatcher ─> scheduler ─> function
//	cron ticks (CronSource), bucket changes (BucketSource) ─┘      nimbus.events.<app>.<topic>    (one durable consumer per trigger)
//
// The pieces, each a server component (see docs/dev/architecture.md) that
// derives what it runs from the app's revision (component.go):
//
//   - Log (log.go) appends events; it is a thin layer over the node's commit
//     path, store.Committer, so concurrent appends share one write and one
//     fsync. The events of one Append to a topic are one message, a pack
//     (pack.go), and the Log keeps its own index of the window's ids
//     (dedupe.go), since a pack's one Nats-Msg-Id cannot name each event.
//   - Dispatcher (dispatch*.go) keeps one durable consumer per trigger and
//     delivers each matching event to the trigger's function through the
//     scheduler, so flow control applies to events as to HTTP.
//   - CronSource (cron_source.go) and BucketSource (kv_source.go) turn
//     schedule ticks and bucket changes into events on internal topics,
//     which the Dispatcher then delivers like any other.
//   - Async invocations (async.go) are events on an app's internal topic
//     _async, with their outcome recorded in KV (nimbus_invocations).
//   - Dead letters (deadletter.go) are events on the app's dead-letter topic;
//     a replay goes back to the one trigger that failed them.
//
// # Guarantees
//
//   - Append returns only once every entry is stored and fsynced (on a
//     quorum in a cluster), or has definitively failed; an error wrapping
//     ErrOutcomeUnknown means "maybe": retry with the same MsgID.
//   - An event re-sent with the same source and id within the duplicate
//     window (2 minutes by default) is acknowledged as a duplicate and
//     stored once (on one node; on a cluster, also when the same batch is
//     sent again through another node).
//   - Ingress (ingress.go) refuses publishes, with a BackpressureError,
//     while an app's triggers lag too far behind or while the node holds
//     too many ids in the duplicate window, so memory stays bounded
//     whatever the publish rate.
//   - An acknowledged event is delivered at least once to every matching
//     trigger; it is acknowledged only after the function succeeded, retried
//     with exponential backoff and jitter, and after MaxAttempts goes to the
//     dead-letter topic with the error and attempt count.
//   - A delivery that finished is recorded (fsynced, through the commit
//     path) before its ack, so a redelivery after a lost ack does not run
//     it again within the duplicate window.
//   - With an ordering key, events with the same key are delivered one at a
//     time, in order, also across a crash: an ordered trigger starts by
//     resetting its consumer to the ack floor, so the events held by the
//     earlier run come back first, at once.
//
// Why a batch of events is one message, how commits are written and what
// they cost are in RATIONALE.md ("Events: one message per batch (packed),
// group-committed", "One commit path") and package store's documentation;
// the user-facing promises are in docs/events.md and docs/async.md.
package events
