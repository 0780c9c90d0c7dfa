package audit

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// record is one message of the audit stream as stored.
type record struct {
	streamSeq  uint64
	data       []byte
	headerHash string
}

// fetchBatch is how many entries one read of the stream asks for.
const fetchBatch = 512

// scan calls fn with every message of the stream, in order, up to the
// number the stream held when scan started.
func (l *Log) scan(ctx context.Context, fn func(record) error) error {
	info, err := l.stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("audit stream info: %w", err)
	}
	total := info.State.Msgs
	if total == 0 {
		return nil
	}
	cons, err := l.stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{Subject}})
	if err != nil {
		return fmt.Errorf("read audit log: %w", err)
	}
	var seen uint64
	for seen < total {
		batch, err := cons.Fetch(int(min(total-seen, fetchBatch)), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return fmt.Errorf("read audit log: %w", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("read audit log: %w", err)
			}
			seen++
			if err := fn(record{streamSeq: meta.Sequence.Stream, data: m.Data(), headerHash: m.Headers().Get(HeaderHash)}); err != nil {
				return err
			}
		}
		if err := batch.Error(); err != nil {
			return fmt.Errorf("read audit log: %w", err)
		}
		if n == 0 {
			return fmt.Errorf("read audit log: the stream said %d entries, %d came", total, seen)
		}
	}
	return nil
}

// Filter selects entries for List. The zero value selects every entry.
type Filter struct {
	// Tenant keeps the entries of one tenant; "" keeps all.
	Tenant string
	// Action keeps one action (deploy, key.create, ...); "" keeps all.
	Action string
	// Target keeps the entries whose target is this or starts with it
	// and "/" (an app and its secrets); "" keeps all.
	Target string
	// Since keeps the entries at or after it; zero keeps all.
	Since time.Time
	// Limit keeps the newest Limit entries that match; 0 keeps all.
	Limit int
}

func (f Filter) match(e *Entry) bool {
	return (f.Tenant == "" || e.Tenant == f.Tenant) &&
		(f.Action == "" || e.Action == f.Action) &&
		(f.Target == "" || e.Target == f.Target || len(e.Target) > len(f.Target) && e.Target[:len(f.Target)+1] == f.Target+"/") &&
		(f.Since.IsZero() || !e.Time.Before(f.Since))
}

// List returns the entries f selects, oldest first, each with its Hash.
// It does not check the chain (Verify does); an entry that does not parse
// is an error.
func (l *Log) List(ctx context.Context, f Filter) ([]Entry, error) {
	var out []Entry
	err := l.scan(ctx, func(r record) error {
		var e Entry
		if err := json.Unmarshal(r.data, &e); err != nil {
			return fmt.Errorf("audit entry at stream sequence %d does not parse (run `nimbus audit verify`): %w", r.streamSeq, err)
		}
		if !f.match(&e) {
			return nil
		}
		e.Hash = hashOf(r.data)
		out = append(out, e)
		if f.Limit > 0 && len(out) > 2*f.Limit {
			out = append(out[:0], out[len(out)-f.Limit:]...)
		}
		return nil
	})
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[len(out)-f.Limit:]
	}
	return out, err
}

// Report is the result of Verify.
type Report struct {
	// Entries counts the entries read.
	Entries int `json:"entries"`
	// Head is the hash of the last entry read: keep it somewhere else to
	// detect, later, the loss of the newest entries.
	Head string `json:"head,omitempty"`
	// HeadSeq is the chain index of the last entry read.
	HeadSeq uint64 `json:"head_seq,omitempty"`
	// Broken is the first entry that does not fit the chain; nil when
	// the chain is whole.
	Broken *Break `json:"broken,omitempty"`
}

// OK reports whether the chain is whole.
func (r *Report) OK() bool { return r.Broken == nil }

// Break names the first entry that does not fit the chain.
type Break struct {
	// Seq is the chain index of the entry named (what it claims, or the
	// index it should have had).
	Seq uint64 `json:"seq"`
	// StreamSeq is where it is stored in the stream.
	StreamSeq uint64 `json:"stream_seq"`
	// Reason says what is wrong, in words.
	Reason string `json:"reason"`
}

// Verify reads the whole log and recomputes the chain: every entry must
// hash to the hash stored with it, carry the next index, and record the
// hash of the entry before it. It reports the first entry that does not;
// an error means the log could not be read.
func (l *Log) Verify(ctx context.Context) (*Report, error) {
	rep := &Report{}
	var prev string // hash of the previous entry
	var prevSeq uint64
	err := l.scan(ctx, func(r record) error {
		if rep.Broken != nil {
			return nil
		}
		rep.Entries++
		var e Entry
		if err := json.Unmarshal(r.data, &e); err != nil {
			rep.Broken = &Break{Seq: prevSeq + 1, StreamSeq: r.streamSeq, Reason: fmt.Sprintf("the entry after entry %d does not parse: it was altered", prevSeq)}
			return nil
		}
		sum := hashOf(r.data)
		switch {
		case r.headerHash != sum:
			rep.Broken = &Break{Seq: e.Seq, StreamSeq: r.streamSeq, Reason: fmt.Sprintf("entry %d was altered: its content hashes to %.12s, not to the %.12s it was stored with", e.Seq, sum, r.headerHash)}
		case e.Seq > prevSeq+1:
			rep.Broken = &Break{Seq: prevSeq + 1, StreamSeq: r.streamSeq, Reason: missing(prevSeq, e.Seq)}
		case e.Seq <= prevSeq:
			rep.Broken = &Break{Seq: e.Seq, StreamSeq: r.streamSeq, Reason: fmt.Sprintf("entry %d comes after entry %d: it was replayed or moved", e.Seq, prevSeq)}
		case e.Prev != prev:
			rep.Broken = &Break{Seq: e.Seq, StreamSeq: r.streamSeq, Reason: fmt.Sprintf("entry %d does not link to entry %d: it records %.12s, entry %d hashes to %.12s (entry %d was altered, or entry %d was)", e.Seq, prevSeq, e.Prev, prevSeq, prev, prevSeq, e.Seq)}
		}
		prev, prevSeq = sum, e.Seq
		rep.Head, rep.HeadSeq = sum, e.Seq
		return nil
	})
	if err != nil {
		return nil, err
	}
	return rep, nil
}

func missing(prevSeq, seq uint64) string {
	if seq == prevSeq+2 {
		return fmt.Sprintf("entry %d is missing: it was removed (entry %d follows entry %d)", prevSeq+1, seq, prevSeq)
	}
	return fmt.Sprintf("entries %d to %d are missing: they were removed (entry %d follows entry %d)", prevSeq+1, seq-1, seq, prevSeq)
}
