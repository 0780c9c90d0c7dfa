package workflow

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"time"
)

// Signals: named messages sent to a run from outside (the API, the CLI),
// which its code waits for with a durable wait (the Go SDK's
// WaitForEvent).
//
// A signal is an EntrySignal in the run's journal (Name, the payload in
// Result), committed with the run's record as a compare-and-swap: a run
// that waits moves to running in the same unit, so a restart resumes it
// at once. Signals are buffered: one that arrives before the code waits
// stays in the journal until a wait for its name takes it. The n-th wait
// for a name (among the waits of the run that got a signal) takes the
// n-th signal of that name, in journal order; the wait's outcome is
// journaled (EntryWait at its position: the payload, or Failed with a
// timeout), so a replay returns it without looking at signals again.
//
// A wait with no signal for it records its start (EntryWaiting: the
// deadline, fixed by the first activation that reaches it) and moves the
// record to StateWaiting, as a compare-and-swap on the record read before
// the journal: a signal committed meanwhile moves the record, the swap
// fails, and the wait reads the journal again. So a signal is never
// missed, and a waiting run holds no instance, only a timer for its
// deadline.

// More entry types (Entry.Type) and a state (Run.State).
const (
	// EntrySignal: a signal Name arrived, with the payload in Result.
	EntrySignal = "signal"
	// EntryWaiting: the wait at Pos for signal Name began; WakeAt is its
	// deadline (zero: none).
	EntryWaiting = "waiting"
	// EntryWait: the outcome of the wait at Pos for signal Name: the
	// payload in Result, or Failed with Error when it timed out.
	EntryWait = "wait"

	// StateWaiting: suspended until a signal arrives, or its wait's
	// deadline (WakeAt, zero for none); holds no instance.
	StateWaiting = "waiting"
)

// Limits of signals.
const (
	// MaxSignalNameLen caps a signal name.
	MaxSignalNameLen = 256
	// MaxSignalBytes caps a signal's payload.
	MaxSignalBytes = 1 << 20
)

var signalNameRe = regexp.MustCompile(`^[A-Za-z0-9_.:-]+$`)

// CheckSignalName returns an error wrapping ErrInvalid when name cannot
// name a signal: 1 to 256 of [A-Za-z0-9_.:-].
func CheckSignalName(name string) error {
	if name == "" || len(name) > MaxSignalNameLen || !signalNameRe.MatchString(name) {
		return fmt.Errorf("%w: signal name %q: use 1 to %d letters, digits, '_', '.', ':' or '-'", ErrInvalid, truncate(name, 40), MaxSignalNameLen)
	}
	return nil
}

// Signal sends the signal name with payload (JSON; empty is null) to a
// run. It is durable when Signal returns: the run gets it at its wait for
// name, now or later. A finished run answers ErrRunFinished, an unknown
// one ErrRunNotFound.
func (e *Engine) Signal(ctx context.Context, app, id, name string, payload []byte) (*Run, error) {
	if err := CheckRunID(id); err != nil {
		return nil, err
	}
	if err := CheckSignalName(name); err != nil {
		return nil, err
	}
	if isReservedSignal(name) {
		return nil, fmt.Errorf("%w: signal name %q: names starting with %q or %q are sent by the engine (a child run's end, a topic event)", ErrInvalid, name, ChildSignalPrefix, TopicSignalPrefix)
	}
	if len(payload) == 0 {
		payload = []byte("null")
	}
	if len(payload) > MaxSignalBytes {
		return nil, fmt.Errorf("%w: signal payload is %d bytes, over the limit of %d", ErrInvalid, len(payload), MaxSignalBytes)
	}
	if !json.Valid(payload) {
		return nil, fmt.Errorf("%w: signal payload is not JSON: send a JSON value (a string is quoted: '\"yes\"')", ErrInvalid)
	}
	return e.signal(ctx, app, id, name, payload)
}

// signal journals the signal name with payload (checked) for a run, and
// wakes it.
func (e *Engine) signal(ctx context.Context, app, id, name string, payload []byte) (*Run, error) {
	now := e.opts.Now().UTC()
	rec, err := e.update(ctx, app, id, func(rec *Run) (*Entry, error) {
		if rec.Done() {
			return nil, fmt.Errorf("%w: run %s is %s; it takes no more signals", ErrRunFinished, id, rec.State)
		}
		if rec.State == StateWaiting {
			rec.State, rec.WakeAt = StateRunning, time.Time{}
		}
		return &Entry{Type: EntrySignal, Time: now, Name: name, Result: payload}, nil
	})
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	if r := e.runs[runKey(app, id)]; r != nil {
		r.loaded = false // its next activation reads the journal again
	}
	e.mu.Unlock()
	e.wake(app, id)
	return rec, nil
}

// WaitAnswer is what WaitSignal answers.
type WaitAnswer struct {
	// Payload is the signal's payload, unless TimedOut.
	Payload  []byte
	TimedOut bool
}

func waitAnswer(e Entry) WaitAnswer {
	if e.Failed {
		return WaitAnswer{TimedOut: true}
	}
	return WaitAnswer{Payload: e.Result}
}

// WaitSignal is the wait at pos for the signal name: it answers the
// recorded outcome on replay; else the next signal of that name, or a
// timeout once timeout (counted from the first activation that reached
// the wait; 0 is none) has passed; else ErrSuspended: the run waits,
// holding no instance.
func (e *Engine) WaitSignal(ctx context.Context, app, invocation string, pos int, name string, timeout time.Duration) (WaitAnswer, error) {
	return e.wait(ctx, app, invocation, pos, name, timeout, nil)
}

