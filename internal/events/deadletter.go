package events

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
)

// Dead letters and replay.
//
// A dead letter is an entry on one of an app's dead-letter topics that the
// dispatcher wrote (deadLetterEntry): it carries the Nimbus-Dead-* headers,
// which nothing else can set (publishers' entries have no headers), so an
// entry published by a user to a topic that also serves as a trigger's
// dead_letter is not mistaken for one.
//
// Replay sends a dead letter back to the one trigger whose delivery failed,
// not to every subscriber of its topic: each trigger consumer also listens
// to its own replay subject, prefix + app + "._replay." + consumer name (see
// Dispatcher.consumerConfig), so an event appended there reaches that
// consumer alone and is delivered like any other event, with fresh
// attempts. Topic names cannot start with '_', so the subject never meets a
// user topic.

// ExtReplayOf is the extension a replayed event carries: the stream
// sequence of the dead letter it came from.
const ExtReplayOf = "nimbusreplayof"

// Headers of a dead letter's entry, mirroring its Ext* extensions.
const (
	hdrDeadError    = "Nimbus-Dead-Error"
	hdrDeadAttempts = "Nimbus-Dead-Attempts"
	hdrDeadTopic    = "Nimbus-Dead-Topic"
	hdrDeadFunction = "Nimbus-Dead-Function"
	hdrDeadTrigger  = "Nimbus-Dead-Trigger"
)

// Limits of listing and replay.
const (
	// DefaultDeadLetterPage is DeadLetterQuery.Limit when it is 0.
	DefaultDeadLetterPage = 100
	// MaxDeadLetterPage caps DeadLetterQuery.Limit.
	MaxDeadLetterPage = 1000
	// replayBatch is how many replayed events go in one Append (one commit).
	replayBatch = 100
)

// Errors of Replay, wrapped in ReplayResult.Err.
var (
	// ErrDeadLetterNotFound means no entry has that sequence any more: it
	// was replayed already, or it expired with the events stream's max age.
	ErrDeadLetterNotFound = errors.New("dead letter not found")
	// ErrNotDeadLetter means the sequence names an entry that is not a
	// dead letter of the app.
	ErrNotDeadLetter = errors.New("not a dead letter")
	// ErrNotReplayable means the dead letter is not a CloudEvent (it was
	// dead-lettered as it was): no delivery of it can succeed.
	ErrNotReplayable = errors.New("dead letter cannot be replayed")
)

// TriggerGoneError means the trigger whose delivery failed no longer exists
// (its function or the trigger was removed, or renamed, by a later deploy),
// so the dead letter has nowhere to go back to. Replaying it to a topic
// instead (ReplayOptions.Topic) works.
type TriggerGoneError struct {
	Function, Trigger, Topic string
}

func (e *TriggerGoneError) Error() string {
	return fmt.Sprintf("trigger %q of function %s (topic %s) no longer exists in the app", e.Trigger, e.Function, e.Topic)
}

// DeadLetter is one dead letter as stored.
type DeadLetter struct {
	// Seq is the entry's stream sequence: its id for replay.
	Seq uint64
	// Time is when it was dead-lettered.
	Time time.Time
	// DeadLetterTopic is the topic it is on ("dead-letter" unless its
	// trigger names another).
	DeadLetterTopic string
	// Event is the event whose delivery failed, without the dead-letter
	// extensions; nil when the entry was not a CloudEvent (Raw holds it).
	Event *cloudevents.Event
	// Raw is the entry's data when Event is nil.
	Raw []byte
	// Error is the last failure (at most 1 KiB); Attempts how many
	// deliveries were tried.
	Error    string
	Attempts int
	// Topic, Function and Trigger name the trigger that failed it. Topic
	// is internal for cron triggers (CronTopic) and bucket triggers.
	Topic, Function, Trigger string
}

