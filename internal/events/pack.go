package events

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strconv"
	"sync/atomic"

	"github.com/nats-io/nats.go"
)

// Packed entries.
//
// One Append of several entries to a subject stores them as one message,
// a pack, instead of one message each: the server's cost is per message
// (a write, an index entry, a delivery, an ack), and a request of 100
// events then costs it one of each instead of 100. RATIONALE.md ("Events
// are packed") has the figures.
//
// A pack carries HeaderPack (its entry count) and its entries in its data,
// each as uvarint(len(msgID)) msgID uvarint(len(data)) data. Only entries
// without headers are packed. An entry's place in the stream is its
// position: the pack's stream sequence and the entry's index in it, as one
// number that keeps stream order (Position). A message that is not a pack
// holds one entry at index 0, so its position is Position(seq, 0).
const (
	// HeaderPack is set on a pack; its value is the number of entries.
	HeaderPack = "Nimbus-Pack"
	// MaxPackEntries is the most entries one pack holds: the index takes
	// the low positionIndexBits of a position.
	MaxPackEntries = 1000

	positionIndexBits = 10
	// packHeaderReserve is the room a pack leaves in the largest message
	// for its headers (HeaderPack, Nats-Msg-Id).
	packHeaderReserve = 256
)

// Position is an entry's place in the stream: the sequence of its message
// and its index in it (0 when the message is not a pack).
func Position(seq uint64, index int) uint64 { return seq<<positionIndexBits | uint64(index) }

// PositionSeq returns the stream sequence of a position.
func PositionSeq(pos uint64) uint64 { return pos >> positionIndexBits }

// PositionIndex returns the index in its message of a position.
func PositionIndex(pos uint64) int { return int(pos & (1<<positionIndexBits - 1)) }

// formatPosition writes an entry's place as people read it: the sequence
// of a message that is not a pack, "<seq>.<index>" for an entry of one.
func formatPosition(seq uint64, index int, packed bool) string {
	if !packed {
		return strconv.FormatUint(seq, 10)
	}
	return strconv.FormatUint(seq, 10) + "." + strconv.Itoa(index)
}

// packCount returns the entry count of a pack, 0 when h is not a pack's.
func packCount(h nats.Header) int {
	v := h.Get(HeaderPack)
	if v == "" {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return -1
	}
	return n
}

// packEntrySize is what e adds to a pack's data.
func packEntrySize(e *Entry) int {
	return uvarintLen(len(e.MsgID)) + len(e.MsgID) + uvarintLen(len(e.Data)) + len(e.Data)
}

func uvarintLen(n int) int {
	l := 1
	for ; n >= 0x80; n >>= 7 {
		l++
	}
	return l
}

// appendPackEntry appends e to a pack's data.
func appendPackEntry(b []byte, e *Entry) []byte {
	b = binary.AppendUvarint(b, uint64(len(e.MsgID)))
	b = append(b, e.MsgID...)
	b = binary.AppendUvarint(b, uint64(len(e.Data)))
	return append(b, e.Data...)
}

// errMalformedPack is a pack whose data does not hold its entries.
var errMalformedPack = errors.New("malformed event pack")

// unpack calls fn with each entry of a pack's data, in order, until fn
// returns false. The slices point into data.
func unpack(data []byte, fn func(index int, msgID string, data []byte) bool) error {
	for i := 0; len(data) > 0; i++ {
		if i >= MaxPackEntries {
			return errMalformedPack
		}
		n, k := binary.Uvarint(data)
		if k <= 0 || uint64(len(data)-k) < n {
			return errMalformedPack
		}
		id := string(data[k : k+int(n)])
		data = data[k+int(n):]
		n, k = binary.Uvarint(data)
		if k <= 0 || uint64(len(data)-k) < n {
			return errMalformedPack
		}
		ent := data[k : k+int(n) : k+int(n)]
		data = data[k+int(n):]
		if !fn(i, id, ent) {
			return nil
		}
	}
	return nil
}

// Entries calls fn with the position and data of each entry of a stored
// message (one for a message that is not a pack), in order, until fn
// returns false. An error means a pack whose data is malformed.
func Entries(seq uint64, h nats.Header, data []byte, fn func(pos uint64, data []byte) bool) error {
	n := packCount(h)
	if n == 0 {
		fn(Position(seq, 0), data)
		return nil
	}
	if n < 0 {
		return errMalformedPack
	}
	return unpack(data, func(i int, _ string, ent []byte) bool { return fn(Position(seq, i), ent) })
}

// packMsgID is the Nats-Msg-Id of a pack of entries that all have ids:
// a client that sends the same batch again (same ids, same order) through
// any node is caught by the stream's own duplicate check. "" when an entry
// has no id.
func packMsgID(entries []*Entry) string {
	h := sha256.New()
	h.Write([]byte("pack\x00"))
	for _, e := range entries {
		if e.MsgID == "" {
			return ""
		}
		h.Write([]byte(e.MsgID))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// perMessage is a moving average of the entries per message, over about
// the last `over` messages, safe for concurrent use. Consumers count
// messages; it turns their counts into events. The zero value has seen
// nothing yet.
type perMessage struct {
	x16 atomic.Int64 // the average times 16; 0: nothing seen yet
}

// observe folds a message of n entries into the average; the first message
// is the first estimate.
func (a *perMessage) observe(n int, over int64) {
	v := int64(max(n, 1)) * 16
	if a.x16.CompareAndSwap(0, v) {
		return
	}
	old := a.x16.Load()
	a.x16.Store(old + (v-old)/over)
}

// value returns the average (at least 1) and whether any message was seen.
func (a *perMessage) value() (float64, bool) {
	v := a.x16.Load()
	return max(1, float64(v)/16), v != 0
}
