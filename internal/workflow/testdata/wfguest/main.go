// Command wfguest is the workflow of the engine's tests: Steps steps,
// each applying its idempotency key once to the "ledger" bucket (create
// if absent) and counting its executions in the "execs" bucket, with an
// optional durable sleep after the first step (and a count of the
// activations that get past it), and an optional gate that fails a step
// for good until the test opens it. The steps make their writes at once
// (nimbus.ImmediateEffects): counting executions and a compare-and-swap
// need it. Step names start with
// $STEP_PREFIX, so a redeploy with another prefix breaks the journal of
// runs in flight (non-determinism).
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	nimbus "github.com/nimbus-dev/nimbus/sdk/go"
)

// In is a run's input.
type In struct {
	Steps   int   `json:"steps"`
	SleepMS int64 `json:"sleep_ms"`
	// FailTimes makes each step fail that many times before it succeeds.
	FailTimes int `json:"fail_times"`
	// StepMS makes each step take that long (it holds its instance).
	StepMS int64 `json:"step_ms"`
	// Plain makes steps return at once, touching nothing (the bench).
	Plain bool `json:"plain"`
	// CountWakes makes every activation that gets past the sleep append
	// its wall-clock time (Unix ns) to "<run>/woke" in execs: the
	// wake-ups of the run, outside any step.
	CountWakes bool `json:"count_wakes"`
	// GateAt makes step GateAt (from 0; -1 none) fail for good until the
	// key "gate" is in the execs bucket (the retry tests).
	GateAt *int `json:"gate_at"`
	// WaitFor makes the run wait, after its first step (and sleep), for
	// a signal of that name (the versioning tests: a run held across a
	// deploy and a restart, woken when the test says).
	WaitFor string `json:"wait_for"`
	// WaitTopic makes the run wait, after its first step, for the first
	// event of that topic matching Filter (within TopicTimeoutMS, 0
	// none), before the sleep; the event is in the result.
	WaitTopic      string        `json:"wait_topic"`
	Filter         nimbus.Filter `json:"filter"`
	TopicTimeoutMS int64         `json:"topic_timeout_ms"`
	// Log makes the run write a line outside its steps (stdout), and each
	// step attempt one line to stdout, stderr and the log (the log
	// tagging tests).
	Log bool `json:"log"`
}

// Out is a run's result.
type Out struct {
	// Revs are the ledger revisions of the steps' keys, as journaled.
	Revs []uint64 `json:"revs"`
	UUID string   `json:"uuid"`
	// Slept is how long the sleep lasted, measured with journaled times.
	SleptMS int64 `json:"slept_ms"`
	// Event is the topic event the run waited for (WaitTopic).
	Event *nimbus.TopicEvent[json.RawMessage] `json:"event,omitempty"`
}

var ledger, execs = nimbus.Bucket("ledger"), nimbus.Bucket("execs")

// count adds one to key in execs (compare-and-swap loop) and returns the
// new count.
func count(key string) int {
	for {
		v, rev, err := execs.Get(key)
		if err != nil && !errors.Is(err, nimbus.ErrNotFound) {
			panic(err)
		}
		n, _ := strconv.Atoi(string(v))
		n++
		if _, err := execs.Put(key, []byte(strconv.Itoa(n)), nimbus.IfRevision(rev)); err == nil {
			return n
		} else if !errors.Is(err, nimbus.ErrRevisionMismatch) {
			panic(err)
		}
	}
}

// appendWake appends the time now to key in execs (compare-and-swap loop).
func appendWake(key string) {
	for {
		v, rev, err := execs.Get(key)
		if err != nil && !errors.Is(err, nimbus.ErrNotFound) {
			panic(err)
		}
		if len(v) > 0 {
			v = append(v, ',')
		}
		v = strconv.AppendInt(v, time.Now().UnixNano(), 10)
		if _, err := execs.Put(key, v, nimbus.IfRevision(rev)); err == nil {
			return
		} else if !errors.Is(err, nimbus.ErrRevisionMismatch) {
			panic(err)
		}
	}
}

// apply writes key to the ledger once: a second attempt finds it there.
func apply(key string) (uint64, error) {
	rev, err := ledger.Put(key, []byte("1"), nimbus.IfRevision(0))
	if errors.Is(err, nimbus.ErrRevisionMismatch) {
		_, rev, err = ledger.Get(key)
	}
	return rev, err
}

func run(wf *nimbus.Workflow, in In) (Out, error) {
	prefix := os.Getenv("STEP_PREFIX")
	var out Out
	opts := []nimbus.StepOption{nimbus.Retry{MaxAttempts: in.FailTimes + 1, Backoff: 10 * time.Millisecond}}
	if !in.Plain {
		// The steps count their executions and write the ledger with a
		// compare-and-swap: their writes must be made at once. Plain
		// steps keep the default, as a user's would.
		opts = append(opts, nimbus.ImmediateEffects())
	}
	if in.Log {
		fmt.Println("body: outside steps")
	}
	for i := range in.Steps {
		rev, err := nimbus.Step(wf, prefix+"s"+strconv.Itoa(i), func() (uint64, error) {
			if in.Plain {
				return uint64(i), nil
			}
			key := wf.IdempotencyKey()
			if in.Log {
				fmt.Println("step", i, "stdout")
				fmt.Fprintln(os.Stderr, "step", i, "stderr")
				nimbus.Logf(nimbus.LevelInfo, "step %d log", i)
			}
			time.Sleep(time.Duration(in.StepMS) * time.Millisecond)
			if in.GateAt != nil && *in.GateAt == i {
				count(key)
				if _, _, err := execs.Get("gate"); err != nil {
					return 0, nimbus.NonRetryable(errors.New("the gate is closed"))
				}
				return apply(key)
			}
			if n := count(key); n <= in.FailTimes {
				return 0, errors.New("failing on purpose, execution " + strconv.Itoa(n))
			}
			return apply(key)
		}, opts...)
		if err != nil {
			return out, err
		}
		out.Revs = append(out.Revs, rev)
		if i == 0 && in.WaitTopic != "" {
			ev, err := nimbus.WaitForTopic[json.RawMessage](wf, in.WaitTopic, in.Filter, time.Duration(in.TopicTimeoutMS)*time.Millisecond)
			if err != nil {
				return out, err
			}
			out.Event = &ev
		}
		if i == 0 && in.SleepMS > 0 {
			before := wf.Now()
			wf.Sleep(time.Duration(in.SleepMS) * time.Millisecond)
			if in.CountWakes {
				appendWake(wf.RunID() + "/woke")
			}
			out.SleptMS = wf.Now().Sub(before).Milliseconds()
		}
		if i == 0 && in.WaitFor != "" {
			if _, err := nimbus.WaitForEvent[any](wf, in.WaitFor, 0); err != nil {
				return out, err
			}
		}
	}
	if !in.Plain {
		out.UUID = wf.UUID()
	}
	return out, nil
}

func init() { nimbus.RegisterWorkflow(run) }

func main() {}
