package workflow

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// Waiting for a topic event (the Go SDK's WaitForTopic).
//
// A topic wait is a signal wait whose signal the engine sends: its name
// is TopicSignalPrefix+<position>, unique to the wait, so the pairing,
// the journaled outcome and replay are the signals' (signals.go). Its
// start (EntryWaiting) records the spec with the topic's position then
// (Input: topic, filter, after), so the event it takes is the first one
// stored after the wait began that matches, whenever it is found. While
// the run waits, its record names the topic (Run.Topic) and the run is
// registered with a follower of the topic: one reader per (app, topic)
// with waiters, from the earliest position any of them needs, which
// journals the first matching event of each waiter as its signal. At
// start the engine activates the runs whose record waits on a topic; each
// reaches its wait again and registers from its recorded position, so
// events published while the node was down are found.

// TopicSignalPrefix starts the name of the signal that carries a topic
// event to the wait at a position.
const TopicSignalPrefix = wire.TopicSignalPrefix

// Topics is what topic waits read; the server implements it over the
// event log (the workflow package does not import it).
type Topics interface {
	// Position is the position of app's topic now: the events stored
	// later have greater sequences. An undeclared topic is an error
	// wrapping ErrInvalid.
	Position(ctx context.Context, app, topic string) (uint64, error)
	// Follow calls fn with every event of app's topic stored after the
	// sequence after, in order (its sequence and the event in the
	// CloudEvents JSON format), waiting for new ones, until fn returns
	// false (then nil) or ctx ends.
	Follow(ctx context.Context, app, topic string, after uint64, fn func(seq uint64, event []byte) bool) error
}

// topicWait is a topic wait's spec, as the guest sends it (topic and
// filter) and as its start records it (with After).
type topicWait struct {
	Topic  string                     `json:"topic"`
	Filter map[string]json.RawMessage `json:"filter,omitempty"`
	After  uint64                     `json:"after,omitempty"`
}

// Limits of a topic wait's filter.
const maxFilterKeys = 16

var attrNameRe = regexp.MustCompile(`^[a-z0-9]{1,20}$`)

// ParseTopicWait checks a topic wait's spec (JSON: {"topic": ...,
// "filter": {...}}) and returns its topic; errors wrap ErrInvalid.
func ParseTopicWait(spec []byte) (string, error) {
	tw, err := parseTopicWait(spec)
	if err != nil {
		return "", err
	}
	return tw.Topic, nil
}

func parseTopicWait(spec []byte) (*topicWait, error) {
	var tw topicWait
	if err := json.Unmarshal(spec, &tw); err != nil {
		return nil, fmt.Errorf("%w: topic wait: %w", ErrInvalid, err)
	}
	if !model.ValidName(tw.Topic) {
		return nil, fmt.Errorf("%w: topic wait: %q is not a topic name", ErrInvalid, tw.Topic)
	}
	if len(tw.Filter) > maxFilterKeys {
		return nil, fmt.Errorf("%w: topic wait: a filter has at most %d keys", ErrInvalid, maxFilterKeys)
	}
	for k, v := range tw.Filter {
		field, isData := strings.CutPrefix(k, "data.")
		if (isData && field == "") || (!isData && (!attrNameRe.MatchString(k) || k == "data")) {
			return nil, fmt.Errorf("%w: topic wait: filter key %q: use a CloudEvents attribute (type, source, subject, id, an extension) or data.<field>", ErrInvalid, k)
		}
		if !json.Valid(v) {
			return nil, fmt.Errorf("%w: topic wait: filter value of %q is not JSON", ErrInvalid, k)
		}
	}
	tw.After = 0 // the engine's to set
	return &tw, nil
}

// WaitTopic is the wait at pos for the first event of a topic matching a
// filter (spec: see ParseTopicWait), stored after the wait began: as
// WaitSignal, with the event (CloudEvents JSON) as the payload.
func (e *Engine) WaitTopic(ctx context.Context, app, invocation string, pos int, spec []byte, timeout time.Duration) (WaitAnswer, error) {
	tw, err := parseTopicWait(spec)
	if err != nil {
		return WaitAnswer{}, err
	}
	return e.wait(ctx, app, invocation, pos, TopicSignalPrefix+strconv.Itoa(pos), timeout, tw)
}

// topicStart is the recorded spec of a topic wait that begins now: with
// the topic's position.
func (e *Engine) topicStart(ctx context.Context, app string, tw *topicWait) (json.RawMessage, error) {
	if e.opts.Topics == nil {
		return nil, fmt.Errorf("%w: topic waits are not available on this node", ErrInvalid)
	}
	after, err := e.opts.Topics.Position(ctx, app, tw.Topic)
	if err != nil {
		return nil, err
	}
	cp := *tw
	cp.After = after
	return json.Marshal(cp)
}

// followers are the readers of topics with waiting runs.
type followers struct {
	mu sync.Mutex
	by map[topicKey]*follower
}

type topicKey struct{ app, topic string }

