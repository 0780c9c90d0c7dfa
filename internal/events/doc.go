// Package events carries Nimbus events: topics, triggers, delivery, retries,
// dead letters. This file documents its first piece, the durable event log
// (Log); package cloudevents (the envelope and HTTP binding) and package
// cron (schedules) sit beside it. The Dispatcher (dispatch.go) delivers
// topic events to triggers; CronSource (cron_source.go) and BucketSource
// (kv_source.go) turn cron ticks and bucket changes into events on internal
// topics, so the Dispatcher delivers those too.
//
// # Where the log sits
//
//	gateway CloudEvents ingress ─┐
//	publish host function ───────┼─> events.Log ─> JetStream stream NIMBUS_EVENTS ─> trigger consumers
//	nimbus publish (API) ────────┘   (group commit)  nimbus.events.<app>.<topic>       (one durable consumer per trigger)
//
// Everything that accepts an event calls Log.Append and answers its client
// (the 2xx of the gateway, the return of the host function) only after
// Append returned.
//
// # The guarantee
//
// Append returns only when every entry is stored and fsynced (the embedded
// server runs with SyncAlways, see package store; with Replicas 3 on a
// cluster, stored on a quorum) or has definitively failed. Acknowledged
// means on disk: it survives kill -9 (TestKill9 kills a process that is
// appending and finds every acknowledged entry after restart) and power
// loss. An entry with a MsgID (Nats-Msg-Id, for example sha256 of the
// CloudEvent's source and id) that was already stored within the duplicate
// window (default 10 minutes, kept across restarts by the server) is
// acknowledged with Duplicate set and the original sequence, and not stored
// again; two copies in one batch are handled the same way.
//
// Errors are definitive unless they wrap ErrOutcomeUnknown: a rejected entry
// (*EntryError: too large, subject outside the stream, reserved "Nats-"
// header) fails alone before it reaches the committer, and a failed batch
// stored nothing of it. ErrOutcomeUnknown (the caller's context ended after
// its batch was sent, or no answer within CommitTimeout) means "maybe":
// retry with the same MsgID. A caller whose context ends before the
// committer took its entries gets ctx.Err() and nothing is sent; either way
// the batch goes on for the other callers.
//
// # Group commit
//
// Append is a thin layer over the node's commit path, store.Committer
// (LogConfig.Committer; the server passes the store's): it checks the
// entries, makes them one store.Unit on the events stream, and maps the
// results to Acks. The committer queues concurrent calls and writes
// everything pending in one round trip (one atomic batch, one fsync) while
// the previous one is in flight, so batches grow with load and no timer
// adds latency when the log is idle. One call is one unit: all-or-nothing,
// except when the server's duplicate check forces a split. A batch of 1
// write is a plain publish, of 2 to 4 single-entry calls pipelined plain
// publishes, anything larger one JetStream atomic batch (about 3 ms fixed
// on R1 file storage, against ~0.23 ms per fsynced publish); package
// store's documentation has the protocol, the limits found in the server's
// source and how a rejected batch is split so that one caller's failure
// (or duplicate) never fails another's.
//
// The async invocation records (KV bucket nimbus_invocations) are written
// through the same committer: a final record and its idempotency key's
// pointer are one unit.
//
// # Figures (BenchmarkAppend and raw baselines in log_bench_test.go)
//
// Measured on the shared 2-core development machine with other work
// running (noisy; ratios matter more than absolutes), 200-byte entries,
// SyncAlways:
//
//	raw js.Publish, one at a time per publisher   1: ~3.3-4.4k/s  16: ~4.1-4.4k/s  64: ~4.3-4.5k/s
//	raw js.PublishAsync, one publisher            ~5.3k/s
//	Append, 1 entry per call                      1: ~3.2-3.9k/s (p50 0.25 ms)  16: ~2.5-3.3k/s (p50 5-6 ms)
//	                                              64: ~5.4-10.6k/s (p50 6-9 ms)  256: ~20k/s (p50 12.6 ms, 133 per commit)
//	Append, 100 entries per call                  1 caller: ~22k/s (p50 4.3 ms)  16 callers: ~80k/s
//
// So with atomic batches the log reaches well past the fsync ceiling only
// with large batches: throughput is about (concurrent callers) / 3-4 ms.
// Batched ingress (the gateway's batched mode, a worker publishing many
// events) gets it at once; single-event callers need a few hundred
// concurrent requests.
//
// # The alternative: packing
//
// Packing many entries into one message (one plain publish, one fsync,
// ~0.25 ms; the issue measured ~334k entries/s at 100 per message) removes
// the staging cost and would put single-event ingress at 64 callers well
// past 20k/s. The price is paid by consumers: a stream message is then a
// pack, so a trigger consumer must unpack and filter by topic itself (a
// pack mixes topics, or one pack per topic costs one fsync per topic), and
// JetStream's per-message ack, redelivery, MaxDeliver and BackOff apply to
// the pack, not to an event: one failing event would redeliver its
// neighbours, and per-event retry state would have to live elsewhere (KV).
// Per-event dedupe with Nats-Msg-Id no longer works either (the log would
// keep its own window). We keep per-event messages, which keep triggers
// simple, and leave packing (or a packed log expanded into per-event
// messages by one dispatcher) as the next step if single-event ingress must
// go faster than ~(callers / 3 ms).
//
// # Clusters
//
// Replicas 3 on a NATS cluster: an acknowledged batch is on a quorum (one
// Raft proposal per batch, staged in memory), which is what DESIGN.md asks
// of a cluster. Not measured yet.
package events
