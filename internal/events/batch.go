package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Headers of JetStream's atomic batch publish (nats-server 2.12+).
const (
	hdrBatchID     = "Nats-Batch-Id"       // at most 64 characters
	hdrBatchSeq    = "Nats-Batch-Sequence" // 1, 2, ... without gaps
	hdrBatchCommit = "Nats-Batch-Commit"   // "1" on the last message
)

// Server error codes (err_code) the committer branches on.
const (
	// errCodeBatchDuplicate: "atomic publish batch contains duplicate
	// message id". The whole batch is rejected when one of its Nats-Msg-Id
	// is already in the stream's duplicate window.
	errCodeBatchDuplicate jetstream.ErrorCode = 10201
	// errCodeDuplicateConflict: the Nats-Msg-Id is being stored by another
	// proposal right now (clustered streams).
	errCodeDuplicateConflict jetstream.ErrorCode = 10158
)

// pubAck is the server's answer to a publish or a batch commit:
// {"stream":"S","seq":N,"duplicate":true} or
// {"stream":"S","seq":LAST,"batch":"ID","count":C} or {"error":{...}}.
type pubAck struct {
	Error     *jetstream.APIError `json:"error,omitempty"`
	Stream    string              `json:"stream"`
	Seq       uint64              `json:"seq"`
	Duplicate bool                `json:"duplicate,omitempty"`
	Batch     string              `json:"batch,omitempty"`
	Count     int                 `json:"count,omitempty"`
}

// item is one entry in a commit and its outcome.
type item struct {
	e   *Entry
	ack Ack
	err error
}

// commit writes the entries of reqs (taken by the committer, at most
// maxBatch) and releases their callers.
func (l *Log) commit(reqs []*request) {
	n := 0
	for _, r := range reqs {
		n += len(r.entries)
	}
	items := make([]item, 0, n)
	for _, r := range reqs {
		for i := range r.entries {
			items = append(items, item{e: &r.entries[i]})
		}
	}

	// Two entries with one MsgID in one batch: the server would reject the
	// whole batch, so only the first is sent and the others are its
	// duplicates.
	var first map[string]int
	dupOf := make([]int, n)
	send := make([]*item, 0, n)
	for i := range items {
		dupOf[i] = -1
		if id := items[i].e.MsgID; id != "" {
			if first == nil {
				first = make(map[string]int, n)
			}
			if j, ok := first[id]; ok {
				dupOf[i] = j
				continue
			}
			first[id] = i
		}
		send = append(send, &items[i])
	}

	l.write(send)

	acks := make([]Ack, n)
	for i := range items {
		if j := dupOf[i]; j >= 0 {
			items[i].ack = Ack{Seq: items[j].ack.Seq, Duplicate: true}
			items[i].err = items[j].err
			if items[i].err == nil {
				l.entries.Add(1)
				l.dups.Add(1)
			} else {
				l.failed.Add(1)
			}
		}
		acks[i] = items[i].ack
	}
	off := 0
	for _, r := range reqs {
		for j := range r.entries {
			if err := items[off+j].err; err != nil && r.err == nil {
				r.err = err
			}
		}
		if r.err == nil {
			r.acks = acks[off : off+len(r.entries) : off+len(r.entries)]
		}
		off += len(r.entries)
		close(r.done)
	}
}

// write stores items in order and records each one's ack or error. A batch
// the server rejects for a duplicate MsgID (it does not say which) is split
// in halves until the duplicates are single publishes, which the server
// answers with duplicate: true and the original sequence.
func (l *Log) write(items []*item) {
	if len(items) == 1 {
		it := items[0]
		it.ack, it.err = l.publishOne(it.e)
		l.account(1, it.err, it.ack.Duplicate)
		return
	}
	if len(items) <= plainBatchMax {
		l.publishPipelined(items)
		return
	}
	last, err := l.publishBatch(items)
	if err == nil {
		first := last - uint64(len(items)) + 1
		for i, it := range items {
			it.ack = Ack{Seq: first + uint64(i)}
		}
		l.account(len(items), nil, false)
		return
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == errCodeBatchDuplicate || apiErr.ErrorCode == errCodeDuplicateConflict) {
		// Rejected as a whole: nothing was stored, so retrying parts is safe.
		l.splits.Add(1)
		h := len(items) / 2
		l.write(items[:h])
		l.write(items[h:])
		return
	}
	err = fmt.Errorf("events: commit of %d entries: %w", len(items), err)
	l.logger.Warn("event batch failed", "entries", len(items), "err", err)
	for _, it := range items {
		it.err = err
	}
	l.account(len(items), err, false)
}

// account updates the counters after one round trip of n entries.
func (l *Log) account(n int, err error, dup bool) {
	l.commits.Add(1)
	if err != nil {
		l.failed.Add(uint64(n))
		return
	}
	l.entries.Add(uint64(n))
	if dup {
		l.dups.Add(1)
	}
	for {
		cur := l.largest.Load()
		if int64(n) <= cur || l.largest.CompareAndSwap(cur, int64(n)) {
			return
		}
	}
}

