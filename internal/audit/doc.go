// Package audit is the node's audit log: an append-only record of
// control-plane actions (deploy, rollback, delete, key and secret
// operations, denials) with who did it (the key's id), the tenant, the
// time, the target and the outcome.
//
// The log is tamper-evident. Entries are hash-chained: each one carries
// its chain index (Seq, from 1) and the sha256 of the stored bytes of the
// entry before it (Prev), and its own hash rides in a header. Verify reads
// the whole log and names the first entry that does not fit: a changed
// entry (its bytes no longer hash to what the next entry recorded), a
// removed one (a gap in the indexes), one put back out of order. What the
// chain cannot show is the loss of the newest entries; Verify returns the
// head's hash so an operator can keep it elsewhere and compare.
//
// Entries live in the JetStream stream NIMBUS_AUDIT, one subject, written
// through store.Committer with a compare-and-swap on the subject's last
// sequence, so writers on several processes or nodes extend one chain and
// never fork it, and an entry is whole or absent after a kill -9. The
// stream denies deletes and purges and has no limits: entries are kept
// until an operator changes that on purpose.
//
// Audit sits in the storage layer: the API records what it serves, the
// capability services record the denials of functions (see server).
package audit
