package workflow

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// Children of a parent that is cancelled or terminated (the parent close
// policy). By default a child goes with its parent: cancelling the parent
// requests the cancellation of its children still running (they run
// their compensations), terminating it terminates them (and theirs). A
// child started detached (the SDK's Detached option: its start is the
// step wire.DetachedStepPrefix+workflow, and its record says Detached)
// runs on.
//
// The children of a run are found from its journal: a child is started
// inside the step at pos as ChildRunID(parent, pos), so every child,
// cut or attempt entry of a child-start step names one that may exist.
//
// Crashes: a cancelled parent requests its children's cancellation when
// it is cancelled and again before its end is committed (finish), so a
// crash in between is redone by the parent's next activation; a child
// cancelling already is left as it is. A terminated parent's final record
// says ChildrenPending until its children are terminated; a start of the
// engine terminates the children of such records (Provision). Both are
// idempotent: a child that ended is left alone.

// childIDs is the ids of the children that the journal ents of run parent
// started or may have started.
func childIDs(parent string, ents []Entry) []string {
	var ids []string
	seen := map[string]bool{}
	for _, en := range ents {
		switch en.Type {
		case EntryStep, EntryCut, EntryAttempt:
		default:
			continue
		}
		if !strings.HasPrefix(en.Name, wire.ChildStepPrefix) && !strings.HasPrefix(en.Name, wire.DetachedStepPrefix) {
			continue
		}
		if id := ChildRunID(parent, en.Pos); !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	return ids
}

// inFlightChild is the id of the child that a step of run parent still
// running may have started: the step at the first position the journal
// ents has no final entry for. A child start makes what its run kept back
// durable first (StartChild), so the journal names every step before it.
func inFlightChild(parent string, ents []Entry) string {
	next := 0
	for _, en := range ents {
		switch en.Type {
		case EntryStep, EntrySleep, EntryWait, EntryCut:
			next = max(next, en.Pos+1)
		}
	}
	return ChildRunID(parent, next)
}

// closeChildren cancels (or terminates) the children of run parent that
// are not detached and still running. A child that ended, or is
// cancelling already when cancel is asked, is left alone.
func (e *Engine) closeChildren(ctx context.Context, app, parent string, ids []string, terminate bool) error {
	for _, id := range ids {
		rec, err := e.j.record(ctx, app, id)
		if errors.Is(err, ErrRunNotFound) {
			continue // its start was not made
		}
		if err != nil {
			return fmt.Errorf("child run %s: %w", id, err)
		}
		if rec.Parent != parent || rec.Detached || rec.Done() {
			continue
		}
		if terminate {
			_, err = e.Terminate(ctx, app, id, "its parent run "+parent+" was terminated")
		} else if rec.State != StateCancelling {
			_, err = e.Cancel(ctx, app, id, "its parent run "+parent+" was cancelled")
		}
		if errors.Is(err, ErrRunFinished) || errors.Is(err, ErrAlreadyCancelling) {
			err = nil // it ended, or was cancelled, meanwhile
		}
		if err != nil {
			return fmt.Errorf("child run %s: %w", id, err)
		}
	}
	return nil
}

// cancelChildren requests the cancellation of the children of run
// parent (see closeChildren).
func (e *Engine) cancelChildren(ctx context.Context, app, parent string) error {
	ents, err := e.j.entries(ctx, app, parent)
	if err != nil {
		return err
	}
	return e.closeChildren(ctx, app, parent, childIDs(parent, ents), false)
}

// terminateChildren terminates the children of the terminated run parent,
// then clears its record's ChildrenPending.
func (e *Engine) terminateChildren(ctx context.Context, app, parent string) error {
	ents, err := e.j.entries(ctx, app, parent)
	if err != nil {
		return err
	}
	ids := childIDs(parent, ents)
	if c := inFlightChild(parent, ents); !slices.Contains(ids, c) {
		ids = append(ids, c) // not found (nothing started there) is skipped
	}
	if err := e.closeChildren(ctx, app, parent, ids, true); err != nil {
		return err
	}
	return e.clearFlag(ctx, app, parent, func(rec *Run) *bool { return &rec.ChildrenPending })
}

// retellParent tells the parent of the terminated child rec that it
// ended, unless the parent's journal has that signal already (the node
// stopped after telling it and before clearing ParentPending), then clears
// rec's ParentPending.
func (e *Engine) retellParent(ctx context.Context, rec *Run) error {
	ents, err := e.j.entries(ctx, rec.App, rec.Parent)
	if err != nil && !errors.Is(err, ErrRunNotFound) {
		return err
	}
	told := slices.ContainsFunc(ents, func(en Entry) bool {
		return en.Type == EntrySignal && en.Name == ChildSignal(rec.ID)
	})
	if err == nil && !told {
		if err := e.tellParent(ctx, rec, false); err != nil {
			return err
		}
	}
	return e.clearFlag(ctx, rec.App, rec.ID, func(rec *Run) *bool { return &rec.ParentPending })
}

// clearFlag clears the flag of run id's record that flag points to
// (ChildrenPending, ParentPending); a flag clear already writes nothing.
func (e *Engine) clearFlag(ctx context.Context, app, id string, flag func(*Run) *bool) error {
	_, err := e.update(ctx, app, id, func(rec *Run) (*Entry, error) {
		if !*flag(rec) {
			return nil, errNoChange
		}
		*flag(rec) = false
		return nil, nil
	})
	if errors.Is(err, errNoChange) {
		err = nil
	}
	return err
}

// errNoChange is what an update's change answers to write nothing.
var errNoChange = errors.New("no change")
