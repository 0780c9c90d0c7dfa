package workflow

import "github.com/nimbus-dev/nimbus/internal/runtime"

// Guest logs of runs: every line an activation writes (stdout, stderr,
// the log host call) carries the run's id and, inside a step, the step's
// name, position and attempt, so `nimbus logs APP --run ID` shows a run's
// lines, each with the step that wrote it.

// LogTag is what a line of an activation is tagged with.
type LogTag struct {
	Run string
	// InStep is set when a step was running: Step, Position and Attempt
	// are its name, position (from 0) and attempt (from 1).
	InStep   bool
	Step     string
	Position int
	Attempt  int
}

// LogSinks gives an activation its log sink; tag is called for each line
// as it is written, on the goroutine running the guest, and answers the
// run and the step running at that moment.
type LogSinks interface {
	Sink(app, function, revision, invocation string, tag func() LogTag) runtime.LogSink
}

// logTag is the tag of a line written now. The guest runs on the
// goroutine that makes its host calls, so the step fields it reads are
// those the last StepBegin and StepEnd left.
func (a *activation) logTag() LogTag {
	t := LogTag{Run: a.r.id}
	if a.begun > 0 {
		pos := a.begun - 1
		t.InStep, t.Step, t.Position, t.Attempt = true, a.stepName, pos, len(a.r.attempts[pos])+1
	}
	return t
}
