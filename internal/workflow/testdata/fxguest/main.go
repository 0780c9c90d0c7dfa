// Command fxguest is the workflow of the journaled-effects tests: Steps
// rounds, each a plain step mark<i> that counts its executions in the
// "execs" bucket, then a journaled step s<i> (nimbus.JournaledEffects)
// that writes "<run>/s<i>" to the "ledger" bucket and publishes it to
// the topic "done" (an event with a random id), reads its write back, checks that a compare-and-swap is refused, and takes StepMS, then
// a plain step seen<i> that reads the write (it must be applied by then).
package main

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	nimbus "github.com/nimbus-dev/nimbus/sdk/go"
)

// In is a run's input.
type In struct {
	Steps  int   `json:"steps"`
	StepMS int64 `json:"step_ms"`
}

var ledger, execs = nimbus.Bucket("ledger"), nimbus.Bucket("execs")

// count adds one to key in execs (a plain step: its write is immediate).
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

func run(wf *nimbus.Workflow, in In) ([]string, error) {
	var out []string
	for i := 1; i <= in.Steps; i++ {
		si := strconv.Itoa(i)
		key := wf.RunID() + "/s" + si
		if _, err := nimbus.Step(wf, "mark"+si, func() (int, error) {
			count(wf.RunID() + "/mark" + si)
			return i, nil
		}); err != nil {
			return out, err
		}
		if _, err := nimbus.Step(wf, "s"+si, func() (string, error) {
			if _, err := ledger.Put(key, []byte("s"+si)); err != nil {
				return "", err
			}
			// A random id (the SDK's default): a publish made again by a
			// replay would be a second event.
			if _, err := nimbus.Publish("done", nimbus.Event{Type: "fx.done", Data: []byte(`"` + key + `"`)}); err != nil {
				return "", err
			}
			if v, _, err := ledger.Get(key); err != nil || string(v) != "s"+si {
				return "", nimbus.NonRetryable(fmt.Errorf("read your write: %q, %v", v, err))
			}
			if _, err := ledger.Put(key+".cas", []byte("x"), nimbus.IfRevision(0)); !errors.Is(err, nimbus.ErrBadArgument) {
				return "", nimbus.NonRetryable(fmt.Errorf("a compare-and-swap in a journaled step answered %v, want ErrBadArgument", err))
			}
			if _, err := ledger.Put(key+".tmp", []byte("x"), nimbus.TTL(time.Minute)); !errors.Is(err, nimbus.ErrBadArgument) {
				return "", nimbus.NonRetryable(fmt.Errorf("a TTL in a journaled step answered %v, want ErrBadArgument", err))
			}
			if _, err := ledger.Put(key+".tmp", []byte("x")); err != nil {
				return "", err
			}
			if err := ledger.Delete(key + ".tmp"); err != nil {
				return "", err
			}
			if _, _, err := ledger.Get(key + ".tmp"); !errors.Is(err, nimbus.ErrNotFound) {
				return "", nimbus.NonRetryable(fmt.Errorf("a key the step deleted answered %v, want ErrNotFound", err))
			}
			time.Sleep(time.Duration(in.StepMS) * time.Millisecond)
			return "s" + si, nil
		}, nimbus.JournaledEffects()); err != nil {
			return out, err
		}
		seen, err := nimbus.Step(wf, "seen"+si, func() (string, error) {
			v, _, err := ledger.Get(key)
			if err != nil {
				return "", nimbus.NonRetryable(fmt.Errorf("the effect of s%s is not applied: %w", si, err))
			}
			return string(v), nil
		})
		if err != nil {
			return out, err
		}
		out = append(out, seen)
	}
	return out, nil
}

func init() { nimbus.RegisterWorkflow(run) }

func main() {}
