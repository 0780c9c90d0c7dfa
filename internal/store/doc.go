// Package store owns Nimbus's data plane connection: an embedded NATS server
// with JetStream (the default, `nimbus up`), the connection to it, the
// node's assets that no other package owns, and the one commit path
// (Committer) every durable write of events and state goes through.
//
// # Streams and buckets
//
// Open creates (or updates, idempotently) the assets of the node itself:
//
//   - nimbus_artifacts (object store): function artifacts, named by the
//     sha256 hex of their bytes; see PutArtifact and GetArtifact.
//   - nimbus_registry (KV): apps and revisions, used by package registry.
//   - nimbus_security (KV): tokens, later keys and secrets.
//
// The packages that own a concept create its streams themselves, each
// idempotently when it opens: package events the events stream
// NIMBUS_EVENTS (events.OpenLog), the async invocation records
// (nimbus_invocations) and the delivery records (NIMBUS_DELIVERED); package
// state one KV bucket per app bucket (nimbus_kv_<app>_<bucket>, at deploy);
// package guestlog one logs stream per app (NIMBUS_LOGS_<app>, when the app
// first logs).
// The committer turns on AllowAtomicPublish on a stream the first time it
// needs an atomic batch there (KV buckets are created without it).
//
// # The commit path
//
// A Unit is a list of Writes to one stream: appends (subject, data,
// headers, optional Nats-Msg-Id for dedupe, optional expected last
// sequence of the subject for compare-and-swap, optional TTL) and KV
// updates, which in JetStream are messages on $KV.<bucket>.<key> of stream
// KV_<bucket> (KVPut, KVDelete; a compare-and-swap is IfLastSeq). Commit
// returns one Result per write (stream sequence, which is the KV revision,
// and a duplicate flag) or one error for the unit.
//
// Guarantees:
//
//   - Durable: Commit returns once the unit is fsynced (SyncAlways, below).
//   - Atomic per unit: the writes of a unit are stored together, in order,
//     with contiguous sequences, or none is. The one exception is
//     duplicates: a unit whose batch the server rejects because one of its
//     MsgIDs is already stored is split until the duplicate is found, so
//     its other writes are stored (in parts) and the duplicate is reported
//     with Result.Duplicate and the original sequence; two writes of one
//     unit with one MsgID store the first only.
//   - One stream per unit: a unit whose writes name two streams is refused
//     with ErrMultiStream before anything is sent. A JetStream atomic batch
//     lives in one stream, and the commit path does not fake atomicity
//     across streams (RATIONALE.md, "One commit path").
//   - Isolated: a unit that fails (a compare-and-swap that does not hold, a
//     write the server refuses) fails alone; the units committed with it
//     are not affected.
//   - Errors are definitive unless they wrap ErrOutcomeUnknown (no answer
//     within CommitTimeout, or the caller's context ended after its unit
//     was sent): then the unit may or may not be stored, and retrying with
//     the same MsgIDs is safe within the duplicate window.
//
// # Group commit
//
// One fsync per write caps a node at the disk's fsync rate (~4k/s here;
// JetStream does not coalesce concurrent publishes). So Commit only queues
// its unit, on the lane of its stream; one goroutine per busy lane takes
// everything pending (up to MaxBatch writes, never splitting a unit),
// writes it in one round trip and releases every waiter when the server
// answers. While a batch is in flight the next one accumulates, so batches
// grow with load and no timer adds latency when idle. Lanes of different
// streams commit in parallel; a lane's goroutine ends when its queue is
// empty. How a batch is written:
//
//   - one write: a plain publish (one write, one fsync);
//   - 2 to 4 units of one write each (2 to 14 on a KV bucket's stream,
//     whose writes were all plain publishes before the commit path):
//     pipelined plain publishes, each its own fsync and its own success or
//     failure;
//   - anything else (more writes, or a unit of several): one JetStream
//     atomic batch, one final fsync for all of it.
//
// A batch the server rejects (it answered: nothing was stored) is split in
// halves between units, and retried, until the unit at fault is alone and
// fails with the server's error (a *jetstream.APIError, for example
// wrong-last-sequence for a failed compare-and-swap); the others are
// committed. That costs about 2·log2(units) extra round trips per failing
// unit, paid only when a unit fails. Copies of one MsgID in different
// units are left to the same mechanism, so that one unit's failure never
// becomes a duplicate's.
//
// # The atomic batch protocol (nats-server v2.15.2, read in its source)
//
// The stream has AllowAtomicPublish. Every message of a batch carries
// Nats-Batch-Id (at most 64 characters; a random prefix and a counter) and
// Nats-Batch-Sequence (1, 2, ... without gaps); the last one also carries
// Nats-Batch-Commit: 1. Only the commit is a request: a staged message
// without a reply gets no answer, and any problem while staging (gap,
// timeout, too large) abandons the batch, so the commit is answered with
// an error ("incomplete batch") and nothing is lost. The commit answer is a
// PubAck {"stream","seq","batch","count"} whose seq is the last write's;
// the server holds the stream's isolation lock while it commits, so the
// writes have the contiguous sequences seq-count+1 .. seq. Or it is
// {"error":{...}} and nothing was stored.
//
// Limits and behaviour found in the server source:
//
//   - at most 1,000 messages per batch (max_batch_size), 50 open batches
//     per stream, 1,000 per server, and a staged batch is dropped after
//     10 s without its commit;
//   - on R1 file storage the server stages each batch in a file store of its
//     own (created, fsynced at commit, deleted after), so that a commit
//     interrupted by a crash can be finished at restart; then it writes the
//     batch to the stream with SyncAlways suspended and fsyncs once. This
//     staging is why an R1 atomic batch costs ~3 ms whatever its size. On
//     R3 the staging is in memory and the batch is one Raft proposal;
//   - every expectation is checked at commit and one failing check fails
//     the whole batch: a Nats-Msg-Id already stored (err_code 10201, or
//     10158 on a cluster while it is being stored) — it does not become a
//     duplicate ack, and the error does not say which message; a
//     Nats-Expected-Last-Subject-Sequence that does not hold (10071), or
//     one on a subject an earlier message of the batch wrote (10164);
//   - Nats-Expected-Last-Msg-Id is not supported in a batch;
//   - the batch headers stay on the stored messages (consumers, KV reads
//     and watchers ignore them).
//
// # Durability
//
// The embedded server runs with SyncAlways, so a write that the store
// acknowledged has been fsynced on this node and survives kill -9 and
// power loss (TestKill9, TestCommitKill9). The logs streams opt out with
// JetStream's async persist mode (a log line is not worth an fsync).
// docs/storage.md has the details and the measured cost.
//
// A data directory is used by one process at a time: Open takes an exclusive
// lock on DataDir/LOCK and fails with ErrLocked if another `nimbus up` holds
// it.
package store
