package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
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
	// errCodeAtomicDisabled: the stream does not allow atomic batches.
	errCodeAtomicDisabled jetstream.ErrorCode = 10174
)

// plainBatchMax is the largest batch written as pipelined plain publishes
// instead of one atomic batch, when every unit in it is one write. On R1
// file storage an atomic batch has a fixed cost of ~3 ms (the server stages
// it in a file store of its own that it creates, fsyncs and deletes per
// batch), against ~0.23 ms per fsynced plain publish (measured here,
// package events' doc.go "Figures"): below ~14 writes the plain publishes
// are cheaper even though each pays its own fsync. It is kept well below
// that break-even: under load, a high threshold made batches alternate
// between small pipelined and large atomic ones.
const plainBatchMax = 4

// kvPlainBatchMax is plainBatchMax for KV bucket streams (KV_*). KV writes
// come from guests and records one unit of one write at a time, and before
// the commit path each was a plain publish: with 8 guests putting
// concurrently, batches of 5-8 single writes made atomic batches that cost
// more than the plain publishes (bench kv, put with 8 workers: ~300 ops/s
// against ~540 before; pipelined, as before). Up to about the break-even
// (~14) they stay pipelined; above it group commit wins.
const kvPlainBatchMax = 14

// pipelineMax returns the largest batch of single-write units the lane
// sends as pipelined plain publishes.
func (l *lane) pipelineMax() int {
	if strings.HasPrefix(l.stream, "KV_") {
		return kvPlainBatchMax
	}
	return plainBatchMax
}

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

// item is one write in a commit and its outcome.
type item struct {
	w   *Write
	p   *pending
	res Result
	err error
}

// group is what must be stored atomically: the sent writes of one unit
// (or, after a duplicate split, part of them).
type group []*item

// commit writes the units of ps (taken by the lane, at most maxBatch
// writes) and releases their callers.
func (l *lane) commit(ps []*pending) {
	n := 0
	for _, p := range ps {
		n += len(p.u.Writes)
	}
	if err := l.refusal(); err != nil {
		// Refused before anything is sent: a write that reached a full
		// disk would stop the stream until the server restarts, and a
		// stopped stream would leave it unanswered.
		for _, p := range ps {
			l.c.stats.add(len(p.u.Writes), 0, err)
			if cs := p.u.Counters; cs != nil {
				cs.add(len(p.u.Writes), 0, err)
			}
			p.err = err
			close(p.done)
		}
		return
	}
	items := make([]item, n)
	groups := make([]group, 0, len(ps))
	// Two writes of one unit with one MsgID: the server would reject the
	// whole batch, so only the first is sent and the others are its
	// duplicates. Copies in different units are left to the server (a
	// rejected batch is split until they are apart), so that one unit's
	// failure never becomes another's.
	dupOf := make([]int, n)
	off := 0
	for _, p := range ps {
		var first map[string]int
		g := make(group, 0, len(p.u.Writes))
		for j := range p.u.Writes {
			i := off + j
			items[i] = item{w: &p.u.Writes[j], p: p}
			dupOf[i] = -1
			if id := p.u.Writes[j].MsgID; id != "" && len(p.u.Writes) > 1 {
				if first == nil {
					first = make(map[string]int, len(p.u.Writes))
				}
				if k, ok := first[id]; ok {
					dupOf[i] = k
					continue
				}
				first[id] = i
			}
			g = append(g, &items[i])
		}
		groups = append(groups, g)
		off += len(p.u.Writes)
	}

	l.write(groups, false)

	off = 0
	for _, p := range ps {
		results := make([]Result, len(p.u.Writes))
		for j := range p.u.Writes {
			it := &items[off+j]
			if k := dupOf[off+j]; k >= 0 {
				it.res = Result{Seq: items[k].res.Seq, Duplicate: true}
				it.err = items[k].err
				l.c.stats.addCopy(it.err)
				if cs := p.u.Counters; cs != nil {
					cs.addCopy(it.err)
				}
			}
			if it.err != nil && p.err == nil {
				p.err = it.err
			}
			results[j] = it.res
		}
		if p.err == nil {
			p.results = results
		}
		off += len(p.u.Writes)
		close(p.done)
	}
}

// refusal is why the lane must not send now: its stream was stopped by a
// failed write, or the disk is under the store's reserve.
func (l *lane) refusal() error {
	if l.c.stopped != nil {
		if err := l.c.stopped(l.stream); err != nil {
			return err
		}
	}
	if l.c.space != nil {
		return l.c.space()
	}
	return nil
}

