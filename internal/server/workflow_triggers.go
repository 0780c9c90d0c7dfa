package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/scheduler"
	"github.com/nimbus-dev/nimbus/internal/workflow"
)

// triggerStarts is what the event dispatcher invokes: a function's
// triggers go to the scheduler; a workflow's start one run per event
// (topic, cron or bucket change) and answer once the start is durable,
// without waiting for the run. The run id comes from the event
// (TriggerRunID), so a redelivered event finds its run and starts
// nothing: the dispatcher's at-least-once delivery becomes one run.
type triggerStarts struct {
	sched *scheduler.Scheduler
	wf    *workflow.Engine
}

func (t triggerStarts) Invoke(ctx context.Context, app, function string, req *runtime.Request) (*runtime.Response, error) {
	fn, ok := t.sched.Function(app, function)
	if !ok || !fn.IsWorkflow() {
		return t.sched.Invoke(ctx, app, function, req)
	}
	id := TriggerRunID(function, req.Header.Get("Ce-Source"), req.Header.Get("Ce-Id"))
	// While the app has as many active runs as the node allows, the start
	// waits: its event stays in the log, which holds the backlog on disk.
	if err := t.wf.StartWait(ctx, app); err != nil {
		return nil, fmt.Errorf("%w: workflow %s/%s: the app's active runs stayed at the node's bound (nimbus up --max-active-runs): %w", scheduler.ErrBusy, app, function, err)
	}
	run, _, err := t.wf.Start(ctx, app, function, id, eventInput(req))
	if err != nil {
		return nil, err // the dispatcher retries it, then dead-letters it
	}
	b, _ := json.Marshal(map[string]string{"run_id": run.ID, "state": run.State})
	return &runtime.Response{Status: http.StatusAccepted, Header: http.Header{HeaderRunID: {run.ID}, "Content-Type": {"application/json"}}, Body: b}, nil
}

// TriggerRunID is the id of the run a trigger of workflow starts for the
// event (source, id): "<workflow>-<event id>" when that is a valid run
// id, else "<workflow>-ev-<hash of source and id>".
func TriggerRunID(workflowName, source, id string) string {
	if s := workflowName + "-" + id; id != "" && workflow.CheckRunID(s) == nil {
		return s
	}
	sum := sha256.Sum256([]byte(source + "\x00" + id))
	s := workflowName + "-ev-" + hex.EncodeToString(sum[:12])
	if workflow.CheckRunID(s) != nil {
		return "ev-" + hex.EncodeToString(sum[:16])
	}
	return s
}

// eventInput is the run's input: the event in CloudEvents' JSON format
// (its attributes, and data: a JSON value, or data_base64 for other
// bytes).
func eventInput(req *runtime.Request) []byte {
	ev := map[string]any{}
	for k, v := range req.Header {
		if name, ok := strings.CutPrefix(strings.ToLower(k), "ce-"); ok && len(v) > 0 {
			ev[name] = v[0]
		}
	}
	if ct := req.Header.Get("Content-Type"); ct != "" {
		ev["datacontenttype"] = ct
	}
	switch {
	case len(req.Body) == 0:
	case json.Valid(req.Body):
		ev["data"] = json.RawMessage(req.Body)
	default:
		ev["data_base64"] = req.Body // []byte encodes as base64
	}
	b, _ := json.Marshal(ev)
	return b
}
