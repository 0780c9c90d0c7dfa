package throttle_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/nimbus-dev/nimbus/internal/throttle"
	"github.com/nimbus-dev/nimbus/internal/throttle/throttletest"
)

// One limiter, keyed by tenant: each tenant may run one invocation at a
// time and start two per minute.
func Example() {
	clock := throttletest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	lim, err := throttle.NewLimiter(throttle.Policy{KeyConcurrency: 1, Rate: 2, Per: time.Minute}, clock)
	if err != nil {
		panic(err)
	}
	defer lim.Close()
	keyOf, _ := throttle.ParseKey("header.x-tenant")
	h := http.Header{"X-Tenant": {"acme"}}

	for i := 0; i < 3; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		permit, err := lim.Acquire(ctx, keyOf.FromRequest(h, ""), throttle.DefaultPriority)
		cancel()
		var le *throttle.LimitError
		switch {
		case errors.As(err, &le):
			// RetryAfter says when a start could happen: the edge sends
			// it as Retry-After, in whole seconds rounded up.
			fmt.Println(throttle.Reason(err), "retry after", (le.RetryAfter + time.Second - 1).Truncate(time.Second))
		case err != nil:
			fmt.Println(err)
		default:
			fmt.Println("run for", keyOf.FromRequest(h, ""))
			permit.Release()
		}
	}
	// Output:
	// run for acme
	// run for acme
	// flow_rate retry after 1m1s
}