// write stores groups in order, each atomically, and records each item's
// result or error. Groups of one write each, up to plainBatchMax of them,
// are pipelined plain publishes; anything else is one atomic batch. A batch
// the server rejects (it answered, so nothing was stored) is split in
// halves between groups until the group at fault fails alone; a single
// group rejected for a duplicate MsgID (the server does not say which) is
// split between its writes until the duplicates are single publishes, which
// the server answers with duplicate: true and the original sequence.
func (l *lane) write(groups []group, retried bool) {
	n, single := 0, true
	for _, g := range groups {
		n += len(g)
		single = single && len(g) <= 1
	}
	switch {
	case n == 0:
		return
	case n == 1:
		for _, g := range groups {
			for _, it := range g {
				it.res, it.err = l.publishOne(it.w)
				l.account([]*item{it}, it.err)
			}
		}
		return
	case single && n <= l.pipelineMax():
		l.publishPipelined(groups)
		return
	}
	items := make([]*item, 0, n)
	for _, g := range groups {
		items = append(items, g...)
	}
	last, err := l.publishBatch(items)
	if err == nil {
		first := last - uint64(len(items)) + 1
		for i, it := range items {
			it.res = Result{Seq: first + uint64(i)}
		}
		l.account(items, nil)
		return
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		// Rejected as a whole: nothing was stored, so retrying parts is safe.
		switch {
		case apiErr.ErrorCode == errCodeAtomicDisabled && !retried:
			// The stream's configuration was replaced (a KV bucket
			// updated by its owner): turn atomic batches on again.
			l.atomicOK = false
			l.write(groups, true)
			return
		case len(groups) > 1:
			l.split(items)
			h := len(groups) / 2
			l.write(groups[:h], false)
			l.write(groups[h:], false)
			return
		case len(items) > 1 && (apiErr.ErrorCode == errCodeBatchDuplicate || apiErr.ErrorCode == errCodeDuplicateConflict):
			l.split(items)
			h := len(items) / 2
			l.write([]group{items[:h]}, false)
			l.write([]group{items[h:]}, false)
			return
		}
	}
	err = fmt.Errorf("store: commit of %d writes to %s: %w", len(items), l.stream, err)
	if !isAPIError(err) {
		l.c.logger.Warn("commit failed", "stream", l.stream, "writes", len(items), "err", err)
	}
	for _, it := range items {
		it.err = err
	}
	l.account(items, err)
}

func isAPIError(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr)
}

// split counts a batch split.
func (l *lane) split(items []*item) {
	l.c.stats.splits.Add(1)
	l.forCounters(items, func(cs *Counters, _, _ int) { cs.splits.Add(1) })
}

// account updates the counters after one round trip of items.
func (l *lane) account(items []*item, err error) {
	dups := 0
	for _, it := range items {
		if it.res.Duplicate {
			dups++
		}
	}
	l.c.stats.add(len(items), dups, err)
	l.forCounters(items, func(cs *Counters, n, d int) { cs.add(n, d, err) })
}

// forCounters calls fn once for each distinct unit Counters among items,
// with that unit's number of items and of duplicates.
func (l *lane) forCounters(items []*item, fn func(cs *Counters, n, d int)) {
	var seen []*Counters
	for _, it := range items {
		cs := it.p.u.Counters
		if cs == nil || slices.Contains(seen, cs) {
			continue
		}
		seen = append(seen, cs)
		n, d := 0, 0
		for _, jt := range items {
			if jt.p.u.Counters == cs {
				n++
				if jt.res.Duplicate {
					d++
				}
			}
		}
		fn(cs, n, d)
	}
}

// addCopy records a write that was not sent because an earlier write of
// its unit had the same MsgID.
func (c *Counters) addCopy(err error) {
	if err != nil {
		c.failed.Add(1)
		return
	}
	c.writes.Add(1)
	c.dups.Add(1)
}

