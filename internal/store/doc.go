// Package store owns Nimbus's data plane connection: an embedded NATS server
// with JetStream (the default, `nimbus up`), the connection to it, and the
// streams, key-value buckets and object stores that other packages build on.
//
// Everything durable in Nimbus lives in JetStream. Open creates (or updates,
// idempotently) every bucket and stream Nimbus needs, so callers never race
// on setup:
//
//   - nimbus_artifacts (object store): function artifacts, named by the
//     sha256 hex of their bytes; see PutArtifact and GetArtifact.
//   - nimbus_registry (KV): apps and revisions, used by package registry.
//   - nimbus_security (KV): tokens, later keys and secrets.
//   - NIMBUS_LOGS (stream, subjects nimbus.logs.>): guest logs, used by
//     package guestlog.
//
// Durability: the embedded server runs with SyncAlways, so a write that the
// store acknowledged has been fsynced on this node and survives kill -9 and
// power loss. The logs stream opts out with JetStream's async persist mode
// (a log line is not worth an fsync). docs/storage.md has the details and
// the measured cost.
//
// A data directory is used by one process at a time: Open takes an exclusive
// lock on DataDir/LOCK and fails with ErrLocked if another `nimbus up` holds
// it.
package store
