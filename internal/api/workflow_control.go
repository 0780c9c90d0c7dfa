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

// CancelRequest is the optional body of POST .../runs/{id}/cancel.
type CancelRequest struct {
	// Reason is recorded in the run's journal. Optional.
	Reason string `json:"reason,omitempty"`
}

// cancelRun requests a run's cancellation (202 with the run, now
// cancelling); 409 when it is finished or being cancelled already.
func (a *api) cancelRun(w http.ResponseWriter, r *http.Request) error {
	var req CancelRequest
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 4<<10))
	if err != nil {
		return fmt.Errorf("%w: read body: %w", workflow.ErrInvalid, err)
	}
	if len(body) > 0 {
		if err := json.Unmarshal(body, &req); err != nil {
			return fmt.Errorf("%w: body is not a cancel request ({\"reason\": \"...\"}): %w", workflow.ErrInvalid, err)
		}
	}
	run, err := a.p.Cancel(r.Context(), r.PathValue("app"), r.PathValue("id"), req.Reason)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusAccepted, run)
}