// publishPipelined sends every item as a plain publish without waiting,
// then collects the acks (in order: one connection, one stream). Each is
// fsynced on its own and succeeds or fails on its own (each is its own
// unit).
func (l *lane) publishPipelined(groups []group) {
	items := make([]*item, 0, len(groups))
	for _, g := range groups {
		items = append(items, g...)
	}
	futs := make([]jetstream.PubAckFuture, len(items))
	for i, it := range items {
		f, err := l.c.js.PublishMsgAsync(message(it.w, 0))
		if err != nil {
			it.err = fmt.Errorf("store: publish to %s: %w", l.stream, err)
			continue
		}
		futs[i] = f
	}
	timer := time.NewTimer(l.c.timeout)
	defer timer.Stop()
	for i, it := range items {
		if futs[i] != nil {
			select {
			case a := <-futs[i].Ok():
				it.res = Result{Seq: a.Sequence, Duplicate: a.Duplicate}
			case err := <-futs[i].Err():
				if isAPIError(err) || errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) {
					it.err = fmt.Errorf("store: publish to %s: %w", l.stream, err)
				} else {
					it.err = fmt.Errorf("store: publish to %s: %w: %w", l.stream, ErrOutcomeUnknown, err)
				}
			case <-timer.C:
				it.err = fmt.Errorf("store: publish to %s: %w: no ack within %s", l.stream, ErrOutcomeUnknown, l.c.timeout)
				timer.Reset(0) // the rest expire at once
			case <-l.c.abort.Done():
				it.err = fmt.Errorf("store: publish to %s: %w: %w", l.stream, ErrOutcomeUnknown, l.c.abort.Err())
			}
		}
		l.account([]*item{it}, it.err)
	}
}

// message builds the NATS message of a write with room for extra headers.
// The write's header map is copied, never modified.
func message(w *Write, extra int) *nats.Msg {
	h := make(nats.Header, len(w.Header)+3+extra)
	for k, v := range w.Header {
		h[k] = v
	}
	if w.MsgID != "" {
		h[nats.MsgIdHdr] = []string{w.MsgID}
	}
	if w.IfLastSeq != nil {
		h[jetstream.ExpectedLastSubjSeqHeader] = []string{strconv.FormatUint(*w.IfLastSeq, 10)}
	}
	if w.TTL > 0 {
		s := int64(w.TTL / time.Second)
		if w.TTL%time.Second != 0 {
			s++
		}
		h[jetstream.MsgTTLHeader] = []string{strconv.FormatInt(s, 10)}
	}
	return &nats.Msg{Subject: w.Subject, Header: h, Data: w.Data}
}

// publishOne stores one write with a plain publish: one write, one fsync,
// no staging.
func (l *lane) publishOne(w *Write) (Result, error) {
	a, err := l.request(message(w, 0))
	if err != nil {
		return Result{}, fmt.Errorf("store: publish to %s: %w", l.stream, err)
	}
	return Result{Seq: a.Seq, Duplicate: a.Duplicate}, nil
}

// publishBatch sends items as one atomic batch and returns the stream
// sequence of its last write. Every message but the last is a plain publish
// (no reply: the server stages it and answers nothing); the last carries
// Nats-Batch-Commit: 1 and is a request, answered after the whole batch is
// stored and flushed. A staged message the server refused makes the commit
// fail ("incomplete batch"), so no answer is lost.
func (l *lane) publishBatch(items []*item) (uint64, error) {
	if !l.atomicOK {
		if err := l.ensureAtomic(); err != nil {
			return 0, fmt.Errorf("allow atomic batches: %w", err)
		}
		l.atomicOK = true
	}
	id := l.c.batchID()
	for i, it := range items {
		m := message(it.w, 3)
		m.Header[hdrBatchID] = []string{id}
		m.Header[hdrBatchSeq] = []string{strconv.Itoa(i + 1)}
		if i < len(items)-1 {
			if err := l.c.nc.PublishMsg(m); err != nil {
				// Nothing is committed; the server drops the staged part
				// after its batch timeout.
				return 0, fmt.Errorf("stage write %d: %w", i+1, err)
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

// ensureAtomic turns on atomic batch publish on the lane's stream if it is
// off (KV buckets are created without it).
func (l *lane) ensureAtomic() error {
	ctx, cancel := context.WithTimeout(l.c.abort, l.c.timeout)
	defer cancel()
	st, err := l.c.mgmt.Stream(ctx, l.stream)
	if err != nil {
		return err
	}
	cfg := st.CachedInfo().Config
	if cfg.AllowAtomicPublish {
		return nil
	}
	cfg.AllowAtomicPublish = true
	_, err = l.c.mgmt.UpdateStream(ctx, cfg)
	return err
}

// request sends m and decodes the server's answer. An error the server
// returned is a *jetstream.APIError (nothing stored); no answer is
// ErrOutcomeUnknown, except "no responders" (the stream does not exist,
// nothing stored).
func (l *lane) request(m *nats.Msg) (pubAck, error) {
	ctx, cancel := context.WithTimeout(l.c.abort, l.c.timeout)
	defer cancel()
	resp, err := l.c.nc.RequestMsgWithContext(ctx, m)
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