// DeadLetterQuery selects a page of an app's dead letters.
type DeadLetterQuery struct {
	// Topics are the dead-letter topics to read. Optional: default
	// ["dead-letter"]; add every dead_letter topic the app's triggers name.
	Topics []string
	// Newest lists the newest first. Default: oldest first (stream order).
	Newest bool
	// After is the cursor of the previous page (its Next): the page starts
	// past that sequence in listing order. 0: from the start.
	After uint64
	// Limit is the page size. Optional: default 100, at most 1000.
	Limit int
}

// DeadLetterPage is one page of dead letters.
type DeadLetterPage struct {
	Letters []DeadLetter
	// Next is the cursor of the next page (DeadLetterQuery.After), 0 when
	// this page is the last.
	Next uint64
}

// ReplayOptions configure Replay and ReplayAll.
type ReplayOptions struct {
	// Topic, when set, appends the events to this topic of the app (every
	// trigger of it gets them) instead of to the trigger that failed them.
	// The caller checks that the app declares it.
	Topic string
}

// ReplayResult is the outcome of replaying one dead letter.
type ReplayResult struct {
	Seq uint64 // the dead letter
	// Function, Trigger and Topic name the trigger that failed it (empty
	// when the dead letter could not be read).
	Function, Trigger, Topic string
	// NewSeq is the replayed event's stream sequence; Duplicate is set when
	// it had been appended by an earlier replay of the same dead letter
	// (within the duplicate window) and was not appended again.
	NewSeq    uint64
	Duplicate bool
	// Err is why the dead letter was not replayed: ErrDeadLetterNotFound,
	// ErrNotDeadLetter, ErrNotReplayable or *TriggerGoneError (wrapped), or
	// a storage error. With NewSeq set, the event was replayed but the dead
	// letter could not be removed; replaying it again appends nothing
	// within the duplicate window.
	Err error
}

// ReplaySubject is the subject of a trigger consumer's replays: prefix +
// app + "._replay." + consumer.
func ReplaySubject(prefix, app, consumer string) string {
	return prefix + app + "._replay." + consumer
}

// deadLetterSubjects are the subjects of an app's dead-letter topics.
func (d *Dispatcher) deadLetterSubjects(app string, topics []string) ([]string, error) {
	if len(topics) == 0 {
		topics = []string{DefaultDeadLetterTopic}
	}
	var subs []string
	for _, t := range topics {
		if t == "" || strings.Contains(t, ".") || !validSubject(t) {
			return nil, fmt.Errorf("dead-letter topic %q must be one subject token", t)
		}
		s := SubjectFor(d.log.prefix, app, t)
		if !slices.Contains(subs, s) {
			subs = append(subs, s)
		}
	}
	return subs, nil
}

// DeadLetters lists a page of the app's dead letters, by stream sequence.
func (d *Dispatcher) DeadLetters(ctx context.Context, app string, q DeadLetterQuery) (*DeadLetterPage, error) {
	subs, err := d.deadLetterSubjects(app, q.Topics)
	if err != nil {
		return nil, fmt.Errorf("dead letters of %s: %w", app, err)
	}
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultDeadLetterPage
	}
	limit = min(limit, MaxDeadLetterPage)
	var found []DeadLetter
	collect := func(m jetstream.Msg) bool {
		if dl, ok := d.readDeadLetter(app, m.Subject(), m.Headers(), m.Data()); ok {
			meta, err := m.Metadata()
			if err != nil {
				return true
			}
			dl.Seq, dl.Time = meta.Sequence.Stream, meta.Timestamp
			found = append(found, dl)
		}
		return true
	}
	if !q.Newest {
		err = d.scan(ctx, subs, q.After+1, math.MaxUint64, func(m jetstream.Msg) bool {
			collect(m)
			return len(found) <= limit // one past the page says whether there is more
		})
		if err != nil {
			return nil, fmt.Errorf("dead letters of %s: %w", app, err)
		}
	} else {
		// Newest first: JetStream reads forward only, so read windows of
		// sequences backwards from the end, each larger than the last.
		st, err := d.js.Stream(ctx, d.log.Stream())
		if err != nil {
			return nil, fmt.Errorf("dead letters of %s: %w", app, err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("dead letters of %s: %w", app, err)
		}
		first, hi := max(info.State.FirstSeq, 1), info.State.LastSeq
		if q.After > 0 {
			hi = min(hi, q.After-1)
		}
		window := uint64(4 * (limit + 1))
		var newest []DeadLetter
		for hi >= first && len(newest) <= limit {
			lo := first
			if hi-first+1 > window {
				lo = hi - window + 1
			}
			found = found[:0]
			if err := d.scan(ctx, subs, lo, hi, collect); err != nil {
				return nil, fmt.Errorf("dead letters of %s: %w", app, err)
			}
			for i := len(found) - 1; i >= 0; i-- {
				newest = append(newest, found[i])
			}
			if lo == first {
				break
			}
			hi, window = lo-1, window*4
		}
		found = newest
	}
	page := &DeadLetterPage{Letters: found}
	if len(found) > limit {
		page.Letters = found[:limit]
		page.Next = found[limit-1].Seq
	}
	return page, nil
}

