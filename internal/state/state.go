package state

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nimbus-dev/nimbus/internal/model"

	"github.com/nimbus-dev/nimbus/internal/store"
)

// Limits and defaults.
const (
	// MaxKeyLen caps a key, in bytes.
	MaxKeyLen = 512
	// DefaultMaxValueBytes is a bucket's value cap when BucketConfig leaves
	// it 0.
	DefaultMaxValueBytes = 1 << 20
	// HeaderRoom is what a value leaves of a JetStream message for headers
	// (TTL, expected revision): the largest value is the connection's max
	// payload minus HeaderRoom.
	HeaderRoom = 1 << 10
	// MarkerTTL is how long JetStream keeps the marker of an expired key, so
	// that watchers started within it still see the expiry.
	MarkerTTL = time.Minute
	// MaxListLimit caps the keys one List returns.
	MaxListLimit = 1000
)

// NamePrefix prefixes the JetStream KV bucket of every app bucket:
// nimbus_kv_<app>_<bucket>. It is part of the on-disk format.
const NamePrefix = "nimbus_kv_"

// Metadata keys Ensure writes on a bucket's stream.
const (
	metaApp      = "nimbus.app"
	metaBucket   = "nimbus.bucket"
	metaMaxValue = "nimbus.max_value_bytes"
)

// Errors. Callers branch on them with errors.Is.
var (
	// ErrKeyNotFound means the key does not exist (never written, deleted
	// or expired).
	ErrKeyNotFound = errors.New("key not found")
	// ErrRevisionMismatch means a compare-and-swap failed; the error is a
	// *RevisionMismatchError that carries the current revision.
	ErrRevisionMismatch = errors.New("revision mismatch")
	// ErrInvalidKey means a key (or list prefix) breaks the key syntax.
	ErrInvalidKey = errors.New("invalid key")
	// ErrValueTooLarge means a value is over the bucket's MaxValueBytes.
	ErrValueTooLarge = errors.New("value too large")
	// ErrBucketNotFound means the app has no such bucket (not declared in
	// its nimbus.yaml, or not deployed yet).
	ErrBucketNotFound = errors.New("bucket not found")
	// ErrInvalidName means an app or bucket name is not a DNS label.
	ErrInvalidName = errors.New("invalid app or bucket name")
	// ErrInvalidTTL means a negative TTL.
	ErrInvalidTTL = errors.New("invalid TTL")
	// ErrTTLUnsupported means the bucket cannot expire single keys: it was
	// created on a server without per-message TTL (before nats-server 2.11).
	ErrTTLUnsupported = errors.New("per-key TTL not supported by this bucket")
)

// RevisionMismatchError is a failed compare-and-swap.
type RevisionMismatchError struct {
	Key string
	// Expected is the revision the caller asked for (0: must not exist).
	Expected uint64
	// Current is the key's revision when the write was refused; 0 when the
	// key does not exist. It is read after the refusal, so it may already
	// be newer than the revision that refused it.
	Current uint64
}

func (e *RevisionMismatchError) Error() string {
	if e.Expected == 0 {
		return fmt.Sprintf("key %q: %s: expected no key, found revision %d", e.Key, ErrRevisionMismatch, e.Current)
	}
	return fmt.Sprintf("key %q: %s: expected revision %d, found %d", e.Key, ErrRevisionMismatch, e.Expected, e.Current)
}

// Is makes errors.Is(err, ErrRevisionMismatch) true.
func (e *RevisionMismatchError) Is(target error) bool { return target == ErrRevisionMismatch }

// BucketConfig declares one bucket of an app.
type BucketConfig struct {
	// App and Name are DNS labels ([a-z][a-z0-9-]*, at most 63). Required.
	App, Name string
	// MaxValueBytes caps a value. Optional: default DefaultMaxValueBytes;
	// capped at the connection's max payload minus HeaderRoom.
	MaxValueBytes int
	// TTL expires every key this long after its last write. Optional:
	// default 0, keys do not expire (a Put may still give one key a TTL).
	TTL time.Duration
	// History is how many revisions of a key are kept. Optional: default 1;
	// at most 64 (JetStream's limit).
	History int
}

