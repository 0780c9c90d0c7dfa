package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/nimbus-dev/nimbus/internal/workflow"
)

// Workflows is the part of the Platform behind workflow runs.
type Workflows interface {
	// StartRun starts (or finds, by id) a run, then waits up to wait for
	// it to finish; created is false when the id named an existing run.
	StartRun(ctx context.Context, app, wf, id string, input []byte, wait time.Duration) (run *workflow.Run, created bool, err error)
	Run(ctx context.Context, app, id string) (*workflow.RunInfo, error)
	Runs(ctx context.Context, app string, o workflow.ListOptions) ([]workflow.Run, error)
	// Signal sends the signal name with payload to a run.
	Signal(ctx context.Context, app, id, name string, payload []byte) (*workflow.Run, error)
	// Cancel requests a run's cancellation.
	Cancel(ctx context.Context, app, id, reason string) (*workflow.Run, error)
	// Pause pauses a run; Resume resumes it.
	Pause(ctx context.Context, app, id, reason string) (*workflow.Run, error)
	Resume(ctx context.Context, app, id string) (*workflow.Run, error)
	// Terminate ends a run now, without compensations.
	Terminate(ctx context.Context, app, id, reason string) (*workflow.Run, error)
	// Retry makes a failed run go on from its failed step.
	Retry(ctx context.Context, app, id string) (*workflow.Run, error)
}

// StartRunRequest is the body of POST .../workflows/{workflow}/runs.
type StartRunRequest struct {
	// ID names the run; starting an id that exists returns that run.
	// Optional: default a random id.
	ID string `json:"id,omitempty"`
	// Input is the workflow's input, any JSON value. Optional: null.
	Input json.RawMessage `json:"input,omitempty"`
	// Wait is how long to wait for the run to finish, as a Go duration,
	// at most 1m. Optional: default 0, answer at once.
	Wait string `json:"wait,omitempty"`
}

// StartRunResponse answers a start.
type StartRunResponse struct {
	Run     *workflow.Run `json:"run"`
	Created bool          `json:"created"`
}

// maxStartBody caps a start request (the input has its own limit, the
// workflow's max_request_body).
const maxStartBody = 8 << 20

func (a *api) startRun(w http.ResponseWriter, r *http.Request) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxStartBody))
	if err != nil {
		return fmt.Errorf("%w: read body: %w", workflow.ErrInvalid, err)
	}
	var req StartRunRequest
	if len(body) > 0 {
		if err := json.Unmarshal(body, &req); err != nil {
			return fmt.Errorf("%w: body is not a start request ({\"id\": ..., \"input\": ..., \"wait\": \"5s\"}): %w", workflow.ErrInvalid, err)
		}
	}
	var wait time.Duration
	if req.Wait != "" {
		if wait, err = time.ParseDuration(req.Wait); err != nil || wait < 0 {
			return fmt.Errorf("%w: wait %q is not a duration such as 5s", workflow.ErrInvalid, req.Wait)
		}
		wait = min(wait, time.Minute)
	}
	run, created, err := a.p.StartRun(r.Context(), r.PathValue("app"), r.PathValue("workflow"), req.ID, req.Input, wait)
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	w.Header().Set("Location", "/api/v1/apps/"+run.App+"/runs/"+run.ID)
	return writeJSON(w, status, StartRunResponse{Run: run, Created: created})
}

func (a *api) getRun(w http.ResponseWriter, r *http.Request) error {
	info, err := a.p.Run(r.Context(), r.PathValue("app"), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, info)
}

// ListRunsResponse answers GET .../runs.
type ListRunsResponse struct {
	Runs []workflow.Run `json:"runs"`
}

func (a *api) listRuns(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	o := workflow.ListOptions{Workflow: q.Get("workflow"), State: q.Get("state"), InFlight: q.Get("in_flight") == "true"}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 10000 {
			return errors.Join(workflow.ErrInvalid, fmt.Errorf("limit %q: use 1 to 10000", s))
		}
		o.Limit = n
	}
	switch o.State {
	case "", workflow.StateRunning, workflow.StateSleeping, workflow.StateWaiting, workflow.StatePaused, workflow.StateCompleted, workflow.StateFailed,
		workflow.StateCancelling, workflow.StateCancelled, workflow.StateTerminated:
	default:
		return fmt.Errorf("%w: state %q: use running, sleeping, waiting, paused, cancelling, completed, failed, cancelled or terminated", workflow.ErrInvalid, o.State)
	}
	runs, err := a.p.Runs(r.Context(), r.PathValue("app"), o)
	if err != nil {
		return err
	}
	if runs == nil {
		runs = []workflow.Run{}
	}
	return writeJSON(w, http.StatusOK, ListRunsResponse{Runs: runs})
}
