package nimbus

import (
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// KVBucket is a key-value bucket of the function's app, declared under
// buckets: in nimbus.yaml. Reading it needs the capability "kv:NAME:read"
// (or "kv:NAME"); writing it needs "kv:NAME".
//
// Keys are 1 to 512 bytes of [-/_=.a-zA-Z0-9], not starting or ending with
// '.', without "..". '.' separates levels ("orders.eu.42"), which makes
// listing by a prefix ending in '.' cheap. Values are at most the bucket's
// max_value_size (default 1MiB).
//
// Every write returns the key's new revision, a number that grows with every
// write to the bucket; IfRevision turns a write into a compare-and-swap.
// When Put returns, the value is on disk (fsynced).
type KVBucket struct {
	name string
}

// Bucket returns the bucket named name. It does not call the host: a
// missing bucket or grant shows in the first call's error.
func Bucket(name string) *KVBucket { return &KVBucket{name: name} }

// Name returns the bucket's name.
func (b *KVBucket) Name() string { return b.name }

// Option modifies a Put or Delete.
type Option func(*writeOptions)

type writeOptions struct {
	ttl   time.Duration
	ifRev int64
}

// TTL makes the key expire d after this write (rounded up to whole seconds,
// at least one second). A later Put without TTL makes the key permanent.
// Only Put takes it.
func TTL(d time.Duration) Option {
	return func(o *writeOptions) { o.ttl = d }
}

// IfRevision makes the write a compare-and-swap: it happens only if the
// key's current revision is rev, or, for rev 0, if the key does not exist.
// Otherwise the error is a *RevisionMismatchError with the current revision.
func IfRevision(rev uint64) Option {
	return func(o *writeOptions) { o.ifRev = int64(rev) }
}

func applyOptions(opts []Option) writeOptions {
	o := writeOptions{ifRev: wire.KVAnyRevision}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	return o
}

// RevisionMismatchError is a failed IfRevision write. errors.Is(err,
// ErrRevisionMismatch) holds for it.
type RevisionMismatchError struct {
	Bucket, Key string
	// Current is the key's revision when the write was refused (0: the key
	// does not exist).
	Current uint64
}

func (e *RevisionMismatchError) Error() string {
	return fmt.Sprintf("nimbus: %s %q: %s: current revision is %d", e.Bucket, e.Key, ErrRevisionMismatch, e.Current)
}

// Is makes errors.Is(err, ErrRevisionMismatch) true.
func (e *RevisionMismatchError) Is(target error) bool { return target == ErrRevisionMismatch }

func (b *KVBucket) err(function string, write bool, code int32) error {
	grant := "kv:" + b.name + ":read"
	if write {
		grant = "kv:" + b.name
	}
	return codeError(function+" "+b.name, grant, code)
}

// kvScratch is the buffer the host copies values and key lists into. A
// handler's goroutines may call the host concurrently (between calls they
// can be rescheduled), so it is held under kvMu from the call until the
// result is copied out.
var (
	kvMu      sync.Mutex
	kvScratch = make([]byte, 4096)
)

// Get returns the value of key and its revision. A missing key is an error
// wrapping ErrNotFound.
func (b *KVBucket) Get(key string) ([]byte, uint64, error) {
	kvMu.Lock()
	defer kvMu.Unlock()
	var out [wire.KVGetOutSize]byte
	for range 8 {
		code := hostKVGet(b.name, key, kvScratch, &out)
		n := binary.LittleEndian.Uint32(out[8:])
		if code == wire.CodeTooLarge && int(n) > len(kvScratch) {
			kvScratch = make([]byte, n) // the value is larger than the buffer: grow and ask again
			continue
		}
		if code != wire.CodeOK {
			return nil, 0, b.err("kv get", false, code)
		}
		value := make([]byte, n)
		copy(value, kvScratch[:n])
		return value, binary.LittleEndian.Uint64(out[:8]), nil
	}
	return nil, 0, fmt.Errorf("nimbus: kv get %s %q: %w: the value kept growing", b.name, key, ErrHost)
}

// Put writes value under key and returns its new revision. Options: TTL,
// IfRevision.
func (b *KVBucket) Put(key string, value []byte, opts ...Option) (uint64, error) {
	o := applyOptions(opts)
	if o.ttl < 0 {
		return 0, fmt.Errorf("nimbus: kv put %s %q: %w: negative TTL", b.name, key, ErrBadArgument)
	}
	ttlMS := int64(o.ttl / time.Millisecond)
	if o.ttl%time.Millisecond != 0 {
		ttlMS++
	}
	var out [wire.KVPutOutSize]byte
	code := hostKVPut(b.name, key, value, ttlMS, o.ifRev, &out)
	rev := binary.LittleEndian.Uint64(out[:])
	if code == wire.CodeRevisionMismatch {
		return 0, &RevisionMismatchError{Bucket: b.name, Key: key, Current: rev}
	}
	if code != wire.CodeOK {
		return 0, b.err("kv put", true, code)
	}
	return rev, nil
}

// Delete removes key; deleting a missing key is not an error. Option:
// IfRevision (0: succeed only if there is no key).
func (b *KVBucket) Delete(key string, opts ...Option) error {
	o := applyOptions(opts)
	if o.ttl != 0 {
		return fmt.Errorf("nimbus: kv delete %s %q: %w: TTL applies to Put only", b.name, key, ErrBadArgument)
	}
	var out [wire.KVPutOutSize]byte
	code := hostKVDelete(b.name, key, o.ifRev, &out)
	if code == wire.CodeRevisionMismatch {
		return &RevisionMismatchError{Bucket: b.name, Key: key, Current: binary.LittleEndian.Uint64(out[:])}
	}
	if code != wire.CodeOK {
		return b.err("kv delete", true, code)
	}
	return nil
}

// List returns every key starting with prefix ("" for all), sorted. It
// reads them in pages of 1000; for large buckets use ListPage.
func (b *KVBucket) List(prefix string) ([]string, error) {
	var all []string
	after := ""
	for {
		keys, more, err := b.ListPage(prefix, after, 0)
		if err != nil {
			return nil, err
		}
		all = append(all, keys...)
		if !more || len(keys) == 0 {
			return all, nil
		}
		after = keys[len(keys)-1]
	}
}

// ListPage returns at most limit keys (0 or above 1000: 1000) starting with
// prefix that sort after after, sorted, and whether more follow: the next
// page is ListPage(prefix, last key returned, limit).
func (b *KVBucket) ListPage(prefix, after string, limit int) ([]string, bool, error) {
	if limit < 0 || limit > wire.KVMaxListLimit {
		limit = 0
	}
	kvMu.Lock()
	defer kvMu.Unlock()
	var out [wire.KVListOutSize]byte
	for range 8 {
		code := hostKVList(b.name, prefix, after, int32(limit), kvScratch, &out)
		n := binary.LittleEndian.Uint32(out[:4])
		if code == wire.CodeTooLarge && int(n) > len(kvScratch) {
			kvScratch = make([]byte, n)
			continue
		}
		if code != wire.CodeOK {
			return nil, false, b.err("kv list", false, code)
		}
		keys, err := wire.DecodeKeys(kvScratch[:n])
		if err != nil {
			return nil, false, fmt.Errorf("nimbus: kv list %s: %w: %w", b.name, ErrHost, err)
		}
		return keys, binary.LittleEndian.Uint32(out[4:])&wire.KVListMore != 0, nil
	}
	return nil, false, fmt.Errorf("nimbus: kv list %s: %w: the list kept growing", b.name, ErrHost)
}