// PutOptions are the optional parts of a Put.
type PutOptions struct {
	// TTL expires the key this long after this write; rounded up to whole
	// seconds, minimum one second. 0: no per-key TTL.
	TTL time.Duration
	// IfRevision makes the write a compare-and-swap: nil writes
	// unconditionally, a pointer to 0 writes only if the key does not exist,
	// to n only if the key's current revision is n.
	IfRevision *uint64
	// MsgID is the write's idempotency key: a second write with the same
	// MsgID within the bucket's duplicate window (two minutes) writes
	// nothing. Optional.
	MsgID string
}

// Change is one write to a bucket, as Watch reports it.
type Change struct {
	Key      string
	Op       Op
	Revision uint64
	// Value is the new value of a put; nil for a delete.
	Value []byte
	// Expired is set on a delete the server made because a TTL ran out.
	Expired bool
}

// Op is the kind of a Change.
type Op uint8

// Ops.
const (
	OpPut Op = iota + 1
	OpDelete
)

func (o Op) String() string {
	switch o {
	case OpPut:
		return "put"
	case OpDelete:
		return "delete"
	}
	return "op(" + strconv.Itoa(int(o)) + ")"
}

// Buckets gives access to the key-value buckets of every app. There is one
// per node; it is safe for concurrent use.
type Buckets struct {
	js     jetstream.JetStream
	logger *slog.Logger
	// c commits every write (the store's commit path): concurrent writes
	// to one bucket share one commit and one fsync. cerr is why NewBuckets
	// could not make one; writes then fail with it.
	c    *store.Committer
	cerr error

	mu   sync.Mutex
	open map[string]*bucket // by JetStream bucket name
}

// bucket is an opened bucket: its JetStream handle and what Ensure
// configured. Immutable once built.
type bucket struct {
	kv       jetstream.KeyValue
	name     string // JetStream bucket name
	subject  string // "$KV.<name>." : the subject prefix of its keys
	maxValue int
	msgTTL   bool
}

// New returns the buckets that write through c, the node's commit path
// (store.Store.Committer). A nil logger discards.
func New(c *store.Committer, logger *slog.Logger) *Buckets {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Buckets{js: c.JetStream(), logger: logger, c: c, open: map[string]*bucket{}}
}

// NewBuckets returns the buckets over js, writing through a committer of
// their own (it needs no closing: it runs only while writes are pending).
// A server uses New with the store's committer instead, so that KV writes
// share commits with the rest of the node. A nil logger discards.
func NewBuckets(js jetstream.JetStream, logger *slog.Logger) *Buckets {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c, err := store.NewCommitter(js, store.CommitterOptions{Logger: logger})
	return &Buckets{js: js, logger: logger, c: c, cerr: err, open: map[string]*bucket{}}
}

// BucketName returns the JetStream KV bucket of an app bucket.
func BucketName(app, bucket string) string {
	return NamePrefix + app + "_" + bucket
}

// ValidName reports whether s is a valid app or bucket name (model.ValidName).
func ValidName(s string) bool { return model.ValidName(s) }

func keyByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '-' || c == '/' || c == '_' || c == '=' || c == '.'
}

// KeyRule is the key syntax, as error messages state it.
const KeyRule = "keys are 1 to 512 bytes of letters, digits and - / _ = . (a '.' separates tokens: not first, not last, not doubled), not starting with _kv"

// CheckKey returns nil if key follows the key syntax (see the package
// documentation), else an error wrapping ErrInvalidKey that says which rule
// it breaks.
func CheckKey(key string) error {
	if len(key) == 0 {
		return fmt.Errorf("%w: it is empty; %s", ErrInvalidKey, KeyRule)
	}
	if err := checkPrefix(key); err != nil {
		return err
	}
	if key[len(key)-1] == '.' {
		return fmt.Errorf("%w: it ends with '.'; %s", ErrInvalidKey, KeyRule)
	}
	return nil
}

