package wasm

import (
	"context"
	"errors"
	"testing"
	"time"
)

type ctxKey struct{}

// TestDeadlineContext: a call's context behaves as context.WithDeadline
// of its parent (errors, deadline, values, cancellation), with its timer
// armed only by Done.
func TestDeadlineContext(t *testing.T) {
	t.Parallel()
	parent := context.WithValue(context.Background(), ctxKey{}, "v")

	c, release := withDeadline(parent, time.Now().Add(time.Hour))
	if err := c.Err(); err != nil {
		t.Fatalf("Err before the deadline: %v", err)
	}
	if d, ok := c.Deadline(); !ok || time.Until(d) < 59*time.Minute {
		t.Fatalf("Deadline %v %v", d, ok)
	}
	if c.Value(ctxKey{}) != "v" {
		t.Fatal("the parent's value is lost")
	}
	if c.armedCtx() != nil {
		t.Fatal("armed before anything waited on Done")
	}
	release()
	if !errors.Is(c.Err(), context.Canceled) {
		t.Fatalf("Err after release: %v, want Canceled", c.Err())
	}

	// A deadline that passed: Err says so without a timer; Done, asked
	// then, is closed.
	c, release = withDeadline(parent, time.Now().Add(-time.Millisecond))
	defer release()
	if !errors.Is(c.Err(), context.DeadlineExceeded) {
		t.Fatalf("Err past the deadline: %v", c.Err())
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed past the deadline")
	}
	if !errors.Is(context.Cause(c), context.DeadlineExceeded) {
		t.Fatalf("Cause once armed: %v", context.Cause(c))
	}

	// Done arms a timer that fires at the deadline.
	c, release = withDeadline(parent, time.Now().Add(20*time.Millisecond))
	defer release()
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed at the deadline")
	}
	if !errors.Is(c.Err(), context.DeadlineExceeded) {
		t.Fatalf("Err after Done: %v", c.Err())
	}

	// The parent's end and its earlier deadline come through.
	p, cancel := context.WithTimeout(parent, time.Minute)
	c, release = withDeadline(p, time.Now().Add(time.Hour))
	defer release()
	if d, _ := c.Deadline(); time.Until(d) > 2*time.Minute {
		t.Fatalf("Deadline %v, want the parent's earlier one", d)
	}
	cancel()
	if !errors.Is(c.Err(), context.Canceled) {
		t.Fatalf("Err after the parent's cancel: %v", c.Err())
	}
	select {
	case <-c.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed after the parent's cancel")
	}
	if !errors.Is(callDone(c), context.Canceled) {
		t.Fatalf("callDone: %v", callDone(c))
	}
}
