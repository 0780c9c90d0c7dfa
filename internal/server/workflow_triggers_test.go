package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
	"github.com/nimbus-dev/nimbus/internal/guesttest"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/server"
	"github.com/nimbus-dev/nimbus/internal/workflow"
)

// topicWorkflow is the test workflow "flow" of app shop, triggered by the
// topic orders with maxAttempts attempts per event.
func topicWorkflow(guest []byte, maxAttempts int) model.Function {
	f := fn("flow", guest)
	f.Kind = model.KindWorkflow
	f.Capabilities = []string{"log", "kv:ledger", "kv:execs"}
	f.Triggers = []model.Trigger{{Name: "orders", Kind: model.TriggerTopic, Topic: "orders",
		MaxAttempts: maxAttempts, BackoffMS: 10, MaxBackoffMS: 100, DeadLetter: model.DeadLetterTopic}}
	return f
}

// The topics and buckets topicWorkflow needs.
var (
	wfTopics = []model.Topic{{Name: "orders", MaxEventBytes: 1 << 16, RetentionMS: 3_600_000},
		{Name: model.DeadLetterTopic, MaxEventBytes: 1 << 20, RetentionMS: 3_600_000}}
	wfBuckets = []model.Bucket{{Name: "ledger", MaxValueBytes: 1 << 10, History: 1}, {Name: "execs", MaxValueBytes: 1 << 10, History: 1}}
)

// TestWorkflowTriggerStarts: a workflow with a topic trigger starts one
// run per event, named after the event ("<workflow>-<event id>"), whose
// input is the event in CloudEvents' JSON format; the same event
// published again starts nothing; a cron trigger starts a run per tick.
func TestWorkflowTriggerStarts(t *testing.T) {
	t.Parallel()
	guest := guesttest.MustBuild(t, wfGuestDir, guesttest.Reactor)
	srv := start(t, t.TempDir())
	if _, err := srv.PutArtifact(context.Background(), guest); err != nil {
		t.Fatal(err)
	}
	onTopic := topicWorkflow(guest, 3)
	onCron := onTopic
	onCron.Name = "tick"
	onCron.Triggers = []model.Trigger{{Name: "every-second", Kind: model.TriggerCron, Cron: "@every 1s",
		CatchUpMS: model.CatchUpNoLimit, MaxAttempts: 3, BackoffMS: 10, MaxBackoffMS: 100, DeadLetter: model.DeadLetterTopic}}
	_, _, err := srv.Deploy(context.Background(), "shop", model.Spec{Functions: []model.Function{onTopic, onCron}, Topics: wfTopics, Buckets: wfBuckets})
	if err != nil {
		t.Fatalf("deploy: %v", err)
	}
	ctx := context.Background()
	ev := func(id string) cloudevents.Event {
		return cloudevents.Event{SpecVersion: "1.0", ID: id, Source: "/shop", Type: "order.created",
			DataContentType: "application/json", Data: []byte(`{"steps":1}`)}
	}
	if _, _, err := srv.Publish(ctx, "shop", "orders", []cloudevents.Event{ev("o-1"), ev("o-2")}, ""); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"flow-o-1", "flow-o-2"} {
		poll(t, "run "+id, func() error {
			_, err := srv.Workflows().Get(ctx, "shop", id)
			return err
		})
		r := finished(t, srv, id)
		var in struct {
			ID, Type string
			Data     json.RawMessage
		}
		if err := json.Unmarshal(r.Input, &in); err != nil || r.State != workflow.StateCompleted ||
			in.ID != strings.TrimPrefix(id, "flow-") || in.Type != "order.created" || string(in.Data) != `{"steps":1}` {
			t.Fatalf("run %s: %s %q, input %s (%v)", id, r.State, r.Error, r.Input, err)
		}
	}
	// The same event again (the log's duplicate check aside, a
	// redelivery): no second run.
	if _, _, err := srv.Publish(ctx, "shop", "orders", []cloudevents.Event{ev("o-1")}, ""); err != nil {
		t.Fatal(err)
	}
	poll(t, "a cron run", func() error {
		runs, err := srv.Workflows().List(ctx, "shop", workflow.ListOptions{Workflow: "tick"})
		if err != nil {
			return err
		}
		if len(runs) == 0 {
			return errors.New("no run of tick yet")
		}
		if !strings.HasPrefix(runs[0].ID, "tick-") {
			return errorf("cron run id %q", runs[0].ID)
		}
		return nil
	})
	runs, err := srv.Workflows().List(ctx, "shop", workflow.ListOptions{Workflow: "flow"})
	if err != nil || len(runs) != 2 {
		t.Fatalf("runs of flow: %d, %v; want 2 (one per event)", len(runs), err)
	}
	if got := server.TriggerRunID("flow", "/shop", "a b"); workflow.CheckRunID(got) != nil || got == server.TriggerRunID("flow", "/other", "a b") {
		t.Fatalf("TriggerRunID of an id that is not a run id: %q", got)
	}
}

// TestWorkflowTriggerWaitsAtActiveBound: with --max-active-runs 1 and a
// slow run active (started through the API), three events at once for the
// workflow: the trigger's starts wait for that run to end instead of
// failing, so each event still becomes its run (with one attempt per
// event: none is retried or dead-lettered), created after the slow run
// ended, and all complete.
func TestWorkflowTriggerWaitsAtActiveBound(t *testing.T) {
	t.Parallel()
	guest := guesttest.MustBuild(t, wfGuestDir, guesttest.Reactor)
	srv := startConfig(t, func(c *server.Config) { c.MaxActiveRuns = 1 })
	if _, err := srv.PutArtifact(context.Background(), guest); err != nil {
		t.Fatal(err)
	}
	_, _, err := srv.Deploy(context.Background(), "shop", model.Spec{Functions: []model.Function{topicWorkflow(guest, 1)}, Topics: wfTopics, Buckets: wfBuckets})
	if err != nil {
		t.Fatalf("deploy: %v", err)
	}
	ctx := context.Background()
	if _, _, err := srv.Workflows().Start(ctx, "shop", "flow", "slow", []byte(`{"steps":2,"step_ms":500}`)); err != nil {
		t.Fatal(err)
	}
	poll(t, "the slow run active", func() error {
		if n := srv.Workflows().ActiveRuns(); n != 1 {
			return errorf("%d runs active", n)
		}
		return nil
	})
	var evs []cloudevents.Event
	for _, id := range []string{"o-1", "o-2", "o-3"} {
		evs = append(evs, cloudevents.Event{SpecVersion: "1.0", ID: id, Source: "/shop", Type: "order.created",
			DataContentType: "application/json", Data: []byte(`{}`)})
	}
	if _, _, err := srv.Publish(ctx, "shop", "orders", evs, ""); err != nil {
		t.Fatal(err)
	}
	slow := finished(t, srv, "slow")
	for _, id := range []string{"flow-o-1", "flow-o-2", "flow-o-3"} {
		poll(t, "run "+id, func() error {
			_, err := srv.Workflows().Get(ctx, "shop", id)
			return err
		})
		r := finished(t, srv, id)
		if r.State != workflow.StateCompleted {
			t.Fatalf("run %s: %s %q", id, r.State, r.Error)
		}
		if r.Created.Before(slow.Updated) {
			t.Fatalf("run %s created at %s, before the slow run ended at %s: its start did not wait", id, r.Created, slow.Updated)
		}
	}
}
