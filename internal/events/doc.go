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
// One fsync per event caps a node at the disk's fsync rate (~4k/s here, the
// same with 1 or 64 publishers: JetStream does not coalesce them). Concurrent
// Append calls therefore only enqueue; one committer goroutine takes
// everything pending (up to MaxBatch entries, never splitting one call),
// writes it in one round trip and, when the server answers, releases every
// waiter of that batch at once. While a batch is in flight the next one
// accumulates, so batches grow with load and no timer adds latency when the
// log is idle. One call of several entries is all-or-nothing (one atomic
// batch), except when the server's duplicate check forces a split (below).
//
// How a batch is written depends on its size:
//
//   - 1 entry: a plain publish (one write, one fsync).
//   - 2 to 4 entries: pipelined plain publishes, acks collected in order;
//     each entry is fsynced and succeeds on its own.
//   - 5 to MaxBatch entries: one JetStream atomic batch: one commit, one
//     final fsync for all of them.
//
// The threshold comes from the cost of an atomic batch on R1 file storage
// (next section): about 3 ms fixed, against ~0.23 ms per fsynced publish.
// Break-even is near 12 entries, but a high threshold made batches
// alternate between small pipelined and large atomic ones under load, so it
// is kept low (plainBatchMax; measurements were too noisy to tune it
// finely).
//
// # The atomic batch protocol (nats-server v2.15.2, read in its source)
//
// The stream has AllowAtomicPublish. Every message of a batch carries
// Nats-Batch-Id (at most 64 characters; the log uses a random prefix and a
// counter) and Nats-Batch-Sequence (1, 2, ... without gaps); the last one
// also carries Nats-Batch-Commit: 1 ("eob" would mean: commit, and do not
// store this marker). Only the commit needs to be a request: a staged
// message with a reply gets an empty ack, one without gets nothing, and any
// problem while staging (gap, timeout, too large) abandons the batch, so the
// commit is answered with an error ("incomplete batch") and nothing is
// lost. The log sends messages 1..n-1 as plain publishes and the commit as
// a request. The commit answer is a PubAck {"stream","seq","batch","count"}
// whose seq is the last entry's; the server holds the stream's isolation
// lock while it commits, so the entries have the contiguous sequences
// seq-count+1 .. seq. Or it is {"error":{...}} and nothing was stored.
//
// Limits and behaviour found in the server source:
//
//   - at most 1,000 messages per batch (max_batch_size, an operator
//     option), 50 open batches per stream, 1,000 per server, and a staged
//     batch is dropped after 10 s without its commit (max_batch_timeout);
//   - on R1 file storage the server stages each batch in a file store of its
//     own (created under the stream's directory, flushed and fsynced at
//     commit, deleted after), so that a commit interrupted by a crash can be
//     finished at restart; then it writes the batch to the stream with
//     SyncAlways suspended and fsyncs once ("coalesceSync"). On R3 the
//     staging is in memory and the batch is one Raft proposal. This staging
//     is why an R1 atomic batch costs ~3 ms whatever its size;
//   - Nats-Msg-Id is checked for every message at commit, but a duplicate
//     does not become a duplicate ack: the whole batch is rejected with
//     err_code 10201 "atomic publish batch contains duplicate message id"
//     (10158 on a cluster when the id is being stored concurrently), and the
//     error does not say which message. So the log removes duplicates within
//     a batch itself (later copies are acknowledged as duplicates of the
//     first), and on 10201 it splits the rejected batch in halves and
//     retries each, down to single plain publishes, which the server answers
//     with duplicate: true and the original sequence. Retrying is safe
//     because a rejected batch stored nothing. Cost: about log2(n) extra
//     round trips per duplicate;
//   - Nats-Expected-Last-Msg-Id is not supported in a batch, and headers
//     starting with "Nats-" change how JetStream stores a message, so Append
//     rejects user headers with that prefix;
//   - the batch headers stay on the stored messages (consumers may ignore
//     them);
//   - the server also offers "fast batch" publishing (AllowBatchPublish,
//     flow-controlled, not atomic); it does not coalesce fsyncs the way the
//     atomic commit does, so it does not serve group commit.
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
