package audit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbus-dev/nimbus/internal/store"
)

// Names of the log's JetStream assets (on-disk format).
const (
	// Stream holds the entries, in chain order.
	Stream = "NIMBUS_AUDIT"
	// Subject is the one subject of Stream: one subject, so a
	// compare-and-swap on its last sequence orders every writer.
	Subject = "nimbus.audit"
	// HeaderHash carries an entry's own hash (hex sha256 of its data).
	HeaderHash = "Nimbus-Audit-Hash"
)

// Outcomes of an action.
const (
	OutcomeOK     = "ok"
	OutcomeDenied = "denied" // refused by a check: scope, tenant, grant, guard
	OutcomeFailed = "failed" // attempted, and failed (the detail says why)
)

// Entry is one audited action.
type Entry struct {
	// Seq is the entry's index in the chain, from 1; set by Append.
	Seq uint64 `json:"seq"`
	// Time is when the entry was appended (UTC); set by Append.
	Time time.Time `json:"time"`
	// Actor is who acted: a key's id and name ("3fa2c1d9e0b4 ci"),
	// "local" (the data directory's socket), "node" (the node itself), or
	// "app/function" for a function's capability denial.
	Actor string `json:"actor"`
	// Tenant owns the target (or, for a key, the key's tenant); empty:
	// node-wide.
	Tenant string `json:"tenant,omitempty"`
	// Action is what was done: deploy, rollback, delete, key.create,
	// key.revoke, secret.set, secret.rm, capability.denied, egress.blocked,
	// route.denied (a summary of route-auth refusals, one per route and
	// answer per window).
	Action string `json:"action"`
	// Target is what it was done to: an app, app/SECRET, a key id, a
	// grant. Never a secret's value, a key's plaintext or a URL's path.
	Target string `json:"target,omitempty"`
	// Outcome is OutcomeOK, OutcomeDenied or OutcomeFailed.
	Outcome string `json:"outcome"`
	// Detail adds what matters: a revision id, an error code.
	Detail string `json:"detail,omitempty"`
	// Prev is the hex sha256 of the previous entry's stored bytes; ""
	// for the first entry. Set by Append.
	Prev string `json:"prev"`
	// Hash is the hex sha256 of this entry's stored bytes (which do not
	// include Hash): filled when the entry is read or appended.
	Hash string `json:"hash,omitempty"`
}

// ErrInvalid means an entry lacks its actor, action or outcome.
var ErrInvalid = errors.New("invalid audit entry")

// Log appends to and reads the audit stream. Safe for concurrent use.
type Log struct {
	c      *store.Committer
	stream jetstream.Stream
	now    func() time.Time

	mu     sync.Mutex // serializes Append on this node; orders head
	loaded bool
	head   head
}

// head is the last entry of the chain as this Log knows it.
type head struct {
	seq       uint64 // chain index
	streamSeq uint64 // its stream sequence: the compare-and-swap
	hash      string
}

// Open creates the audit stream if needed and returns the log, which
// appends through c.
func Open(ctx context.Context, c *store.Committer) (*Log, error) {
	st, err := c.JetStream().CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        Stream,
		Description: "Nimbus audit log: hash-chained control-plane actions",
		Subjects:    []string{Subject},
		Storage:     jetstream.FileStorage,
		Replicas:    1,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardNew, // full: refuse, never drop old entries
		DenyDelete:  true,
		DenyPurge:   true,
	})
	if err != nil {
		return nil, fmt.Errorf("audit stream %s: %w", Stream, err)
	}
	return &Log{c: c, stream: st, now: time.Now}, nil
}

// casAttempts bounds the retries of an append that lost a race with
// another writer.
const casAttempts = 30

// Append adds e at the end of the chain and returns it as stored (Seq,
// Time, Prev and Hash set). Another writer appending at the same time
// (another node) makes it re-read the head and retry.
func (l *Log) Append(ctx context.Context, e Entry) (Entry, error) {
	if e.Actor == "" || e.Action == "" || e.Outcome == "" {
		return Entry{}, fmt.Errorf("%w: actor, action and outcome are required", ErrInvalid)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for attempt := range casAttempts {
		if !l.loaded {
			h, err := l.readHead(ctx)
			if err != nil {
				return Entry{}, err
			}
			l.head, l.loaded = h, true
		}
		e.Seq, e.Prev, e.Hash = l.head.seq+1, l.head.hash, ""
		e.Time = l.now().UTC()
		data, err := json.Marshal(e)
		if err != nil {
			return Entry{}, err
		}
		sum := hashOf(data)
		last := l.head.streamSeq
		res, err := l.c.Commit(ctx, &store.Unit{Writes: []store.Write{{
			Stream: Stream, Subject: Subject, Data: data,
			Header: nats.Header{HeaderHash: []string{sum}}, IfLastSeq: &last,
		}}})
		if err == nil {
			l.head = head{seq: e.Seq, streamSeq: res[0].Seq, hash: sum}
			e.Hash = sum
			return e, nil
		}
		l.loaded = false // whatever happened, read the head again
		if !isWrongLastSeq(err) {
			return Entry{}, fmt.Errorf("append audit entry %s: %w", e.Action, err)
		}
		// Another writer appended first: wait a little (random, growing),
		// so two writers do not keep colliding, then retry.
		if err := backoff(ctx, attempt); err != nil {
			return Entry{}, fmt.Errorf("append audit entry %s: %w", e.Action, err)
		}
	}
	return Entry{}, fmt.Errorf("append audit entry %s: gave up after %d concurrent appends; retry", e.Action, casAttempts)
}

func (l *Log) readHead(ctx context.Context) (head, error) {
	m, err := l.stream.GetLastMsgForSubject(ctx, Subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return head{}, nil
	}
	if err != nil {
		return head{}, fmt.Errorf("read audit head: %w", err)
	}
	var e Entry
	if err := json.Unmarshal(m.Data, &e); err != nil {
		return head{}, fmt.Errorf("read audit head (stream sequence %d): %w", m.Sequence, err)
	}
	return head{seq: e.Seq, streamSeq: m.Sequence, hash: hashOf(m.Data)}, nil
}

func backoff(ctx context.Context, attempt int) error {
	t := time.NewTimer(rand.N(time.Millisecond << min(attempt, 5)))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func hashOf(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

func isWrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
