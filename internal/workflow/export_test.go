package workflow

import (
	"context"
	"fmt"
)

// SeedRun stores rec and its journal ents as a node that recorded them
// would have left them, through the journal's own writes: the seam the
// replay tests (replay_test.go) feed golden journals through. Goldens are
// logical journals (Run and []Entry as JSON), not the stream's bytes, so
// they outlive a change of the storage layout (journal.go). Seed before
// the app is provisioned: Provision then resumes the run as after a
// restart.
func (e *Engine) SeedRun(ctx context.Context, rec *Run, ents []Entry) error {
	if err := e.j.ensure(ctx, rec.App); err != nil {
		return err
	}
	ok, err := e.j.create(ctx, rec, false, false)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("seed run %s/%s: it exists", rec.App, rec.ID)
	}
	for i := range ents {
		if err := e.j.commit(ctx, rec.App, rec.ID, &ents[i], nil); err != nil {
			return err
		}
	}
	return nil
}

// Journal is a run's logical journal as stored.
func (e *Engine) Journal(ctx context.Context, app, id string) ([]Entry, error) {
	return e.j.entries(ctx, app, id)
}
