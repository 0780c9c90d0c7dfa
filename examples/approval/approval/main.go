// Command approval waits for a human: it records a request, waits for the
// signal "approval", and applies the request if it was approved in time.
package main

import (
	"errors"
	"time"

	nimbus "github.com/nimbus-dev/nimbus/sdk/go"
)

// Request is a run's input.
type Request struct {
	Request string `json:"request"`
	Amount  int    `json:"amount"`
	// TimeoutS is how long to wait for the decision. Default 48h.
	TimeoutS int `json:"timeout_s,omitempty"`
}

// Approval is the signal's payload.
type Approval struct {
	Approved bool   `json:"approved"`
	By       string `json:"by"`
}

// Outcome is a run's result.
type Outcome struct {
	Request  string `json:"request"`
	Decision string `json:"decision"` // approved, rejected or expired
	By       string `json:"by,omitempty"`
}

var requests = nimbus.Bucket("requests")

func approve(wf *nimbus.Workflow, in Request) (Outcome, error) {
	if in.Request == "" {
		return Outcome{}, errors.New(`input needs "request"`)
	}
	set := func(state string) func() (bool, error) {
		return func() (bool, error) {
			_, err := requests.Put(in.Request, []byte(state))
			return true, err
		}
	}
	if _, err := nimbus.Step(wf, "submit", set("pending")); err != nil {
		return Outcome{}, err
	}
	timeout := 48 * time.Hour
	if in.TimeoutS > 0 {
		timeout = time.Duration(in.TimeoutS) * time.Second
	}
	out := Outcome{Request: in.Request}
	a, err := nimbus.WaitForEvent[Approval](wf, "approval", timeout)
	switch {
	case errors.Is(err, nimbus.ErrTimeout):
		out.Decision = "expired"
	case err != nil:
		return out, err
	case a.Approved:
		out.Decision, out.By = "approved", a.By
	default:
		out.Decision, out.By = "rejected", a.By
	}
	_, err = nimbus.Step(wf, "decide", set(out.Decision))
	return out, err
}

func init() { nimbus.RegisterWorkflow(approve) }

func main() {}
