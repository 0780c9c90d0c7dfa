package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"

	"github.com/nimbus-dev/nimbus/internal/api"
	"github.com/nimbus-dev/nimbus/internal/workflow"
)

// StartRun starts a run of app's workflow (or finds the run with that
// id) and, with a wait in req, waits for it to finish.
func (c *Client) StartRun(ctx context.Context, app, wf string, req api.StartRunRequest) (*api.StartRunResponse, error) {
	var out api.StartRunResponse
	err := c.call(ctx, http.MethodPost, "/api/v1/apps/"+url.PathEscape(app)+"/workflows/"+url.PathEscape(wf)+"/runs", req, &out)
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// Run returns a run with its timeline.
func (c *Client) Run(ctx context.Context, app, id string) (*workflow.RunInfo, error) {
	var out workflow.RunInfo
	if err := c.call(ctx, http.MethodGet, "/api/v1/apps/"+url.PathEscape(app)+"/runs/"+url.PathEscape(id), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Runs lists app's runs, newest first.
func (c *Client) Runs(ctx context.Context, app string, o workflow.ListOptions) ([]workflow.Run, error) {
	q := url.Values{}
	if o.Workflow != "" {
		q.Set("workflow", o.Workflow)
	}
	if o.State != "" {
		q.Set("state", o.State)
	}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.InFlight {
		q.Set("in_flight", "true")
	}
	var out api.ListRunsResponse
	if err := c.call(ctx, http.MethodGet, "/api/v1/apps/"+url.PathEscape(app)+"/runs?"+q.Encode(), nil, &out); err != nil {
		return nil, err
	}
	return out.Runs, nil
}

// Signal sends the signal name with payload (a JSON value; empty is null)
// to a run.
func (c *Client) Signal(ctx context.Context, app, id, name string, payload json.RawMessage) (*api.SignalResponse, error) {
	if len(payload) == 0 {
		payload = json.RawMessage("null")
	}
	var out api.SignalResponse
	path := "/api/v1/apps/" + url.PathEscape(app) + "/runs/" + url.PathEscape(id) + "/signals/" + url.PathEscape(name)
	if err := c.call(ctx, http.MethodPost, path, payload, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Cancel requests a run's cancellation.
func (c *Client) Cancel(ctx context.Context, app, id, reason string) (*workflow.Run, error) {
	return c.runAction(ctx, app, id, "cancel", api.CancelRequest{Reason: reason})
}

// Pause pauses a run.
func (c *Client) Pause(ctx context.Context, app, id, reason string) (*workflow.Run, error) {
	return c.runAction(ctx, app, id, "pause", api.CancelRequest{Reason: reason})
}

// Resume resumes a paused run.
func (c *Client) Resume(ctx context.Context, app, id string) (*workflow.Run, error) {
	return c.runAction(ctx, app, id, "resume", nil)
}

// Terminate ends a run now, without compensations.
func (c *Client) Terminate(ctx context.Context, app, id, reason string) (*workflow.Run, error) {
	return c.runAction(ctx, app, id, "terminate", api.CancelRequest{Reason: reason})
}

// Retry makes a failed run go on from its failed step.
func (c *Client) Retry(ctx context.Context, app, id string) (*workflow.Run, error) {
	return c.runAction(ctx, app, id, "retry", nil)
}

// runAction posts body to a run's control endpoint
// (/api/v1/apps/APP/runs/ID/ACTION) and returns the run it answers.
func (c *Client) runAction(ctx context.Context, app, id, action string, body any) (*workflow.Run, error) {
	var out workflow.Run
	path := "/api/v1/apps/" + url.PathEscape(app) + "/runs/" + url.PathEscape(id) + "/" + action
	if err := c.call(ctx, http.MethodPost, path, body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
