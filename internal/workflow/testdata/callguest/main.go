// Command callguest is the workflow of the engine's calling tests, one
// module deployed as three functions: "parent" and "child" (kind
// workflow) and "double" (a plain function). A parent run calls double
// with its input's N (Call), then starts child with N and awaits it
// (ChildWorkflow); a child run triples N in a step. Every execution of
// double and of the child's step is counted in the "execs" bucket, under
// the call's Idempotency-Key and "<run>/triple".
package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	nimbus "github.com/nimbus-dev/nimbus/sdk/go"
)

// In is a run's input.
type In struct {
	N     int  `json:"n"`
	Child bool `json:"child"`
	// Call and ChildWF override the names of the function called and the
	// child workflow started (bad-input tests).
	Call    string `json:"call"`
	ChildWF string `json:"child_wf"`
	// StepBytes makes a run's only step "big" answer a string of that
	// many bytes (2 attempts, each counted under "<run>/big"), and
	// ResultBytes makes it return one (the oversized-result tests).
	StepBytes   int `json:"step_bytes"`
	ResultBytes int `json:"result_bytes"`
	// Wait makes a child register the compensation "undo" (counted under
	// "<run>/undo") after its step and then wait for the signal Wait; a
	// parent passes it on to its child (the parent close tests), started
	// with nimbus.Detached() when Detached.
	Wait     string `json:"wait"`
	Detached bool   `json:"detached"`
}

// Out is a parent run's result.
type Out struct {
	Doubled int    `json:"doubled"`
	Tripled int    `json:"tripled"`
	Pad     string `json:"pad,omitempty"`
}

var execs = nimbus.Bucket("execs")

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

func run(wf *nimbus.Workflow, in In) (Out, error) {
	if in.StepBytes > 0 || in.ResultBytes > 0 {
		return big(wf, in)
	}
	if in.Child {
		n, err := nimbus.Step(wf, "triple", func() (int, error) {
			count(wf.RunID() + "/triple")
			if in.N < 0 {
				return 0, nimbus.NonRetryable(errors.New("negative input"))
			}
			return 3 * in.N, nil
		}, nimbus.ImmediateEffects()) // counts its executions: the write is made at once
		if err != nil || in.Wait == "" {
			return Out{Tripled: n}, err
		}
		wf.Compensate("undo", func() error {
			count(wf.RunID() + "/undo")
			return nil
		}, nimbus.ImmediateEffects())
		_, err = nimbus.WaitForEvent[any](wf, in.Wait, 0)
		return Out{Tripled: n}, err
	}
	callee, child := "double", "child"
	if in.Call != "" {
		callee = in.Call
	}
	if in.ChildWF != "" {
		child = in.ChildWF
	}
	d, err := nimbus.Call[int](wf, callee, In{N: in.N})
	if err != nil {
		return Out{}, err
	}
	var opts []nimbus.StepOption
	if in.Detached {
		opts = append(opts, nimbus.Detached())
	}
	c, err := nimbus.ChildWorkflow[Out](wf, child, In{N: in.N, Child: true, Wait: in.Wait}, opts...)
	if err != nil {
		return Out{}, err
	}
	return Out{Doubled: d, Tripled: c.Tripled}, nil
}

// big is a run with an oversized step result or run result.
func big(wf *nimbus.Workflow, in In) (Out, error) {
	if in.StepBytes > 0 {
		_, err := nimbus.Step(wf, "big", func() (string, error) {
			count(wf.RunID() + "/big")
			return strings.Repeat("x", in.StepBytes), nil
		}, nimbus.ImmediateEffects(), nimbus.Retry{MaxAttempts: 2, Backoff: time.Millisecond})
		if err != nil {
			return Out{}, err
		}
	}
	return Out{Pad: strings.Repeat("y", in.ResultBytes)}, nil
}

func double(w http.ResponseWriter, r *http.Request) {
	var in In
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	count("call/" + strings.ReplaceAll(r.Header.Get("Idempotency-Key"), ":", ".")) // ':' is not a key character
	json.NewEncoder(w).Encode(2 * in.N)
}

func init() {
	nimbus.RegisterWorkflow(run)
	nimbus.Handle(http.HandlerFunc(double))
}

func main() {}
