package events

import "context"

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