// checkPrefix is CheckKey for a list prefix, which may be empty and may
// end with '.'.
func checkPrefix(p string) error {
	switch {
	case len(p) > MaxKeyLen:
		return fmt.Errorf("%w: it is %d bytes, over the limit of %d; %s", ErrInvalidKey, len(p), MaxKeyLen, KeyRule)
	case len(p) > 0 && p[0] == '.':
		return fmt.Errorf("%w: it starts with '.'; %s", ErrInvalidKey, KeyRule)
	case strings.HasPrefix(p, "_kv"):
		return fmt.Errorf("%w: it starts with _kv, which JetStream reserves; %s", ErrInvalidKey, KeyRule)
	}
	for i := 0; i < len(p); i++ {
		if !keyByte(p[i]) {
			r, _ := utf8.DecodeRuneInString(p[i:])
			return fmt.Errorf("%w: it contains %q at byte %d; %s", ErrInvalidKey, r, i, KeyRule)
		}
		if p[i] == '.' && i > 0 && p[i-1] == '.' {
			return fmt.Errorf("%w: it contains '..' (an empty token) at byte %d; %s", ErrInvalidKey, i-1, KeyRule)
		}
	}
	return nil
}

func checkNames(app, name string) error {
	if !ValidName(app) || !ValidName(name) {
		return fmt.Errorf("bucket %s/%s: %w: names are %s", app, name, ErrInvalidName, model.NameRule)
	}
	return nil
}

// maxValueLimit is the largest value a message on this connection carries.
func (b *Buckets) maxValueLimit() int {
	return int(b.js.Conn().MaxPayload()) - HeaderRoom
}

// kvConfig checks cfg and returns the KV configuration of its bucket and
// its max value size. It only reads, so Validate uses it too.
func (b *Buckets) kvConfig(cfg BucketConfig) (jetstream.KeyValueConfig, int, error) {
	if err := checkNames(cfg.App, cfg.Name); err != nil {
		return jetstream.KeyValueConfig{}, 0, fmt.Errorf("ensure %w", err)
	}
	maxValue := cfg.MaxValueBytes
	if maxValue <= 0 {
		maxValue = DefaultMaxValueBytes
	}
	if limit := b.maxValueLimit(); maxValue > limit {
		if cfg.MaxValueBytes > 0 {
			return jetstream.KeyValueConfig{}, 0, fmt.Errorf("ensure bucket %s/%s: max value size %d is above the %d bytes a message can carry", cfg.App, cfg.Name, maxValue, limit)
		}
		maxValue = limit
	}
	history := cfg.History
	if history <= 0 {
		history = 1
	}
	if history > jetstream.KeyValueMaxHistory {
		return jetstream.KeyValueConfig{}, 0, fmt.Errorf("ensure bucket %s/%s: history %d is above %d", cfg.App, cfg.Name, history, jetstream.KeyValueMaxHistory)
	}
	if cfg.TTL < 0 {
		return jetstream.KeyValueConfig{}, 0, fmt.Errorf("ensure bucket %s/%s: %w: %s", cfg.App, cfg.Name, ErrInvalidTTL, cfg.TTL)
	}
	name := BucketName(cfg.App, cfg.Name)
	kvcfg := jetstream.KeyValueConfig{
		Bucket:         name,
		Description:    fmt.Sprintf("Nimbus bucket %s of app %s", cfg.Name, cfg.App),
		MaxValueSize:   int32(maxValue + HeaderRoom),
		History:        uint8(history),
		TTL:            cfg.TTL,
		Storage:        jetstream.FileStorage,
		Replicas:       1,
		LimitMarkerTTL: MarkerTTL,
		Metadata: map[string]string{
			metaApp:      cfg.App,
			metaBucket:   cfg.Name,
			metaMaxValue: strconv.Itoa(maxValue),
		},
	}
	return kvcfg, maxValue, nil
}

// Ensure creates the bucket, or updates its configuration. It is
// idempotent; deploys call it for every bucket an app declares.
func (b *Buckets) Ensure(ctx context.Context, cfg BucketConfig) error {
	kvcfg, maxValue, err := b.kvConfig(cfg)
	if err != nil {
		return err
	}
	kv, err := b.js.CreateOrUpdateKeyValue(ctx, kvcfg)
	if errors.Is(err, jetstream.ErrLimitMarkerTTLNotSupported) {
		// An old server: the bucket works, without per-key TTL.
		b.logger.Warn("per-key TTL not supported by the NATS server", "app", cfg.App, "bucket", cfg.Name)
		kvcfg.LimitMarkerTTL = 0
		kv, err = b.js.CreateOrUpdateKeyValue(ctx, kvcfg)
	}
	if err != nil {
		return fmt.Errorf("ensure bucket %s/%s: %w", cfg.App, cfg.Name, err)
	}
	b.mu.Lock()
	name := kvcfg.Bucket
	b.open[name] = &bucket{kv: kv, name: name, subject: "$KV." + name + ".", maxValue: maxValue, msgTTL: kvcfg.LimitMarkerTTL > 0}
	b.mu.Unlock()
	return nil
}

