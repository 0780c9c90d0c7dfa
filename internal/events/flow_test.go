package events_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/events"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/throttle"
)

// rateLimited refuses the first n calls per event id with a rate limit,
// the way the scheduler's flow limiter does, then passes calls through.
type rateLimited struct {
	inner events.Invoker
	n     int
	mu    sync.Mutex
	seen  map[string]int
}

func (r *rateLimited) Invoke(ctx context.Context, app, fn string, req *runtime.Request) (*runtime.Response, error) {
	id := req.Header.Get("Ce-Id")
	r.mu.Lock()
	r.seen[id]++
	refused := r.seen[id] <= r.n
	r.mu.Unlock()
	if refused {
		return nil, &throttle.LimitError{Limit: throttle.LimitRate, Key: id, RetryAfter: 5 * time.Millisecond}
	}
	return r.inner.Invoke(ctx, app, fn, req)
}

// TestFlowLimitIsNotAnAttempt: a delivery a rate limit refuses waits and
// runs later; it is not counted as a failed attempt, so an event refused
// more often than max_attempts is still delivered, not dead-lettered.
func TestFlowLimitIsNotAnAttempt(t *testing.T) {
	t.Parallel()
	for _, ordered := range []bool{false, true} {
		t.Run(fmt.Sprintf("ordered=%v", ordered), func(t *testing.T) {
			e := newEnv(t, events.DispatcherOptions{}, "a")
			e.close()
			e.open(func(inv events.Invoker) events.Invoker {
				return &rateLimited{inner: inv, n: 4, seen: map[string]int{}}
			})
			s := spec("a", "0", "orders")
			s.MaxAttempts = 2
			if ordered {
				s.OrderingKey = "event.subject"
			}
			e.sync(s)
			e.publish("orders", event("x", "ok", "k"), event("y", "ok", "k"))
			e.waitSucceeded([]string{"a/x", "a/y"})
			for _, c := range e.rec.snapshot() {
				if c.attempt != 1 {
					t.Fatalf("event %s ran as attempt %d: a flow refusal was counted as an attempt", c.id, c.attempt)
				}
			}
			if st := e.disp.Stats(); st.DeadLettered != 0 || st.Failed != 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}