// readDeadLetter decodes an entry; ok is false when it is not a dead letter
// of app.
func (d *Dispatcher) readDeadLetter(app, subject string, hdr nats.Header, data []byte) (DeadLetter, bool) {
	topic, ok := strings.CutPrefix(subject, d.log.prefix+app+".")
	if !ok || strings.Contains(topic, ".") || hdr.Get(hdrDeadFunction) == "" {
		return DeadLetter{}, false
	}
	dl := DeadLetter{
		DeadLetterTopic: topic,
		Error:           hdr.Get(hdrDeadError),
		Topic:           hdr.Get(hdrDeadTopic),
		Function:        hdr.Get(hdrDeadFunction),
		Trigger:         hdr.Get(hdrDeadTrigger),
	}
	dl.Attempts, _ = strconv.Atoi(hdr.Get(hdrDeadAttempts))
	e, err := DecodeEntry(data)
	if err != nil {
		dl.Raw = data
		return dl, true
	}
	stripDeadLetter(e)
	dl.Event = e
	return dl, true
}

// stripDeadLetter removes the extensions deadLetterEntry and replay add.
func stripDeadLetter(e *cloudevents.Event) {
	if e.Extensions == nil {
		return
	}
	e.Extensions = maps.Clone(e.Extensions)
	for _, k := range []string{ExtDeadError, ExtDeadAttempts, ExtDeadTopic, ExtDeadFunction, ExtDeadTrigger, ExtReplayOf} {
		delete(e.Extensions, k)
	}
	if len(e.Extensions) == 0 {
		e.Extensions = nil
	}
}

// scan calls fn with the entries of subjects whose stream sequence is in
// [from, to], in stream order, until fn returns false. It reads through a
// short-lived consumer of its own that it deletes when done.
func (d *Dispatcher) scan(ctx context.Context, subjects []string, from, to uint64, fn func(jetstream.Msg) bool) error {
	if from > to {
		return nil
	}
	cons, err := d.js.CreateConsumer(ctx, d.log.Stream(), jetstream.ConsumerConfig{
		Description:       "Nimbus dead-letter listing",
		FilterSubjects:    subjects,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       from,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: time.Minute, // cleaned up by the server if we die before deleting it
		MemoryStorage:     true,
		Replicas:          1,
	})
	if err != nil {
		return fmt.Errorf("read consumer: %w", err)
	}
	name := cons.CachedInfo().Name
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = d.js.DeleteConsumer(dctx, d.log.Stream(), name)
	}()
	for ctx.Err() == nil {
		// NoWait: the server answers at once with what it holds, so the
		// end of the matching entries ends the loop without waiting.
		batch, err := cons.FetchNoWait(256)
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			meta, err := m.Metadata()
			if err != nil {
				continue
			}
			if meta.Sequence.Stream > to || !fn(m) {
				for range batch.Messages() { // drain: the fetch goroutine returns
				}
				return nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("read: %w", err)
		}
		if n == 0 {
			return nil
		}
	}
	return ctx.Err()
}