// Remove deletes a bucket and everything in it. Removing a bucket that does
// not exist is not an error.
func (b *Buckets) Remove(ctx context.Context, app, name string) error {
	if err := checkNames(app, name); err != nil {
		return fmt.Errorf("remove %w", err)
	}
	kvName := BucketName(app, name)
	b.forget(kvName)
	if err := b.js.DeleteKeyValue(ctx, kvName); err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
		return fmt.Errorf("remove bucket %s/%s: %w", app, name, err)
	}
	return nil
}

func (b *Buckets) forget(kvName string) {
	b.mu.Lock()
	delete(b.open, kvName)
	b.mu.Unlock()
}

// bucket returns the opened bucket, opening it on first use.
func (b *Buckets) bucket(ctx context.Context, app, name string) (*bucket, error) {
	if err := checkNames(app, name); err != nil {
		return nil, err
	}
	kvName := BucketName(app, name)
	b.mu.Lock()
	bk := b.open[kvName]
	b.mu.Unlock()
	if bk != nil {
		return bk, nil
	}
	stream, err := b.js.Stream(ctx, "KV_"+kvName)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("bucket %s/%s: %w", app, name, ErrBucketNotFound)
		}
		return nil, fmt.Errorf("bucket %s/%s: %w", app, name, err)
	}
	cfg := stream.CachedInfo().Config
	maxValue, err := strconv.Atoi(cfg.Metadata[metaMaxValue])
	if err != nil || maxValue <= 0 {
		// Not made by Ensure: fall back to what the stream enforces.
		maxValue = min(int(cfg.MaxMsgSize)-HeaderRoom, b.maxValueLimit())
		if cfg.MaxMsgSize <= 0 {
			maxValue = b.maxValueLimit()
		}
	}
	kv, err := b.js.KeyValue(ctx, kvName)
	if err != nil {
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, fmt.Errorf("bucket %s/%s: %w", app, name, ErrBucketNotFound)
		}
		return nil, fmt.Errorf("bucket %s/%s: %w", app, name, err)
	}
	bk = &bucket{kv: kv, name: kvName, subject: "$KV." + kvName + ".", maxValue: maxValue, msgTTL: cfg.AllowMsgTTL}
	b.mu.Lock()
	b.open[kvName] = bk
	b.mu.Unlock()
	return bk, nil
}

// storeErr maps a JetStream error of an operation on bk; a vanished bucket
// becomes ErrBucketNotFound and is forgotten.
func (b *Buckets) storeErr(bk *bucket, err error) error {
	if errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrBucketNotFound) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
		b.forget(bk.name)
		return fmt.Errorf("%w (%w)", ErrBucketNotFound, err)
	}
	return err
}

// Get returns the value and revision of key. A missing, deleted or expired
// key is ErrKeyNotFound.
func (b *Buckets) Get(ctx context.Context, app, bucket, key string) ([]byte, uint64, error) {
	if err := CheckKey(key); err != nil {
		return nil, 0, fmt.Errorf("get %s/%s %q: %w", app, bucket, key, err)
	}
	bk, err := b.bucket(ctx, app, bucket)
	if err != nil {
		return nil, 0, fmt.Errorf("get: %w", err)
	}
	e, err := bk.kv.Get(ctx, key)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, 0, fmt.Errorf("get %s/%s %q: %w", app, bucket, key, ErrKeyNotFound)
		}
		return nil, 0, fmt.Errorf("get %s/%s %q: %w", app, bucket, key, b.storeErr(bk, err))
	}
	return e.Value(), e.Revision(), nil
}

// ttlSeconds rounds a TTL up to whole seconds, at least one.
func ttlSeconds(d time.Duration) int64 {
	s := int64(d / time.Second)
	if d%time.Second != 0 {
		s++
	}
	return max(s, 1)
}

