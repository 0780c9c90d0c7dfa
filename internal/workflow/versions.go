package workflow

import (
	"context"

	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime"
)

// Versioning: a run stays on the function revision it started on
// (Run.Revision), whatever the app deploys or rolls back to meanwhile;
// new runs start on the active revision. The engine holds the revision of
// every run in flight (one hold per run, taken before its start is
// recorded, dropped once its final record is), so the node keeps that
// revision's module and pool while a run may replay it, and releases them
// with the last run. A restart counts the runs in flight of each revision
// from their records and holds them again before it resumes any, looking
// the functions of old revisions up in the registry (which keeps every
// revision). A retry moves the run to the active revision: "deploy the
// fix, then retry" is what a retry is for.

// Revisions is what pins runs to their revision; the server implements it
// over the registry and the scheduler. Without it (Options.Revisions nil)
// every activation runs on the app's active revision.
type Revisions interface {
	// Function is the workflow function of app at a function revision,
	// active or not.
	Function(ctx context.Context, app, workflow, revision string) (model.Function, error)
	// Hold makes fn runnable (loading it if needed) and keeps it so until
	// n Releases.
	Hold(ctx context.Context, app string, fn model.Function, n int) error
	// Release drops one Hold of app's function revision.
	Release(app, revision string)
	// InvokeRevision runs one activation on a held function revision.
	InvokeRevision(ctx context.Context, app, function, revision string, req *runtime.Request) (*runtime.Response, error)
}

// pin holds fn for n runs and remembers it as the code of its revision.
// It does nothing without Options.Revisions.
func (e *Engine) pin(ctx context.Context, app string, fn model.Function, n int) error {
	if e.opts.Revisions == nil {
		return nil
	}
	if err := e.opts.Revisions.Hold(ctx, app, fn, n); err != nil {
		return err
	}
	e.mu.Lock()
	if st := e.apps[app]; st != nil {
		st.pinned[fn.Revision] = fn
		if st.slots[fn.Revision] == nil {
			st.slots[fn.Revision] = make(chan struct{}, max(1, fn.MaxInstances*fn.Concurrency))
		}
	}
	e.mu.Unlock()
	return nil
}

// unpin drops the hold of one run of revision.
func (e *Engine) unpin(app, revision string) {
	if e.opts.Revisions != nil {
		e.opts.Revisions.Release(app, revision)
	}
}

// fnFor is the function a run's activations run: its own revision when
// it is held, else (no Revisions, or its revision could not be loaded)
// the active revision's function of its workflow; pinned says which. st
// may be nil.
func (st *appState) fnFor(rec *Run) (fn model.Function, pinned, ok bool) {
	if st == nil {
		return model.Function{}, false, false
	}
	if fn, ok := st.pinned[rec.Revision]; ok && fn.Name == rec.Workflow {
		return fn, true, true
	}
	fn, ok = st.fns[rec.Workflow]
	return fn, false, ok
}

// holdInFlight holds, at the first Provision of app in this process, the
// revision of every run in flight (counts: by workflow and revision).
// A revision that cannot be held is logged; its runs go on with the
// active revision, whose journal check catches what does not replay.
func (e *Engine) holdInFlight(ctx context.Context, app string, counts map[[2]string]int) {
	if e.opts.Revisions == nil {
		return
	}
	for k, n := range counts {
		workflow, revision := k[0], k[1]
		fn, err := e.opts.Revisions.Function(ctx, app, workflow, revision)
		if err == nil {
			err = e.pin(ctx, app, fn, n)
		}
		if err != nil {
			e.logger.Warn("workflow runs cannot stay on their revision; they go on with the active one", "app", app, "workflow", workflow, "revision", revision, "runs", n, "error", err)
		}
	}
}
