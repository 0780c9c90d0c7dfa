package nimbus_test

import (
	"errors"
	"time"

	nimbus "github.com/nimbus-dev/nimbus/sdk/go"
)

// A saga: each step that succeeds registers its undo; when a later step
// fails for good (or the run is cancelled), the undos run in reverse
// order, each once, journaled like steps.
func ExampleWorkflow_Compensate() {
	checkout := func(wf *nimbus.Workflow, order string) (string, error) {
		if _, err := nimbus.Step(wf, "reserve", func() (string, error) { return "r-" + order, nil }); err != nil {
			return "", err
		}
		wf.Compensate("release", func() error { return nil /* release the stock */ })
		if _, err := nimbus.Step(wf, "charge", func() (string, error) {
			return "", nimbus.NonRetryable(errors.New("card declined"))
		}); err != nil {
			return "", err // release runs, then the run fails
		}
		wf.Compensate("refund", func() error { return nil })
		return "shipped", nil
	}
	nimbus.RegisterWorkflow(checkout)
}

// Waiting for a human: the run waits durably (no instance held) for the
// signal "approval", sent with `nimbus wf signal APP RUN approval -d
// '{"approved":true}'`, or gives up after two days.
func ExampleWaitForEvent() {
	type approval struct{ Approved bool }
	approve := func(wf *nimbus.Workflow, request string) (string, error) {
		a, err := nimbus.WaitForEvent[approval](wf, "approval", 48*time.Hour)
		switch {
		case errors.Is(err, nimbus.ErrTimeout):
			return "expired", nil
		case err != nil:
			return "", err
		case a.Approved:
			return "approved", nil
		}
		return "rejected", nil
	}
	nimbus.RegisterWorkflow(approve)
}