// CheckPut reports the error Put would answer for its arguments and its
// bucket (the key, the TTL, that the bucket exists, the value's size and
// the bucket's support of per-key TTLs), without writing anything. A
// compare-and-swap's condition is not checked: it is the store's answer
// at write time. A bucket is known to exist once opened: CheckPut asks
// the server only the first time.
func (b *Buckets) CheckPut(ctx context.Context, app, bucket, key string, value []byte, opts PutOptions) error {
	_, err := b.checkPut(ctx, app, bucket, key, value, opts)
	return err
}

func (b *Buckets) checkPut(ctx context.Context, app, bucket, key string, value []byte, opts PutOptions) (*bucket, error) {
	if err := CheckKey(key); err != nil {
		return nil, fmt.Errorf("put %s/%s %q: %w", app, bucket, key, err)
	}
	if opts.TTL < 0 {
		return nil, fmt.Errorf("put %s/%s %q: %w: %s", app, bucket, key, ErrInvalidTTL, opts.TTL)
	}
	bk, err := b.bucket(ctx, app, bucket)
	if err != nil {
		return nil, fmt.Errorf("put: %w", err)
	}
	if len(value) > bk.maxValue {
		return nil, fmt.Errorf("put %s/%s %q: %w: %d bytes, the bucket's limit is %d", app, bucket, key, ErrValueTooLarge, len(value), bk.maxValue)
	}
	if opts.TTL > 0 && !bk.msgTTL {
		return nil, fmt.Errorf("put %s/%s %q: %w", app, bucket, key, ErrTTLUnsupported)
	}
	return bk, nil
}

// CheckDelete reports the error Delete (without a condition) would answer
// for its arguments and its bucket, without writing anything (see
// CheckPut).
func (b *Buckets) CheckDelete(ctx context.Context, app, bucket, key string) error {
	if err := CheckKey(key); err != nil {
		return fmt.Errorf("delete %s/%s %q: %w", app, bucket, key, err)
	}
	if _, err := b.bucket(ctx, app, bucket); err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	return nil
}

// Put writes value under key and returns the new revision. With
// opts.IfRevision set it is a compare-and-swap that fails with a
// *RevisionMismatchError; see PutOptions.
func (b *Buckets) Put(ctx context.Context, app, bucket, key string, value []byte, opts PutOptions) (uint64, error) {
	bk, err := b.checkPut(ctx, app, bucket, key, value, opts)
	if err != nil {
		return 0, err
	}
	rev, err := b.put(ctx, bk, key, value, opts)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) || isWrongLastSeq(err) {
			return 0, fmt.Errorf("put %s/%s: %w", app, bucket, b.mismatch(ctx, bk, key, *opts.IfRevision))
		}
		return 0, fmt.Errorf("put %s/%s %q: %w", app, bucket, key, b.storeErr(bk, err))
	}
	return rev, nil
}

func (b *Buckets) put(ctx context.Context, bk *bucket, key string, value []byte, opts PutOptions) (uint64, error) {
	w := store.KVPut(bk.name, key, value)
	if opts.TTL > 0 {
		w.TTL = time.Duration(ttlSeconds(opts.TTL)) * time.Second
	}
	w.IfLastSeq = opts.IfRevision
	w.MsgID = opts.MsgID
	rev, err := b.commit(ctx, w)
	if err != nil && opts.IfRevision != nil && *opts.IfRevision == 0 && isWrongLastSeq(err) {
		// Create also accepts a key whose last entry is a delete or an
		// expiry marker, which a bare "expected sequence 0" refuses (as
		// jetstream.KeyValue.Create does).
		last, deleted, gerr := b.lastEntry(ctx, bk, key)
		if gerr != nil || !deleted {
			return 0, err
		}
		w.IfLastSeq = &last
		return b.commit(ctx, w)
	}
	return rev, err
}

// commit writes one KV write through the commit path and returns its
// revision.
func (b *Buckets) commit(ctx context.Context, w store.Write) (uint64, error) {
	if b.cerr != nil {
		return 0, b.cerr
	}
	res, err := b.c.Commit(ctx, &store.Unit{Writes: []store.Write{w}})
	if err != nil {
		return 0, err
	}
	return res[0].Seq, nil
}