// Replay sends the dead letters seqs of app back: each to the trigger that
// failed it (or, with opts.Topic, to that topic), as a new event with fresh
// attempts, then removes the dead letter. It returns one result per
// distinct sequence, in ascending order; one that fails does not stop the
// others.
//
// The replayed event is the original without the dead-letter extensions,
// plus ExtReplayOf. Its MsgID is derived from the dead letter's sequence
// and the destination, so replaying the same dead letter twice appends it
// once (within the duplicate window), while the original event's MsgID,
// maybe still in that window, does not swallow it.
func (d *Dispatcher) Replay(ctx context.Context, app string, seqs []uint64, opts ReplayOptions) []ReplayResult {
	seqs = slices.Clone(seqs)
	slices.Sort(seqs)
	seqs = slices.Compact(seqs)
	out := make([]ReplayResult, 0, len(seqs))
	consumers := map[string]error{} // consumer name -> nil if it takes replays
	for len(seqs) > 0 {
		n := min(len(seqs), replayBatch)
		out = append(out, d.replayBatch(ctx, app, seqs[:n], opts, consumers)...)
		seqs = seqs[n:]
	}
	return out
}

// ReplayAll replays every dead letter of app on topics (as in
// DeadLetterQuery) that exists when it is called, oldest first. Dead
// letters appended meanwhile, such as replayed events that failed again,
// are left for a later call.
func (d *Dispatcher) ReplayAll(ctx context.Context, app string, topics []string, opts ReplayOptions) ([]ReplayResult, error) {
	st, err := d.js.Stream(ctx, d.log.Stream())
	if err != nil {
		return nil, fmt.Errorf("replay dead letters of %s: %w", app, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("replay dead letters of %s: %w", app, err)
	}
	last := info.State.LastSeq
	var out []ReplayResult
	var after uint64
	for {
		page, err := d.DeadLetters(ctx, app, DeadLetterQuery{Topics: topics, After: after, Limit: MaxDeadLetterPage})
		if err != nil {
			return out, fmt.Errorf("replay dead letters of %s: %w", app, err)
		}
		var seqs []uint64
		for _, dl := range page.Letters {
			if dl.Seq <= last {
				seqs = append(seqs, dl.Seq)
			}
		}
		out = append(out, d.Replay(ctx, app, seqs, opts)...)
		if page.Next == 0 || page.Next >= last || ctx.Err() != nil {
			return out, ctx.Err()
		}
		after = page.Next
	}
}

// replayBatch replays up to replayBatch dead letters with one Append.
func (d *Dispatcher) replayBatch(ctx context.Context, app string, seqs []uint64, opts ReplayOptions, consumers map[string]error) []ReplayResult {
	res := make([]ReplayResult, len(seqs))
	var ents []Entry
	var idx []int // res index of each entry
	st, err := d.js.Stream(ctx, d.log.Stream())
	for i, seq := range seqs {
		r := &res[i]
		r.Seq = seq
		if err != nil {
			r.Err = err
			continue
		}
		ent, rerr := d.replayEntry(ctx, st, app, seq, opts, consumers, r)
		if rerr != nil {
			r.Err = rerr
			continue
		}
		ents = append(ents, ent)
		idx = append(idx, i)
	}
	for len(ents) > 0 {
		acks, err := d.log.Append(ctx, ents...)
		if ee, ok := errors.AsType[*EntryError](err); ok {
			// One entry is refused (too large for the log); the others go on.
			res[idx[ee.Index]].Err = fmt.Errorf("append: %w", ee.Err)
			ents = slices.Delete(ents, ee.Index, ee.Index+1)
			idx = slices.Delete(idx, ee.Index, ee.Index+1)
			continue
		}
		if err != nil {
			for _, i := range idx {
				res[i].Err = fmt.Errorf("append: %w", err)
			}
			break
		}
		for j, a := range acks {
			r := &res[idx[j]]
			r.NewSeq, r.Duplicate = a.Seq, a.Duplicate
			if err := removeEntry(ctx, st, r.Seq); err != nil {
				r.Err = fmt.Errorf("replayed as %d, but removing the dead letter failed (replaying it again is harmless): %w", a.Seq, err)
			}
		}
		break
	}
	return res
}

// replayEntry reads dead letter seq and builds its replay; r gets the
// trigger's names.
func (d *Dispatcher) replayEntry(ctx context.Context, st jetstream.Stream, app string, seq uint64, opts ReplayOptions, consumers map[string]error, r *ReplayResult) (Entry, error) {
	m, err := st.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Entry{}, fmt.Errorf("%w: no entry %d (already replayed, or expired)", ErrDeadLetterNotFound, seq)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("read dead letter %d: %w", seq, err)
	}
	dl, ok := d.readDeadLetter(app, m.Subject, m.Header, m.Data)
	if !ok {
		return Entry{}, fmt.Errorf("%w: entry %d is not a dead letter of app %s", ErrNotDeadLetter, seq, app)
	}
	r.Function, r.Trigger, r.Topic = dl.Function, dl.Trigger, dl.Topic
	if dl.Event == nil {
		return Entry{}, fmt.Errorf("%w: entry %d is not a CloudEvent (dead-lettered as it arrived: %s)", ErrNotReplayable, seq, dl.Error)
	}
	var subject string
	if opts.Topic != "" {
		if strings.Contains(opts.Topic, ".") || !validSubject(opts.Topic) {
			return Entry{}, fmt.Errorf("topic %q must be one subject token", opts.Topic)
		}
		subject = SubjectFor(d.log.prefix, app, opts.Topic)
	} else {
		name := consumerName(TriggerSpec{App: app, Function: dl.Function, ID: dl.Trigger, Topic: dl.Topic})
		subject = ReplaySubject(d.log.prefix, app, name)
		cerr, seen := consumers[name]
		if !seen {
			cerr = d.checkReplayConsumer(ctx, name, subject, dl)
			consumers[name] = cerr
		}
		if cerr != nil {
			return Entry{}, cerr
		}
	}
	e := dl.Event
	if e.Extensions == nil {
		e.Extensions = map[string]string{}
	}
	e.Extensions[ExtReplayOf] = strconv.FormatUint(seq, 10)
	id := sha256.Sum256(fmt.Appendf(nil, "replay\x00%d\x00%s", seq, subject))
	return Entry{Subject: subject, MsgID: hex.EncodeToString(id[:]), Data: e.AppendJSON(nil)}, nil
}

