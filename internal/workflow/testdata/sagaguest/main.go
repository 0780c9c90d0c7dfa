// Command sagaguest is the workflow of the engine's saga and signal
// tests: Steps steps s1..sN, each followed by the registration of its
// compensation c1..cN; step FailAt fails for good. Every step and
// compensation counts its executions in the "execs" bucket and applies
// "<run>/<name>" once to the "ledger" bucket (create if absent), so the
// ledger's revisions give the order of first effects. Counting executions
// and the compare-and-swap need writes made at once: steps and
// compensations are given nimbus.ImmediateEffects. Waits (signal
// names) are awaited after the first step, Sleep after them.
package main

import (
	"encoding/json"
	"errors"
	"strconv"
	"time"

	nimbus "github.com/nimbus-dev/nimbus/sdk/go"
)

// In is a run's input.
type In struct {
	Steps  int `json:"steps"`
	FailAt int `json:"fail_at"`
	// StepMS and CompMS make steps and compensations take that long.
	StepMS int64 `json:"step_ms"`
	CompMS int64 `json:"comp_ms"`
	// Waits are signal names to wait for, in order, after step 1, each
	// with WaitMS as its timeout (0: none).
	Waits  []string `json:"waits"`
	WaitMS int64    `json:"wait_ms"`
	// SleepMS is a durable sleep after the waits.
	SleepMS int64 `json:"sleep_ms"`
}

// Out is a run's result.
type Out struct {
	Steps []string          `json:"steps"`
	Got   []json.RawMessage `json:"got"` // each wait's payload, or "timeout"
}

var ledger, execs = nimbus.Bucket("ledger"), nimbus.Bucket("execs")

// count adds one to key in execs.
func count(key string) {
	for {
		v, rev, err := execs.Get(key)
		if err != nil && !errors.Is(err, nimbus.ErrNotFound) {
			panic(err)
		}
		n, _ := strconv.Atoi(string(v))
		if _, err := execs.Put(key, []byte(strconv.Itoa(n+1)), nimbus.IfRevision(rev)); err == nil {
			return
		} else if !errors.Is(err, nimbus.ErrRevisionMismatch) {
			panic(err)
		}
	}
}

// effect is an effect applied once: counted, then written to the ledger
// if absent.
func effect(key string, ms int64) error {
	count(key)
	time.Sleep(time.Duration(ms) * time.Millisecond)
	_, err := ledger.Put(key, []byte("1"), nimbus.IfRevision(0))
	if errors.Is(err, nimbus.ErrRevisionMismatch) {
		err = nil
	}
	return err
}

func run(wf *nimbus.Workflow, in In) (Out, error) {
	var out Out
	for i := 1; i <= in.Steps; i++ {
		name := "s" + strconv.Itoa(i)
		_, err := nimbus.Step(wf, name, func() (string, error) {
			if i == in.FailAt {
				count(wf.RunID() + "/" + name)
				return "", nimbus.NonRetryable(errors.New(name + " fails for good"))
			}
			return name, effect(wf.RunID()+"/"+name, in.StepMS)
		}, nimbus.ImmediateEffects())
		if err != nil {
			return out, err
		}
		out.Steps = append(out.Steps, name)
		comp := "c" + strconv.Itoa(i)
		wf.Compensate(comp, func() error { return effect(wf.RunID()+"/"+comp, in.CompMS) },
			nimbus.Retry{MaxAttempts: 3, Backoff: 10 * time.Millisecond}, nimbus.ImmediateEffects())
		if i == 1 {
			for _, w := range in.Waits {
				v, err := nimbus.WaitForEvent[json.RawMessage](wf, w, time.Duration(in.WaitMS)*time.Millisecond)
				if errors.Is(err, nimbus.ErrTimeout) {
					v = json.RawMessage(`"timeout"`)
				} else if err != nil {
					return out, err
				}
				out.Got = append(out.Got, v)
			}
			if in.SleepMS > 0 {
				wf.Sleep(time.Duration(in.SleepMS) * time.Millisecond)
			}
		}
	}
	return out, nil
}

func init() { nimbus.RegisterWorkflow(run) }

func main() {}