// lastEntry returns the revision of the last message on key and whether it
// marks the key deleted (a delete, a purge or a TTL expiry marker).
func (b *Buckets) lastEntry(ctx context.Context, bk *bucket, key string) (uint64, bool, error) {
	st, err := b.js.Stream(ctx, store.KVStream(bk.name))
	if err != nil {
		return 0, false, err
	}
	m, err := st.GetLastMsgForSubject(ctx, store.KVSubject(bk.name, key))
	if err != nil {
		return 0, false, err
	}
	op := m.Header.Get("KV-Operation")
	return m.Sequence, op == "DEL" || op == "PURGE" || m.Header.Get(jetstream.MarkerReasonHeader) != "", nil
}

func isWrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// mismatch builds the error of a failed compare-and-swap, with the key's
// current revision.
func (b *Buckets) mismatch(ctx context.Context, bk *bucket, key string, expected uint64) error {
	e := &RevisionMismatchError{Key: key, Expected: expected}
	if entry, err := bk.kv.Get(ctx, key); err == nil {
		e.Current = entry.Revision()
	}
	return e
}

// Delete removes key. Deleting a missing key is not an error. With
// ifRevision set it is a compare-and-swap: n deletes only if the key's
// current revision is n; 0 succeeds only if the key does not exist (and
// then writes nothing).
func (b *Buckets) Delete(ctx context.Context, app, bucket, key string, ifRevision *uint64) error {
	if err := CheckKey(key); err != nil {
		return fmt.Errorf("delete %s/%s %q: %w", app, bucket, key, err)
	}
	bk, err := b.bucket(ctx, app, bucket)
	if err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	w := store.KVDelete(bk.name, key)
	if ifRevision != nil {
		if *ifRevision == 0 {
			e, err := bk.kv.Get(ctx, key)
			switch {
			case errors.Is(err, jetstream.ErrKeyNotFound):
				return nil
			case err != nil:
				return fmt.Errorf("delete %s/%s %q: %w", app, bucket, key, b.storeErr(bk, err))
			}
			return fmt.Errorf("delete %s/%s: %w", app, bucket, &RevisionMismatchError{Key: key, Current: e.Revision()})
		}
		w.IfLastSeq = ifRevision
	}
	if _, err := b.commit(ctx, w); err != nil {
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || isWrongLastSeq(err) {
			return fmt.Errorf("delete %s/%s: %w", app, bucket, b.mismatch(ctx, bk, key, *ifRevision))
		}
		return fmt.Errorf("delete %s/%s %q: %w", app, bucket, key, b.storeErr(bk, err))
	}
	return nil
}

// DeleteOnce removes key with msgID as the write's idempotency key (see
// PutOptions.MsgID).
func (b *Buckets) DeleteOnce(ctx context.Context, app, bucket, key, msgID string) error {
	if err := CheckKey(key); err != nil {
		return fmt.Errorf("delete %s/%s %q: %w", app, bucket, key, err)
	}
	bk, err := b.bucket(ctx, app, bucket)
	if err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	w := store.KVDelete(bk.name, key)
	w.MsgID = msgID
	if _, err := b.commit(ctx, w); err != nil {
		return fmt.Errorf("delete %s/%s %q: %w", app, bucket, key, b.storeErr(bk, err))
	}
	return nil
}

// filterFor returns the JetStream subject filter that covers every key
// starting with prefix: the tokens before its last '.', then ">".
func filterFor(prefix string) string {
	for i := len(prefix) - 1; i >= 0; i-- {
		if prefix[i] == '.' {
			return prefix[:i+1] + ">"
		}
	}
	return ">"
}

// List returns up to limit keys starting with prefix, sorted. A limit of 0
// or above MaxListLimit means MaxListLimit.
func (b *Buckets) List(ctx context.Context, app, bucket, prefix string, limit int) ([]string, error) {
	keys, _, err := b.ListAfter(ctx, app, bucket, prefix, "", limit)
	return keys, err
}