// checkReplayConsumer reports whether the trigger consumer name exists and
// reads its replay subject.
func (d *Dispatcher) checkReplayConsumer(ctx context.Context, name, subject string, dl DeadLetter) error {
	c, err := d.js.Consumer(ctx, d.log.Stream(), name)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return &TriggerGoneError{Function: dl.Function, Trigger: dl.Trigger, Topic: dl.Topic}
	}
	if err != nil {
		return fmt.Errorf("trigger %s/%s: consumer %s: %w", dl.Function, dl.Trigger, name, err)
	}
	if !slices.Contains(c.CachedInfo().Config.FilterSubjects, subject) {
		// A consumer made by an older Nimbus that no Sync has updated yet.
		return fmt.Errorf("trigger %s/%s: its consumer %s does not take replays yet; restart the server or redeploy the app so it is updated", dl.Function, dl.Trigger, name)
	}
	return nil
}

// removeEntry deletes entry seq; one already gone (a concurrent replay
// removed it) is not an error.
func removeEntry(ctx context.Context, st jetstream.Stream, seq uint64) error {
	err := st.DeleteMsg(ctx, seq)
	if err == nil {
		return nil
	}
	// The server's "sequence not found" reaches us only as text; ask for
	// the entry instead.
	if _, gerr := st.GetMsg(ctx, seq); errors.Is(gerr, jetstream.ErrMsgNotFound) {
		return nil
	}
	return err
}
