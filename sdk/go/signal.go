package nimbus

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// WaitForEvent waits durably for the next signal called name sent to the
// run (`nimbus wf signal APP RUN NAME -d JSON`, or POST
// /api/v1/apps/{app}/runs/{id}/signals/{name}) and returns its payload
// decoded into T. Signals are buffered: one sent before the run waits is
// kept, and successive waits for a name get its signals in the order they
// arrived, each once. timeout counts from the first time the run reaches
// this wait (a replay does not restart it); after it the wait returns an
// error matching ErrTimeout. 0 waits without a deadline. The run holds no
// instance while it waits, and a restart does not lose it.
func WaitForEvent[T any](wf *Workflow, name string, timeout time.Duration) (T, error) {
	var zero T
	if wf.inStep {
		panic("nimbus: WaitForEvent " + name + " called inside a step; wait between steps")
	}
	pos := wf.pos
	buf := make([]byte, 4096)
	var out [wire.WaitOutSize]byte
	ms := int64(0)
	if timeout > 0 {
		ms = max(timeout.Milliseconds(), 1)
	}
	var code int32
	for {
		code = hostWait(pos, name, ms, buf, &out)
		if code != wire.CodeTooLarge {
			break
		}
		buf = make([]byte, binary.LittleEndian.Uint32(out[0:4]))
	}
	if code != wire.CodeOK {
		wf.hostUnwind(pos, "wf_wait", code)
	}
	wf.pos++
	if binary.LittleEndian.Uint32(out[4:8])&wire.WaitTimedOut != 0 {
		return zero, fmt.Errorf("nimbus: wait for signal %q: %w after %s", name, ErrTimeout, timeout)
	}
	var v T
	if err := json.Unmarshal(buf[:binary.LittleEndian.Uint32(out[0:4])], &v); err != nil {
		return zero, fmt.Errorf("nimbus: signal %q: payload does not decode into %T: %w", name, v, err)
	}
	return v, nil
}
