package events

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// idIndex is the Log's duplicate check by entry id (MsgID) over the
// duplicate window. The stream's own check (Nats-Msg-Id) sees one id per
// message, and a pack holds many, so the Log keeps every id it stored
// within the window, packed or not, with the entry's position; Append
// answers a known id as a Duplicate without sending it. The stream's check
// still runs on every single entry and on whole packs (packMsgID), which
// also catches a batch sent again through another node of a cluster.
//
// At open the index is read back from the stream's last window
// (loadWindow), so a restart keeps the guarantee. It is per node: an id
// sent inside two different batches through two nodes within the window
// is stored twice (docs/events.md says so).
//
// Concurrent Appends of one id: the first reserves it (busy) and the
// others wait for its outcome before they decide, so one id is never sent
// by two calls at once. A call reserves all of its new ids at once or
// none (it waits, holding nothing, when one is busy), so two calls never
// wait for each other.
type idIndex struct {
	window time.Duration

	mu    sync.Mutex
	ids   map[idKey]uint64    // stored ids -> position
	busy  map[idKey]*idFlight // ids being sent, -> the Append sending them
	queue []idAge             // stored ids in the order they were stored; live from head
	head  int
}

// idKey is an id as the index keeps it: the 32 bytes an event's id (the
// hex of a sha256, IdempotencyKey) stands for, or the sha256 of any other
// id. Fixed size and free of pointers: with its place in the expiry
// queue, an id costs ~110 bytes (measured with 200k) and nothing to the
// garbage collector's scans.
type idKey [32]byte

