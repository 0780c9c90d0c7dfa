// Command fxguest is the workflow of the journaled-effects tests: Steps
// rounds, each a step mark<i> with nimbus.ImmediateEffects that counts
// its executions in the "execs" bucket, then a step s<i> (journaled
// effects, the default) that writes "<run>/s<i>" to the "ledger" bucket,
// publishes it to the topic "done" (an event with a random id), reads its
// write back, checks that a compare-and-swap is refused, writes
// "<run>/s<i>.ttl" with a one-hour TTL, writes and deletes
// "<run>/s<i>.tmp", and takes StepMS, then a step seen<i> that reads the
// write (it must be applied by then).
//
// With Bad set, the run is one step "bad" that writes "<run>/bad" to the
// ledger, then makes the write Bad names, and fails for good with that
// write's error (the checks made when a journaled step makes a write):
// "topic" publishes to the undeclared topic "nosuch", "event" publishes
// an event of Bytes bytes to "done", "value" writes Bytes bytes to the
// ledger.
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
	Steps  int    `json:"steps"`
	StepMS int64  `json:"step_ms"`
	Bad    string `json:"bad"`
	Bytes  int    `json:"bytes"`
}

var ledger, execs = nimbus.Bucket("ledger"), nimbus.Bucket("execs")

// count adds one to key in execs (a compare-and-swap: in a step with
// nimbus.ImmediateEffects).
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

// bad is the step of a run with In.Bad set.
func bad(wf *nimbus.Workflow, in In) ([]string, error) {
	_, err := nimbus.Step(wf, "bad", func() (int, error) {
		if _, err := ledger.Put(wf.RunID()+"/bad", []byte("x")); err != nil {
			return 0, err
		}
		var err error
		switch in.Bad {
		case "topic":
			_, err = nimbus.Publish("nosuch", nimbus.Event{Type: "fx.bad"})
		case "event":
			_, err = nimbus.Publish("done", nimbus.Event{Type: "fx.bad", Data: make([]byte, in.Bytes)})
		case "value":
			_, err = ledger.Put(wf.RunID()+"/big", make([]byte, in.Bytes))
		default:
			err = errors.New("unknown bad " + in.Bad)
		}
		if err == nil {
			return 0, nimbus.NonRetryable(errors.New("the bad write was accepted"))
		}
		return 0, nimbus.NonRetryable(err)
	})
	return nil, err
}

func run(wf *nimbus.Workflow, in In) ([]string, error) {
	if in.Bad != "" {
		return bad(wf, in)
	}
	var out []string
	for i := 1; i <= in.Steps; i++ {
		si := strconv.Itoa(i)
		key := wf.RunID() + "/s" + si
		if _, err := nimbus.Step(wf, "mark"+si, func() (int, error) {
			count(wf.RunID() + "/mark" + si)
			return i, nil
		}, nimbus.ImmediateEffects()); err != nil {
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
			if _, err := ledger.Put(key+".ttl", []byte("x"), nimbus.TTL(time.Hour)); err != nil {
				return "", err
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
		}); err != nil {
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