// wait is WaitSignal, and with tw a topic wait (topics.go): its start
// records the topic's position, and a suspension registers the run with
// the topic's follower.
func (e *Engine) wait(ctx context.Context, app, invocation string, pos int, name string, timeout time.Duration, tw *topicWait) (WaitAnswer, error) {
	if a, err := e.activation(app, invocation); err == nil && a.stop == nil && pos == a.next-1 && pos < len(a.r.steps) &&
		a.r.steps[pos].Type == EntryWait && a.r.steps[pos].Name == name {
		return waitAnswer(a.r.steps[pos]), nil // asked again: the payload did not fit
	}
	a, err := e.check(app, invocation, pos)
	if err != nil {
		return WaitAnswer{}, err
	}
	if err := e.cancelGate(ctx, a, pos, name); err != nil {
		return WaitAnswer{}, err
	}
	r := a.r
	if pos < len(r.steps) {
		rec := r.steps[pos]
		if rec.Type != EntryWait || rec.Name != name {
			return WaitAnswer{}, a.mismatch(pos, rec, EntryWait, name)
		}
		a.next++
		return waitAnswer(rec), nil
	}
	for range 100 {
		rec, seq, err := e.j.recordAt(ctx, r.app, r.id)
		if err != nil {
			return WaitAnswer{}, err
		}
		ents, err := e.j.entries(ctx, r.app, r.id)
		if err != nil {
			return WaitAnswer{}, err
		}
		r.loadControl(ents)
		if err := e.cancelGate(ctx, a, pos, name); err != nil {
			return WaitAnswer{}, err
		}
		var (
			start   *Entry
			takers  []int // positions of earlier waits that took a signal of name
			signals []Entry
		)
		for i := range ents {
			switch ent := &ents[i]; {
			case ent.Type == EntryWaiting && ent.Pos == pos:
				start = ent
			case ent.Type == EntryWait && ent.Name == name && !ent.Failed:
				takers = append(takers, ent.Pos)
			case ent.Type == EntrySignal && ent.Name == name:
				signals = append(signals, *ent)
			case ent.Type == EntryRetry:
				// A retry forgets the waits from its position on: their
				// signals go to the waits that replace them.
				takers = slices.DeleteFunc(takers, func(p int) bool { return p >= ent.Pos })
				if ent.Pos <= pos {
					start = nil
				}
			}
		}
		taken := len(takers)
		now := e.opts.Now().UTC()
		var begin *Entry
		if start == nil {
			begin = &Entry{Type: EntryWaiting, Time: now, Pos: pos, Name: name}
			if timeout > 0 {
				begin.WakeAt = now.Add(timeout)
			}
			if tw != nil {
				if begin.Input, err = e.topicStart(ctx, app, tw); err != nil {
					return WaitAnswer{}, err
				}
			}
			start = begin
		} else if start.Name != name {
			return WaitAnswer{}, a.mismatch(pos, Entry{Type: EntryWait, Name: start.Name}, EntryWait, name)
		}
		var out *Entry
		switch {
		case taken < len(signals):
			out = &Entry{Type: EntryWait, Time: now, Pos: pos, Name: name, Result: signals[taken].Result}
		case !start.WakeAt.IsZero() && !now.Before(start.WakeAt):
			out = &Entry{Type: EntryWait, Time: now, Pos: pos, Name: name, Failed: true,
				Error: fmt.Sprintf("no signal %q within %s", name, start.WakeAt.Sub(start.Time).Round(time.Millisecond))}
		}
		if out != nil {
			// The outcome, with the record back to running if a timer
			// woke the run from waiting.
			if rec.State == StateWaiting {
				rec.State, rec.WakeAt = StateRunning, time.Time{}
			}
			rec.Updated, rec.Steps = now, pos+1
			ok, err := e.j.commitIf(ctx, r.app, r.id, []*Entry{begin, out}, rec, seq)
			if err != nil {
				return WaitAnswer{}, err
			}
			if !ok {
				continue
			}
			e.setRecord(r, rec)
			r.steps = append(r.steps, *out)
			a.next++
			return waitAnswer(*out), nil
		}
		// Nothing yet: wait, unless a signal came since the record was read.
		if rec.State == StateCancelling {
			continue // the gate sees it on the next round
		}
		rec.State, rec.WakeAt, rec.Updated, rec.Steps = StateWaiting, start.WakeAt, now, pos
		rec.Topic = ""
		if tw != nil {
			rec.Topic = tw.Topic
		}
		ok, err := e.j.commitIf(ctx, r.app, r.id, []*Entry{begin}, rec, seq)
		if err != nil {
			return WaitAnswer{}, err
		}
		if !ok {
			continue
		}
		e.setRecord(r, rec)
		if tw != nil {
			e.watchTopic(r.app, r.id, name, start.Input)
		}
		a.waiting = true
		return WaitAnswer{}, a.suspendAt(start.WakeAt)
	}
	return WaitAnswer{}, fmt.Errorf("workflow run %s/%s: wait for %q: its record kept changing", r.app, r.id, name)
}

// setRecord makes rec the run's record in memory.
func (e *Engine) setRecord(r *run, rec *Run) {
	cp := *rec
	e.mu.Lock()
	r.rec = &cp
	e.mu.Unlock()
}

// waitDelay is when a run suspended by a wait must be activated again:
// at its deadline, or only by a signal (0) when it has none.
func waitDelay(a *activation, now time.Time) time.Duration {
	if a.wakeAt.IsZero() {
		return 0
	}
	return max(a.wakeAt.Sub(now), time.Millisecond)
}