// plainBatchMax is the largest batch written as pipelined plain publishes
// instead of one atomic batch. On R1 file storage an atomic batch has a
// fixed cost of ~3 ms (the server stages it in a file store of its own that
// it creates, fsyncs and deletes per batch), against ~0.23 ms per fsynced
// plain publish (measured here, doc.go "Figures"): below ~14 entries the
// plain publishes are cheaper even though each pays its own fsync. It is
// kept well below that break-even: under load, a high threshold made
// batches alternate between small pipelined and large atomic ones.
const plainBatchMax = 4

// publishPipelined sends every item as a plain publish without waiting, then
// collects the acks (in order: one connection, one stream). Each entry is
// fsynced on its own and succeeds or fails on its own.
func (l *Log) publishPipelined(items []*item) {
	futs := make([]jetstream.PubAckFuture, len(items))
	for i, it := range items {
		f, err := l.js.PublishMsgAsync(message(it.e, 0))
		if err != nil {
			it.err = fmt.Errorf("events: publish: %w", err)
			continue
		}
		futs[i] = f
	}
	timer := time.NewTimer(l.timeout)
	defer timer.Stop()
	for i, it := range items {
		if futs[i] != nil {
			select {
			case a := <-futs[i].Ok():
				it.ack = Ack{Seq: a.Sequence, Duplicate: a.Duplicate}
			case err := <-futs[i].Err():
				var apiErr *jetstream.APIError
				if errors.As(err, &apiErr) {
					it.err = fmt.Errorf("events: publish: %w", err)
				} else {
					it.err = fmt.Errorf("events: publish: %w: %w", ErrOutcomeUnknown, err)
				}
			case <-timer.C:
				it.err = fmt.Errorf("events: publish: %w: no ack within %s", ErrOutcomeUnknown, l.timeout)
				timer.Reset(0) // the rest expire at once
			case <-l.abort.Done():
				it.err = fmt.Errorf("events: publish: %w: %w", ErrOutcomeUnknown, l.abort.Err())
			}
		}
		l.account(1, it.err, it.ack.Duplicate)
	}
}

// message builds the NATS message of an entry with room for the batch
// headers. The entry's header map is copied, never modified.
func message(e *Entry, extra int) *nats.Msg {
	h := make(nats.Header, len(e.Header)+1+extra)
	for k, v := range e.Header {
		h[k] = v
	}
	if e.MsgID != "" {
		h[nats.MsgIdHdr] = []string{e.MsgID}
	}
	return &nats.Msg{Subject: e.Subject, Header: h, Data: e.Data}
}

// publishOne stores one entry with a plain publish: one write, one fsync,
// no staging.
func (l *Log) publishOne(e *Entry) (Ack, error) {
	a, err := l.request(message(e, 0))
	if err != nil {
		return Ack{}, err
	}
	return Ack{Seq: a.Seq, Duplicate: a.Duplicate}, nil
}

// publishBatch sends items as one atomic batch and returns the stream
// sequence of its last entry. Every message but the last is a plain publish
// (no reply: the server stages it and answers nothing); the last carries
// Nats-Batch-Commit: 1 and is a request, answered after the whole batch is
// stored and flushed. A staged message the server refused makes the commit
// fail ("incomplete batch"), so no answer is lost.
func (l *Log) publishBatch(items []*item) (uint64, error) {
	l.batchN++
	id := l.batchPrefix + "-" + strconv.FormatUint(l.batchN, 36)
	for i, it := range items {
		m := message(it.e, 3)
		m.Header[hdrBatchID] = []string{id}
		m.Header[hdrBatchSeq] = []string{strconv.Itoa(i + 1)}
		if i < len(items)-1 {
			if err := l.nc.PublishMsg(m); err != nil {
				// Nothing is committed; the server drops the staged part
				// after its batch timeout.
				return 0, fmt.Errorf("stage entry %d: %w", i+1, err)
			}
			continue
		}
		m.Header[hdrBatchCommit] = []string{"1"}
		a, err := l.request(m)
		if err != nil {
			return 0, err
		}
		if a.Batch != id || a.Count != len(items) {
			return 0, fmt.Errorf("%w: commit answered batch %q count %d, sent %q count %d",
				ErrOutcomeUnknown, a.Batch, a.Count, id, len(items))
		}
		return a.Seq, nil
	}
	panic("unreachable")
}

// request sends m and decodes the server's answer. An error the server
// returned is a *jetstream.APIError (nothing stored); no answer is
// ErrOutcomeUnknown, except "no responders" (the stream does not exist,
// nothing stored).
func (l *Log) request(m *nats.Msg) (pubAck, error) {
	ctx, cancel := context.WithTimeout(l.abort, l.timeout)
	defer cancel()
	resp, err := l.nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return pubAck{}, fmt.Errorf("stream %s: %w", l.stream, err)
		}
		return pubAck{}, fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
	}
	var a pubAck
	if err := json.Unmarshal(resp.Data, &a); err != nil {
		return pubAck{}, fmt.Errorf("%w: decode ack %q: %w", ErrOutcomeUnknown, resp.Data, err)
	}
	if a.Error != nil {
		return pubAck{}, a.Error
	}
	if a.Stream != l.stream || a.Seq == 0 {
		return pubAck{}, fmt.Errorf("%w: unexpected ack %q", ErrOutcomeUnknown, resp.Data)
	}
	return a, nil
}
