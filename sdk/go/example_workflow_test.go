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

// A step's KV writes and publishes are committed with its result (the
// default): after a crash either the step and its effects are on disk or
// neither is, and they are applied once, before Step returns.
func ExampleStep() {
	stock := nimbus.Bucket("stock")
	reserve := func(wf *nimbus.Workflow, sku string) (int, error) {
		return nimbus.Step(wf, "reserve", func() (int, error) {
			stock.Put(sku+"/"+wf.RunID(), []byte("reserved"))                         // held until the step ends
			v, _, _ := stock.Get(sku + "/" + wf.RunID())                              // "reserved": the step reads its own write
			nimbus.Publish("reserved", nimbus.Event{Type: "stock.reserved", Data: v}) // held too
			return len(v), nil
		})
	}
	nimbus.RegisterWorkflow(reserve)
}

// A compare-and-swap needs the write made at once: ImmediateEffects opts
// the step out of journaled effects. Its writes are then not atomic with
// the step (an execution cut by a crash may have made them), so it is
// written to be run again: the seat taken by this run's earlier
// execution is its own.
func ExampleImmediateEffects() {
	seats := nimbus.Bucket("seats")
	book := func(wf *nimbus.Workflow, seat string) (uint64, error) {
		return nimbus.Step(wf, "book", func() (uint64, error) {
			rev, err := seats.Put(seat, []byte(wf.RunID()), nimbus.IfRevision(0))
			if errors.Is(err, nimbus.ErrRevisionMismatch) {
				v, rev, err := seats.Get(seat) // taken: by this run's earlier execution?
				if err == nil && string(v) != wf.RunID() {
					return 0, nimbus.NonRetryable(errors.New("seat " + seat + " is taken"))
				}
				return rev, err
			}
			return rev, err
		}, nimbus.ImmediateEffects())
	}
	nimbus.RegisterWorkflow(book)
}

// A child goes with its parent: cancelling the order run cancels the
// payment child (its compensations run); terminating it terminates the
// child. The audit child is started detached: the order run waits for it
// too, but if the order run is cancelled or terminated meanwhile, the
// audit runs on. Large data goes
// by reference: a result is at most 1 MiB of JSON, so the step stores the
// report in a KV key and returns the key.
func ExampleDetached() {
	reports := nimbus.Bucket("reports")
	order := func(wf *nimbus.Workflow, id string) (string, error) {
		paid, err := nimbus.ChildWorkflow[string](wf, "payment", id)
		if err != nil {
			return "", err
		}
		key, err := nimbus.Step(wf, "report", func() (string, error) {
			key := "report/" + id
			_, err := reports.Put(key, []byte("... a large report ..."))
			return key, err
		})
		if err != nil {
			return "", err
		}
		if _, err := nimbus.ChildWorkflow[string](wf, "audit", key, nimbus.Detached()); err != nil {
			return "", err
		}
		return paid, nil
	}
	nimbus.RegisterWorkflow(order)
}