// follower reads one topic for its waiters, from after pos.
type follower struct {
	cancel  context.CancelFunc
	pos     uint64                  // events up to pos were seen
	waiters map[string]*topicWaiter // run id -> its wait
}

type topicWaiter struct {
	id, name string
	after    uint64
	filter   map[string]json.RawMessage
}

// watchTopic registers the run id, waiting at the signal name with the
// recorded spec, with its topic's follower.
func (e *Engine) watchTopic(app, id, name string, spec json.RawMessage) {
	var tw topicWait
	if err := json.Unmarshal(spec, &tw); err != nil || e.opts.Topics == nil {
		e.logger.Warn("workflow topic wait not watched", "app", app, "run", id, "error", err)
		return
	}
	w := &topicWaiter{id: id, name: name, after: tw.After, filter: tw.Filter}
	k := topicKey{app, tw.Topic}
	t := &e.follows
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.by == nil {
		t.by = map[topicKey]*follower{}
	}
	f := t.by[k]
	if f != nil && w.after >= f.pos {
		f.waiters[id] = w
		return
	}
	// No follower, or one past this wait's position: (re)start one from
	// the earliest position a waiter needs.
	waiters := map[string]*topicWaiter{}
	from := w.after
	if f != nil {
		f.cancel()
		waiters = f.waiters
		for _, o := range waiters {
			from = min(from, o.after)
		}
	}
	waiters[id] = w
	e.mu.Lock()
	closed := e.closed
	if !closed {
		e.wg.Add(1)
	}
	e.mu.Unlock()
	if closed {
		return
	}
	ctx, cancel := context.WithCancel(e.ctx)
	nf := &follower{cancel: cancel, pos: from, waiters: waiters}
	t.by[k] = nf
	go e.follow(ctx, k, nf)
}

// follow runs f until its context ends or it has no waiters left.
func (e *Engine) follow(ctx context.Context, k topicKey, f *follower) {
	defer e.wg.Done()
	for ctx.Err() == nil {
		e.follows.mu.Lock()
		from := f.pos
		e.follows.mu.Unlock()
		err := e.opts.Topics.Follow(ctx, k.app, k.topic, from, func(seq uint64, ev []byte) bool {
			return e.topicEvent(k, f, seq, ev)
		})
		if err == nil || ctx.Err() != nil {
			return
		}
		e.logger.Warn("workflow topic follower failed; it reads again", "app", k.app, "topic", k.topic, "error", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// topicEvent gives the event at seq to every waiter of f it matches, and
// reports whether f goes on.
func (e *Engine) topicEvent(k topicKey, f *follower, seq uint64, ev []byte) bool {
	v := &eventView{}
	if err := json.Unmarshal(ev, &v.attrs); err != nil {
		v.attrs = nil // matches no filter with a key
	}
	t := &e.follows
	t.mu.Lock()
	if t.by[k] != f {
		t.mu.Unlock()
		return false // replaced
	}
	f.pos = max(f.pos, seq)
	var hits []*topicWaiter
	for id, w := range f.waiters {
		if seq > w.after && v.match(w.filter) {
			hits = append(hits, w)
			delete(f.waiters, id)
		}
	}
	more := len(f.waiters) > 0
	if !more {
		f.cancel()
		delete(t.by, k)
	}
	t.mu.Unlock()
	for _, w := range hits {
		// The event is the run's signal: journaled with it, so a replay
		// returns it. A run that ended meanwhile takes none.
		_, err := e.signal(e.ctx, k.app, w.id, w.name, ev)
		if err != nil && !errors.Is(err, ErrRunFinished) && !errors.Is(err, ErrRunNotFound) && e.ctx.Err() == nil {
			e.logger.Warn("workflow topic event not delivered; the run gets it after a restart", "app", k.app, "run", w.id, "topic", k.topic, "error", err)
		}
	}
	return more
}

// stopTopics stops the followers of app (the app was deleted).
func (e *Engine) stopTopics(app string) {
	t := &e.follows
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, f := range t.by {
		if k.app == app {
			f.cancel()
			delete(t.by, k)
		}
	}
}

// eventView is an event decoded for matching: its top-level members, and
// its data's, decoded once per event whatever the number of waiters.
type eventView struct {
	attrs  map[string]json.RawMessage
	data   map[string]json.RawMessage
	parsed bool
}

// match reports whether the event passes a filter: every key equal, as
// JSON.
func (v *eventView) match(filter map[string]json.RawMessage) bool {
	for k, want := range filter {
		var got json.RawMessage
		if field, ok := strings.CutPrefix(k, "data."); ok {
			if !v.parsed {
				json.Unmarshal(v.attrs["data"], &v.data) // not an object: no field matches
				v.parsed = true
			}
			got = v.data[field]
		} else {
			got = v.attrs[k]
		}
		if got == nil || !jsonEqual(got, want) {
			return false
		}
	}
	return true
}

func jsonEqual(a, b json.RawMessage) bool {
	if bytes.Equal(a, b) {
		return true // the common case: the same string, as written
	}
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}
