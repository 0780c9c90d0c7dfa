// Package state holds the key-value buckets of apps: named namespaces of
// keys and values that guests reach through the kv service (package
// capability) and operators through the CLI and API. Each app bucket is one
// JetStream KV bucket, "nimbus_kv_<app>_<bucket>" (app and bucket names are
// DNS labels, so the name is unambiguous), created or updated by
// Buckets.Ensure when an app that declares it is deployed.
//
// It sits below the capability services in the request flow:
//
//	gateway -> scheduler -> runtime -> guest -> kv service -> state -> store.Committer -> JetStream
//
// # Keys and values
//
// A key is 1 to MaxKeyLen (512) bytes of [-/_=.a-zA-Z0-9], neither starting
// nor ending with '.', without "..", and not starting with "_kv" (reserved by
// JetStream). '.' separates tokens: listing by a prefix that ends at a '.'
// ("orders.") only reads the keys under it; any other prefix is matched on
// the host after reading the keys of its last complete token. Anything else
// is ErrInvalidKey, with the rule it breaks (CheckKey).
//
// A value is at most the bucket's MaxValueBytes (default 1MiB), and never
// more than the connection's maximum message size minus HeaderRoom (the
// embedded server allows store.MaxPayload, 2MiB, so 1MiB values fit).
// Larger values are ErrValueTooLarge before anything is written.
//
// Every write has a revision: the sequence of the JetStream message that
// holds it, increasing across the bucket. Put and Delete take an optional
// expected revision (compare-and-swap): a pointer to 0 means "the key must
// not exist", n means "the key's current revision must be n". A failed
// comparison is a *RevisionMismatchError (errors.Is ErrRevisionMismatch)
// carrying the revision found.
//
// # Time to live
//
// A bucket may expire every key after its TTL (BucketConfig.TTL), and a Put
// may give its key its own TTL (PutOptions.TTL): the value is published with
// JetStream's per-message TTL header (Nats-TTL, nats-server 2.11+, on a
// stream with AllowMsgTTL, which Ensure turns on through the KV bucket's
// LimitMarkerTTL). TTLs are whole seconds: a TTL is rounded up to the next
// second, and the minimum is one second. When a key expires the server
// removes it and leaves a marker, so watchers see a delete (Change.Op
// OpDelete, Change.Expired set); the marker itself is kept for MarkerTTL. In
// a bucket with History above 1, the server raises key TTLs below MarkerTTL
// to MarkerTTL. A later Put without TTL makes the key permanent again.
//
// # Durability
//
// Put and Delete return after JetStream acknowledged the write. The store
// runs the embedded server with SyncAlways, so at that point the value is
// written and fsynced to the bucket's stream file on this node: it survives
// kill -9 and power loss. Writes go through the node's commit path
// (store.Committer, given to New): concurrent writes to one bucket share one
// commit and one fsync, and a compare-and-swap that fails fails alone. Buckets are R1 today; in a cluster (R3) the
// acknowledgement would mean a quorum of nodes holds it.
//
// # Change events
//
// Watch streams every put and delete (including expiries) of a bucket after
// it starts, in revision order, to a callback. Bucket triggers do not use
// it: they must resume after a restart, so events.BucketSource reads the
// bucket's stream with a durable consumer of its own.
package state
