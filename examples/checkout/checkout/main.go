// Command checkout is a saga: reserve, charge, ship, with compensations.
// Input "fail" makes the charge ("charge": a declined card, not retried)
// or the shipment ("ship": a carrier that keeps failing, retried twice)
// fail for good, so the run compensates.
package main

import (
	"errors"
	"strconv"
	"time"

	nimbus "github.com/nimbus-dev/nimbus/sdk/go"
)

// Order is a run's input.
type Order struct {
	Order  string `json:"order"`
	Amount int    `json:"amount"`
	// Fail is "charge" or "ship" to make that step fail (a demo knob).
	Fail string `json:"fail,omitempty"`
}

// Receipt is a run's result.
type Receipt struct {
	Reservation string `json:"reservation"`
	Payment     string `json:"payment"`
	Shipment    string `json:"shipment"`
}

var orders = nimbus.Bucket("orders")

// record writes one effect of the order. The write is committed with the
// step's result and applied once, even if the node dies while the step
// runs (a step's KV writes are journaled by default); the step's
// idempotency key is the value, for tracing.
func record(wf *nimbus.Workflow, o Order, what string) (string, error) {
	_, err := orders.Put(o.Order+"."+what, []byte(wf.IdempotencyKey()))
	return o.Order + "-" + what, err
}

func checkout(wf *nimbus.Workflow, o Order) (Receipt, error) {
	if o.Order == "" || o.Amount <= 0 {
		return Receipt{}, errors.New(`input needs "order" and a positive "amount"`)
	}
	var r Receipt
	var err error
	r.Reservation, err = nimbus.Step(wf, "reserve", func() (string, error) { return record(wf, o, "reserved") })
	if err != nil {
		return r, err
	}
	wf.Compensate("release", func() error { _, err := record(wf, o, "released"); return err })

	r.Payment, err = nimbus.Step(wf, "charge", func() (string, error) {
		if o.Fail == "charge" {
			return "", nimbus.NonRetryable(errors.New("card declined for " + strconv.Itoa(o.Amount)))
		}
		return record(wf, o, "charged")
	})
	if err != nil {
		return r, err
	}
	wf.Compensate("refund", func() error { _, err := record(wf, o, "refunded"); return err })

	r.Shipment, err = nimbus.Step(wf, "ship", func() (string, error) {
		if o.Fail == "ship" {
			return "", errors.New("carrier unavailable")
		}
		return record(wf, o, "shipped")
	}, nimbus.Retry{MaxAttempts: 3, Backoff: 100 * time.Millisecond})
	return r, err
}

func init() { nimbus.RegisterWorkflow(checkout) }

func main() {}
