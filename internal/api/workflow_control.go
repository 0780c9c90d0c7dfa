package api

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/nimbus-dev/nimbus/internal/workflow"
)

// SignalResponse answers POST .../runs/{id}/signals/{name} (202): the
// signal is durable and the run's state as it was then.
type SignalResponse struct {
	RunID  string `json:"run_id"`
	Signal string `json:"signal"`
	State  string `json:"state"`
}

// signalRun sends the request body (a JSON value; empty is null) as the
// signal's payload.
func (a *api) signalRun(w http.ResponseWriter, r *http.Request) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, workflow.MaxSignalBytes))
	if err != nil {
		return fmt.Errorf("%w: read body (a signal's payload is at most %d bytes): %w", workflow.ErrInvalid, workflow.MaxSignalBytes, err)
	}
	name := r.PathValue("name")
	run, err := a.p.Signal(r.Context(), r.PathValue("app"), r.PathValue("id"), name, body)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusAccepted, SignalResponse{RunID: run.ID, Signal: name, State: run.State})
}

// CancelRequest is the optional body of POST .../runs/{id}/cancel,
// .../pause and .../terminate.
type CancelRequest struct {
	// Reason is recorded in the run's journal. Optional.
	Reason string `json:"reason,omitempty"`
}

// cancelRun requests a run's cancellation (202 with the run, now
// cancelling); 409 when it is finished or being cancelled already.
func (a *api) cancelRun(w http.ResponseWriter, r *http.Request) error {
	req, err := controlRequest(w, r)
	if err != nil {
		return err
	}
	run, err := a.p.Cancel(r.Context(), r.PathValue("app"), r.PathValue("id"), req.Reason)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusAccepted, run)
}

// pauseRun pauses a run (202 with the run, now paused); 409 when it is
// finished, cancelling or paused already.
func (a *api) pauseRun(w http.ResponseWriter, r *http.Request) error {
	req, err := controlRequest(w, r)
	if err != nil {
		return err
	}
	run, err := a.p.Pause(r.Context(), r.PathValue("app"), r.PathValue("id"), req.Reason)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusAccepted, run)
}

// resumeRun resumes a paused run (202); 409 when it is not paused.
func (a *api) resumeRun(w http.ResponseWriter, r *http.Request) error {
	run, err := a.p.Resume(r.Context(), r.PathValue("app"), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusAccepted, run)
}

// terminateRun ends a run now (202 with the run, terminated); 409 when
// it is finished.
func (a *api) terminateRun(w http.ResponseWriter, r *http.Request) error {
	req, err := controlRequest(w, r)
	if err != nil {
		return err
	}
	run, err := a.p.Terminate(r.Context(), r.PathValue("app"), r.PathValue("id"), req.Reason)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusAccepted, run)
}

// retryRun makes a failed run go on from its failed step (202 with the
// run, running again); 409 when it is not failed or ran compensations.
func (a *api) retryRun(w http.ResponseWriter, r *http.Request) error {
	run, err := a.p.Retry(r.Context(), r.PathValue("app"), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusAccepted, run)
}

// controlRequest reads the optional body of a cancel or a pause.
func controlRequest(w http.ResponseWriter, r *http.Request) (CancelRequest, error) {
	var req CancelRequest
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 4<<10))
	if err != nil {
		return req, fmt.Errorf("%w: read body: %w", workflow.ErrInvalid, err)
	}
	if len(body) > 0 {
		if err := json.Unmarshal(body, &req); err != nil {
			return req, fmt.Errorf("%w: body is not {\"reason\": \"...\"}: %w", workflow.ErrInvalid, err)
		}
	}
	return req, nil
}
