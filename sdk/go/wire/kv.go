package wire

import "encoding/binary"

// Status codes of the kv host functions, beyond the common ones.
const (
	// CodeNotFound: the key does not exist.
	CodeNotFound int32 = 6
	// CodeRevisionMismatch: a compare-and-swap failed; the key's current
	// revision (0: it does not exist) is in the call's out area.
	CodeRevisionMismatch int32 = 7
	// CodeNoBucket: the app has no bucket of that name.
	CodeNoBucket int32 = 8
)

// Import names of the kv host functions.
const (
	FuncKVGet    = "kv_get"
	FuncKVPut    = "kv_put"
	FuncKVDelete = "kv_delete"
	FuncKVList   = "kv_list"
)

// Limits of the kv host functions' arguments.
const (
	// KVMaxBucketLen caps a bucket name.
	KVMaxBucketLen = 63
	// KVMaxKeyLen caps a key, a list prefix and a list cursor.
	KVMaxKeyLen = 512
	// KVMaxValueLen caps a value whatever the bucket allows.
	KVMaxValueLen = 1 << 20
	// KVMaxListLimit caps the keys of one kv_list.
	KVMaxListLimit = 1000
)

// KVAnyRevision as if_revision makes a kv_put or kv_delete unconditional.
const KVAnyRevision int64 = -1

// Sizes of the out areas the kv functions write.
const (
	KVGetOutSize  = 12 // revision u64, value length u32
	KVPutOutSize  = 8  // revision u64
	KVListOutSize = 8  // encoded length u32, flags u32
)

// KVListMore is the flag of kv_list's out area meaning more keys follow.
const KVListMore uint32 = 1

// AppendKeys appends the kv_list encoding of keys to dst: a varint count,
// then each key as a string.
func AppendKeys(dst []byte, keys []string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(keys)))
	for _, k := range keys {
		dst = appendString(dst, k)
	}
	return dst
}

// KeysSize is len(AppendKeys(nil, keys)).
func KeysSize(keys []string) int {
	n := uvarintLen(uint64(len(keys)))
	for _, k := range keys {
		n += uvarintLen(uint64(len(k))) + len(k)
	}
	return n
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

// DecodeKeys decodes the kv_list encoding.
func DecodeKeys(b []byte) ([]string, error) {
	d := &decoder{b: b}
	n := d.uvarint()
	// Every key takes at least one byte (its length).
	if d.err == nil && n > uint64(len(b)-d.off) {
		d.fail("count past end")
	}
	var keys []string
	if d.err == nil && n > 0 {
		keys = make([]string, 0, n)
	}
	for i := uint64(0); i < n && d.err == nil; i++ {
		k := d.string()
		if d.err == nil {
			keys = append(keys, k)
		}
	}
	if err := d.finish(); err != nil {
		return nil, err
	}
	return keys, nil
}