// ListAfter is List for paging: it returns the first limit keys with prefix
// that sort after after (all of them when after is ""), and whether there
// are more. The next page starts after the last key returned.
//
// It reads every key under the prefix's last complete token (JetStream
// delivers them in write order, not key order) but keeps only limit+1 of
// them, so memory is bounded by limit and time by the keys under the prefix.
func (b *Buckets) ListAfter(ctx context.Context, app, bucket, prefix, after string, limit int) ([]string, bool, error) {
	if err := checkPrefix(prefix); err != nil {
		return nil, false, fmt.Errorf("list %s/%s prefix %q: %w", app, bucket, prefix, err)
	}
	if len(after) > MaxKeyLen {
		return nil, false, fmt.Errorf("list %s/%s after %q: %w: it is %d bytes, longer than any key (%d)", app, bucket, after, ErrInvalidKey, len(after), MaxKeyLen)
	}
	if limit <= 0 || limit > MaxListLimit {
		limit = MaxListLimit
	}
	bk, err := b.bucket(ctx, app, bucket)
	if err != nil {
		return nil, false, fmt.Errorf("list: %w", err)
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the lister's goroutine if we return early
	lister, err := bk.kv.ListKeysFiltered(lctx, filterFor(prefix))
	if err != nil {
		return nil, false, fmt.Errorf("list %s/%s %q: %w", app, bucket, prefix, b.storeErr(bk, err))
	}
	defer lister.Stop()
	top := newSmallest(limit + 1)
	for {
		select {
		case k, ok := <-lister.Keys():
			if !ok {
				if err := ctx.Err(); err != nil {
					return nil, false, fmt.Errorf("list %s/%s %q: %w", app, bucket, prefix, err)
				}
				keys := top.sorted()
				if len(keys) > limit {
					return keys[:limit], true, nil
				}
				return keys, false, nil
			}
			if len(k) >= len(prefix) && k[:len(prefix)] == prefix && k > after {
				top.add(k)
			}
		case <-ctx.Done():
			return nil, false, fmt.Errorf("list %s/%s %q: %w", app, bucket, prefix, ctx.Err())
		}
	}
}

// Watch calls fn with every change to a key starting with prefix, from now
// on, in revision order, until ctx is done (it then returns nil) or fn
// returns an error (returned, wrapped). It blocks; the caller owns it.
func (b *Buckets) Watch(ctx context.Context, app, bucket, prefix string, fn func(Change) error) error {
	if err := checkPrefix(prefix); err != nil {
		return fmt.Errorf("watch %s/%s prefix %q: %w", app, bucket, prefix, err)
	}
	bk, err := b.bucket(ctx, app, bucket)
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	w, err := bk.kv.WatchFiltered(ctx, []string{filterFor(prefix)}, jetstream.UpdatesOnly())
	if err != nil {
		return fmt.Errorf("watch %s/%s %q: %w", app, bucket, prefix, b.storeErr(bk, err))
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("watch %s/%s: watcher stopped", app, bucket)
			}
			if e == nil || len(e.Key()) < len(prefix) || e.Key()[:len(prefix)] != prefix {
				continue // nil: end of initial values, none with UpdatesOnly
			}
			c := Change{Key: e.Key(), Revision: e.Revision(), Op: OpPut, Value: e.Value()}
			if op := e.Operation(); op != jetstream.KeyValuePut {
				// Nimbus never purges, so a purge is the marker JetStream
				// leaves when a TTL removed the key.
				c.Op, c.Value, c.Expired = OpDelete, nil, op == jetstream.KeyValuePurge
			}
			if err := fn(c); err != nil {
				return fmt.Errorf("watch %s/%s: %w", app, bucket, err)
			}
		}
	}
}

// smallest keeps the n smallest strings added (a max-heap of them).
type smallest struct {
	n int
	h []string
}

func newSmallest(n int) *smallest { return &smallest{n: n} }

func (s *smallest) add(k string) {
	if len(s.h) < s.n {
		s.h = append(s.h, k)
		for i := len(s.h) - 1; i > 0; {
			p := (i - 1) / 2
			if s.h[p] >= s.h[i] {
				break
			}
			s.h[p], s.h[i] = s.h[i], s.h[p]
			i = p
		}
		return
	}
	if k >= s.h[0] {
		return
	}
	s.h[0] = k
	for i := 0; ; {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(s.h) && s.h[l] > s.h[m] {
			m = l
		}
		if r < len(s.h) && s.h[r] > s.h[m] {
			m = r
		}
		if m == i {
			return
		}
		s.h[m], s.h[i] = s.h[i], s.h[m]
		i = m
	}
}

func (s *smallest) sorted() []string {
	out := s.h
	s.h = nil
	slices.Sort(out)
	return out
}