func keyOf(id string) idKey {
	var k idKey
	if len(id) == 64 && lowerHex(id) {
		hex.Decode(k[:], []byte(id))
		return k // lowercase hex only: one id, one key
	}
	// Any other id: hashed with a prefix no hex-decoded key can equal
	// by construction (a collision would need sha256's).
	return sha256.Sum256([]byte("id\x00" + id))
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// idFlight is one Append's reservation; done closes when it settles.
type idFlight struct{ done chan struct{} }

type idAge struct {
	key idKey
	at  int64 // unix nanoseconds
}

func newIDIndex(window time.Duration) *idIndex {
	return &idIndex{window: window, ids: map[idKey]uint64{}, busy: map[idKey]*idFlight{}}
}

// entry kinds of an appendPlan.
const (
	planNew       = iota // to be sent
	planStored           // stored earlier: pos
	planSameBatch        // a copy of an earlier entry of the same call: of
)

// appendPlan says what Append does with each entry.
type appendPlan struct {
	kind   []uint8
	pos    []uint64 // planStored: the stored copy's position
	of     []int    // planSameBatch: the index of the first copy
	flight *idFlight
	owned  []idKey // ids reserved by this call
}

// reserve classifies entries into plan and reserves their new ids. It
// returns the flight of another call to wait for, having reserved nothing,
// when one of the ids is being sent by it.
func (x *idIndex) reserve(now time.Time, entries []Entry, p *appendPlan) *idFlight {
	n := len(entries)
	p.kind, p.pos, p.of = make([]uint8, n), make([]uint64, n), make([]int, n)
	p.owned = p.owned[:0]
	p.flight = &idFlight{done: make(chan struct{})}
	keys := make([]idKey, n)
	for i := range entries {
		if id := entries[i].MsgID; id != "" {
			keys[i] = keyOf(id)
		}
	}
	first := map[idKey]int{}
	x.mu.Lock()
	defer x.mu.Unlock()
	x.prune(now)
	for i := range entries {
		if entries[i].MsgID == "" {
			continue
		}
		k := keys[i]
		if j, ok := first[k]; ok {
			p.kind[i], p.of[i] = planSameBatch, j
			continue
		}
		if f := x.busy[k]; f != nil {
			for _, o := range p.owned {
				delete(x.busy, o)
			}
			p.owned = p.owned[:0]
			return f
		}
		if pos, ok := x.ids[k]; ok {
			p.kind[i], p.pos[i] = planStored, pos
			continue
		}
		first[k] = i
		x.busy[k] = p.flight
		p.owned = append(p.owned, k)
	}
	return nil
}

// settle ends p's reservation: stored maps each id p sent to its
// position (nil when nothing was stored, or the outcome is unknown: the
// ids are forgotten, and a retry of the same entries is sent again and
// caught by the stream's own check).
func (x *idIndex) settle(now time.Time, p *appendPlan, stored map[string]uint64) {
	byKey := make(map[idKey]uint64, len(stored))
	for id, pos := range stored {
		byKey[keyOf(id)] = pos
	}
	x.mu.Lock()
	at := now.UnixNano()
	for _, k := range p.owned {
		delete(x.busy, k)
		if pos, ok := byKey[k]; ok {
			x.ids[k] = pos
			x.queue = append(x.queue, idAge{key: k, at: at})
		}
	}
	x.mu.Unlock()
	close(p.flight.done)
}

// add records an id read back from the stream (loadWindow).
func (x *idIndex) add(id string, pos uint64, at time.Time) {
	k := keyOf(id)
	x.mu.Lock()
	defer x.mu.Unlock()
	if _, ok := x.ids[k]; ok {
		return
	}
	x.ids[k] = pos
	x.queue = append(x.queue, idAge{key: k, at: at.UnixNano()})
}

// count returns the ids stored within the window before now (the ids the
// Log holds in memory: Log.WindowEvents).
func (x *idIndex) count(now time.Time) int {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.prune(now)
	return len(x.ids)
}

// retryAfter returns how long after now at least need ids have left the
// window.
func (x *idIndex) retryAfter(now time.Time, need int) time.Duration {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.prune(now)
	i := x.head + max(need, 1) - 1
	if i >= len(x.queue) {
		return x.window
	}
	return max(time.Duration(x.queue[i].at+int64(x.window)-now.UnixNano()), 0)
}

// prune forgets the ids stored a window or more before now. x.mu is held.
func (x *idIndex) prune(now time.Time) {
	limit := now.Add(-x.window).UnixNano()
	for x.head < len(x.queue) && x.queue[x.head].at <= limit {
		delete(x.ids, x.queue[x.head].key)
		x.head++
	}
	if x.head > 1024 && x.head > len(x.queue)/2 {
		x.queue = append(x.queue[:0], x.queue[x.head:]...)
		x.head = 0
	}
}

// loadWindow reads into x the ids of the entries the stream stored within
// the last window, up to the last message at the time of the call, and
// returns how many messages and ids it read.
func (x *idIndex) loadWindow(ctx context.Context, js jetstream.JetStream, stream string, now time.Time) (msgs, ids int, err error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, 0, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, 0, err
	}
	last := info.State.LastSeq
	if info.State.Msgs == 0 || info.State.LastTime.Before(now.Add(-x.window)) {
		return 0, 0, nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartTimePolicy,
		OptStartTime:  new(now.Add(-x.window)),
	})
	if err != nil {
		return 0, 0, err
	}
	it, err := cons.Messages()
	if err != nil {
		return 0, 0, err
	}
	defer it.Stop()
	for {
		m, err := it.Next(jetstream.NextMaxWait(5 * time.Second))
		if errors.Is(err, nats.ErrTimeout) {
			return msgs, ids, nil // the last message went (age or limits) before it was read
		}
		if err != nil {
			return msgs, ids, err
		}
		meta, err := m.Metadata()
		if err != nil {
			return msgs, ids, err
		}
		msgs++
		seq := meta.Sequence.Stream
		if packCount(m.Headers()) != 0 {
			err := unpack(m.Data(), func(i int, id string, _ []byte) bool {
				if id != "" {
					x.add(id, Position(seq, i), meta.Timestamp)
					ids++
				}
				return true
			})
			if err != nil {
				return msgs, ids, fmt.Errorf("message %d: %w", seq, err)
			}
		} else if id := m.Headers().Get(nats.MsgIdHdr); id != "" {
			x.add(id, Position(seq, 0), meta.Timestamp)
			ids++
		}
		if seq >= last {
			return msgs, ids, nil
		}
	}
}
