// Package workflow is the durable workflow engine: it starts runs of an
// app's workflows (functions with kind: workflow), records every step's
// outcome in the run's journal before the code moves on, sleeps runs on
// durable timers, and resumes every unfinished run after a restart or a
// crash by replaying its journal.
//
// # Execution
//
// A run is driven by activations: one invocation of the workflow function
// through the scheduler (so pools, flow control and timeouts apply), with
// the run id in the wire.HeaderRun header and the input as the body. The
// guest runs its workflow function from the start; each durable operation
// (a step, a sleep) is a host call at a position. The engine answers from
// the journal what is recorded (a completed step is never run again), and
// records new outcomes in the app's log before the call returns: the
// changes of every run waiting at that moment are one message, one commit
// and one fsync (pack.go), and the runs' journals and records are written
// from the log in the background (materialize.go). A
// sleep or retry backoff longer than Options.ShortWait suspends the run:
// the guest unwinds, the run's record says sleeping until WakeAt, and only
// a timer entry stays in memory. A code that reaches a position with
// another step than the journal recorded fails the run with a
// *NonDeterminismError.
//
// # Control
//
// Signals (signals.go) are journaled with the run and buffered until a
// wait for their name takes them, in order, each once; a waiting run
// holds no instance. Cancel, Pause and Terminate (control.go, pause.go,
// terminate.go) journal the request and change the run's record as a
// compare-and-swap (on the record's version, checked by the engine, the
// log's only writer); a cancellation or a pause takes effect at the run's
// first operation that is not a recorded outcome (the gate), where a
// cancellation is journaled as a cut so a replay meets it at the same
// position; the SDK then runs the compensations (steps named
// CompensationPrefix+name), which pass the gate. A cancelled or
// terminated run's children go with it unless detached (children.go).
//
// # Guarantees
//
//   - A step whose completion was acknowledged to the guest is on disk
//     and is never run again; a step may run more than once only when the
//     node died before its completion was committed (use its idempotency
//     key for external effects).
//   - A run whose start was acknowledged is on disk and will finish: at
//     start, Provision resumes running runs at once and re-arms the timers
//     of sleeping ones from their records.
//   - A sleep never ends early: a timer that fires early (a restart, a
//     clock step) suspends the run again until its recorded time.
//   - A run id is an idempotency key: starting it twice makes one run.
//
// # Where it sits
//
// The engine is a server component (after the scheduler): api and the
// gateway's routes start runs and send signals and control requests; the
// capability service and the wasm host functions call StepBegin, StepEnd,
// Sleep and WaitSignal. Storage: see journal.go.
package workflow
