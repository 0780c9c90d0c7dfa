package main

import (
	"testing"

	"github.com/nimbus-dev/nimbus/internal/guestlog"
)

// A workflow run's log line shows its run, and the step (position, name,
// attempt) it was written in; other lines show nothing more.
func TestLogsRunTag(t *testing.T) {
	for _, c := range []struct {
		e    guestlog.Entry
		want string
	}{
		{guestlog.Entry{}, ""},
		{guestlog.Entry{Run: "order-1"}, "[run order-1] "},
		{guestlog.Entry{Run: "order-1", Step: &guestlog.Step{Name: "charge", Position: 2, Attempt: 3}}, "[run order-1 step 2 charge attempt 3] "},
	} {
		if got := runTag(c.e); got != c.want {
			t.Errorf("runTag(%+v) = %q, want %q", c.e, got, c.want)
		}
	}
}
