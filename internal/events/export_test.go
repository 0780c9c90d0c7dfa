package events

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go/jetstream"
)

// ConsumerNameForTest exposes consumerName to the external tests.
var ConsumerNameForTest = consumerName

// ReplayEntryForTest builds the replay entry of dead letter seq of app
// (to its trigger) without appending it: a test appends it itself to play
// a replay that crashed between its append and the removal of the dead
// letter.
func (d *Dispatcher) ReplayEntryForTest(ctx context.Context, app string, seq uint64) (Entry, error) {
	st, err := d.js.Stream(ctx, d.log.Stream())
	if err != nil {
		return Entry{}, err
	}
	var r ReplayResult
	return d.replayEntry(ctx, st, app, seq, ReplayOptions{}, map[string]error{}, &r)
}

// RecordedDeliveries counts the delivery records in every pack of
// RecordsStream.
func RecordedDeliveries(ctx context.Context, js jetstream.JetStream) (int, error) {
	st, err := js.Stream(ctx, RecordsStream)
	if err != nil {
		return 0, err
	}
	n := 0
	for seq := uint64(1); ; {
		m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(RecordsSubjectPrefix+">"))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return n, nil
		}
		if err != nil {
			return 0, err
		}
		p, err := decodePack(m.Data)
		if err != nil {
			return 0, err
		}
		n += len(p.seqs)
		seq = m.Sequence + 1
	}
}

// WorkersStarted counts the delivery goroutines d started.
func (d *Dispatcher) WorkersStarted() uint64 { return d.workersStarted.Load() }
