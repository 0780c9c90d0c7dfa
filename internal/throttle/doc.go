// Package throttle is flow control for function invocations: one mechanism,
// applied the same way whether an invocation comes from an HTTP request,
// an event trigger, a cron firing or the async queue.
//
// # Concept
//
// A function's manifest `flow:` block (model.Flow) becomes a Policy, and
// the scheduler keeps one Limiter per function. Every invocation, whatever
// its source, asks the Limiter for a Permit before it takes an instance,
// and releases it when it ends:
//
//	permit, err := lim.Acquire(ctx, key, priority)
//	if err != nil { ... }           // superseded, limited, or closed
//	defer permit.Release()
//
// The key groups invocations for the per-key controls. It comes from a
// KeySource parsed from the manifest's `key:` ("event.subject",
// "event.<extension>", "header.X-Tenant", "query.name"): FromRequest for
// HTTP and async invocations, FromEvent for events, cron firings and bucket
// changes. An invocation without the value has the key "", which is a key
// like any other; with no key configured every invocation has "", so the
// per-key controls apply to the function as a whole.
//
// # Controls and guarantees
//
//   - MaxConcurrency: never more than this many Permits of the function are
//     held at once.
//   - KeyConcurrency: never more than this many per key.
//   - Rate per Per: never more than Rate starts of a key in any window of
//     length Per (a sliding window: a burst of Rate starts at once, and the
//     next waits until the window has moved past the oldest). Starts are
//     counted in 64 slots per period, each start from the end of its slot,
//     so the bound is exact but a start may come up to Per/64 later than
//     strictly needed; memory is at most 65 slots per key, whatever Rate.
//     A token bucket was rejected: it lets up to twice Rate start within
//     one period.
//   - Debounce: per key, only the last request of a burst runs, once the key
//     has been quiet for Debounce since the burst's last arrival; each
//     earlier request gets ErrSuperseded as soon as a later one arrives. The
//     survivor then queues for the other limits like any request; requests
//     arriving after the quiet period start a new burst. A steady stream
//     with gaps shorter than Debounce never runs (there is no maximum wait
//     yet).
//   - Priority, 0 (lowest) to 9 (highest), per invocation: when a slot
//     frees, the highest priority waiter goes first; equal priorities go in
//     arrival order within a key and round robin across keys, so a key with
//     a long queue cannot starve a key that arrived later. Priorities order
//     the waiters of one Limiter (one function).
//
// Waiting costs no goroutine besides the caller's own: a waiter blocks on a
// channel that the releasing goroutine (or the Limiter's single timer, for
// rate and debounce) signals under the Limiter's lock. A waiter whose
// context ends is removed at once, and a Permit granted in the same instant
// is handed back, rate slot included. Key state is dropped as soon as a key
// is idle (nothing in flight, waiting or pending) and, with a rate, its
// window is empty; the key map is rebuilt when it shrinks to a quarter of
// its peak, so a million passing keys do not pin memory. A zero Policy
// costs a branch (~4 ns) and no allocation per invocation; a Limiter with
// limits costs a lock round trip (~40-170 ns uncontended) and allocates
// only when the caller has to wait.
//
// # Waiting or refusing
//
// Acquire waits as long as ctx allows; callers choose by the context they
// pass. When ctx has a deadline and the rate limit alone rules out starting
// before it, Acquire refuses at once with a *LimitError whose RetryAfter
// says when a start could happen (ErrRateLimited). A wait that ctx ends
// returns a *LimitError naming the limit that held it back, wrapping the
// context's cause.
//
// # Trigger sources
//
//   - HTTP: key from FromRequest (header, query, or the CloudEvents
//     binary-mode Ce-* header for event keys); ctx bounded by the function's
//     timeout. The errors are typed and named by Reason; the edge
//     (package apierror) answers them: ErrSuperseded -> 202 Accepted with
//     `Nimbus-Flow: superseded` (the request was accepted and folded into a
//     later one, which runs instead; it is not the client's error, so not
//     409); rate and key concurrency limits -> 429 with Retry-After;
//     max concurrency -> 503 with Retry-After.
//   - Events (topic and bucket triggers): key from FromEvent on the event's
//     attributes; wait rather than refuse. A superseded event is acked as
//     done: the last event of its burst carries the state. The consumer
//     waits (keeping the message alive with InProgress); only a *LimitError
//     with a RetryAfter longer than it wants to hold the message becomes a
//     NAK with that delay. JetStream counts that redelivery against
//     MaxDeliver, so the trigger must not treat it as a failed attempt in
//     its own accounting (or must size MaxDeliver for it).
//   - Cron: a firing is an event (FromEvent on its attributes; usually no
//     key), handled as events are.
//   - Async invocations: the stored request's headers and query give the
//     key (FromRequest), handled as events are: the queue consumer waits,
//     a superseded invocation is recorded as done with state "superseded".
//   - Workflow runs: not through the scheduler's Limiter. The workflow
//     engine keeps its own Limiters per workflow (package workflow,
//     flow.go): the key comes from the run's input, concurrency is held
//     per activation, rate is taken per run start, and a run waits without
//     a deadline (its start is durable already).
//
// Time comes from a Clock; tests inject flowtest.Clock and skip time.
//
// # Request bodies
//
// Before an invocation exists its body is flow controlled by bytes, at the
// edge (body.go): a Budget (node-wide and per app, never waits: a body
// that does not fit is refused with a *BudgetError) and a BodyRate (a
// grace plus a minimum rate; a body that falls behind fails with a
// *SlowBodyError). Package gateway applies them; package apierror answers
// them (503 body_budget with Retry-After, 408 body_too_slow).
package throttle
