package server_test

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
	"github.com/nimbus-dev/nimbus/internal/guesttest"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/server"
	"github.com/nimbus-dev/nimbus/internal/workflow"
)

// deployTopicWF deploys app "shop" with the test workflow "flow" granted
// grants (beside its buckets) and the topic "payments".
func deployTopicWF(t *testing.T, srv *server.Server, guest []byte, grants ...string) {
	t.Helper()
	f := fn("flow", guest)
	f.Kind = model.KindWorkflow
	f.Capabilities = append([]string{"log", "kv:ledger", "kv:execs"}, grants...)
	if _, err := srv.PutArtifact(context.Background(), guest); err != nil {
		t.Fatal(err)
	}
	_, _, err := srv.Deploy(context.Background(), "shop", model.Spec{Functions: []model.Function{f},
		Buckets: []model.Bucket{{Name: "ledger", MaxValueBytes: 1 << 10, History: 1}, {Name: "execs", MaxValueBytes: 1 << 10, History: 1}},
		Topics: []model.Topic{{Name: "payments", MaxEventBytes: 1 << 16, RetentionMS: 3_600_000},
			{Name: model.DeadLetterTopic, MaxEventBytes: 1 << 20, RetentionMS: 3_600_000}}})
	if err != nil {
		t.Fatalf("deploy: %v", err)
	}
}

func publishPayment(t *testing.T, srv *server.Server, id, typ, order string) {
	t.Helper()
	publishPayments(t, srv, typ, map[string]string{id: order})
}

// publishPayments publishes one event per id (id -> order) in one request:
// they are stored together, as one pack.
func publishPayments(t *testing.T, srv *server.Server, typ string, orders map[string]string) {
	t.Helper()
	var evs []cloudevents.Event
	for _, id := range slices.Sorted(maps.Keys(orders)) {
		data, _ := json.Marshal(map[string]string{"order": orders[id]})
		evs = append(evs, cloudevents.Event{SpecVersion: "1.0", ID: id, Source: "/bank", Type: typ, DataContentType: "application/json", Data: data})
	}
	if _, _, err := srv.Publish(context.Background(), "shop", "payments", evs, ""); err != nil {
		t.Fatal(err)
	}
}

// TestWorkflowWaitForTopic: a run waiting for a topic event takes the
// first event stored after its wait began that matches its filter (type
// and a data field), not an earlier one nor one that does not match;
// the wait survives a restart; a replay after the wait (the run sleeps,
// then runs again) returns the same event, though another matching event
// came meanwhile.
func TestWorkflowWaitForTopic(t *testing.T) {
	t.Parallel()
	guest := guesttest.MustBuild(t, wfGuestDir, guesttest.Reactor)
	dir := t.TempDir()
	srv := start(t, dir)
	deployTopicWF(t, srv, guest, "subscribe:payments")
	ctx := context.Background()
	publishPayment(t, srv, "early", "paid", "o-1") // before the wait: not taken
	in := `{"steps":2,"wait_topic":"payments","filter":{"type":"paid","data.order":"o-1"},"sleep_ms":1500}`
	if _, _, err := srv.Workflows().Start(ctx, "shop", "flow", "pay", []byte(in)); err != nil {
		t.Fatal(err)
	}
	waitState(t, srv, "pay", workflow.StateWaiting)
	// A second run on the same topic, waiting for another order: one
	// follower serves both, before and after the restart.
	in2 := `{"steps":1,"wait_topic":"payments","filter":{"data.order":"o-3"}}`
	if _, _, err := srv.Workflows().Start(ctx, "shop", "flow", "pay2", []byte(in2)); err != nil {
		t.Fatal(err)
	}
	waitState(t, srv, "pay2", workflow.StateWaiting)
	publishPayment(t, srv, "other-order", "paid", "o-2")
	publishPayment(t, srv, "other-type", "refunded", "o-1")

	srv.Close(ctx)
	srv = start(t, dir)
	waitState(t, srv, "pay", workflow.StateWaiting)
	publishPayment(t, srv, "match", "paid", "o-1")
	waitState(t, srv, "pay", workflow.StateSleeping) // past the wait
	publishPayment(t, srv, "later", "paid", "o-1")

	// In one request with another event before it: the follower reads
	// every event of a pack, not only its first.
	publishPayments(t, srv, "paid", map[string]string{"a-filler": "o-9", "third": "o-3"})
	if r := waitRun(t, srv, "pay2"); r.State != workflow.StateCompleted || !strings.Contains(string(r.Result), `"id":"third"`) {
		t.Fatalf("second run: %s %s %q, want completed with the event \"third\"", r.State, r.Result, r.Error)
	}
	r := waitRun(t, srv, "pay")
	if r.State != workflow.StateCompleted {
		t.Fatalf("run %s %q, want completed", r.State, r.Error)
	}
	var out struct {
		Event struct {
			ID   string `json:"id"`
			Type string `json:"type"`
			Data struct {
				Order string `json:"order"`
			} `json:"data"`
		} `json:"event"`
	}
	if err := json.Unmarshal(r.Result, &out); err != nil {
		t.Fatal(err)
	}
	if out.Event.ID != "match" || out.Event.Type != "paid" || out.Event.Data.Order != "o-1" {
		t.Fatalf("the run took %+v, want the event \"match\" (the first matching one after its wait began)", out.Event)
	}
}

// TestWorkflowWaitForTopicDeniedAndTimeout: without subscribe:<topic> the
// wait is denied (the run fails saying which grant to add); with it, a
// wait whose filter nothing matches times out.
// (A grant for an undeclared topic is refused by the manifest, so the
// topic check behind the grant is the engine's own, for other SDKs.)
func TestWorkflowWaitForTopicDeniedAndTimeout(t *testing.T) {
	t.Parallel()
	guest := guesttest.MustBuild(t, wfGuestDir, guesttest.Reactor)
	srv := start(t, t.TempDir())
	ctx := context.Background()
	deployTopicWF(t, srv, guest)
	in := `{"steps":1,"wait_topic":"payments","filter":{"type":"paid"},"topic_timeout_ms":50}`
	if _, _, err := srv.Workflows().Start(ctx, "shop", "flow", "nogrant", []byte(in)); err != nil {
		t.Fatal(err)
	}
	if r := waitRun(t, srv, "nogrant"); r.State != workflow.StateFailed || !strings.Contains(r.Error, "subscribe:payments") {
		t.Fatalf("run without the grant: %s %q, want failed naming subscribe:payments", r.State, r.Error)
	}
	deployTopicWF(t, srv, guest, "subscribe:payments")
	if _, _, err := srv.Workflows().Start(ctx, "shop", "flow", "late", []byte(in)); err != nil {
		t.Fatal(err)
	}
	publishPayment(t, srv, "refund", "refunded", "o-1")
	if r := waitRun(t, srv, "late"); r.State != workflow.StateFailed || !strings.Contains(r.Error, "timed out") {
		t.Fatalf("run whose filter nothing matches: %s %q, want failed by its timeout", r.State, r.Error)
	}
	bad := `{"steps":1,"wait_topic":"refunds"}`
	if _, _, err := srv.Workflows().Start(ctx, "shop", "flow", "undeclared", []byte(bad)); err != nil {
		t.Fatal(err)
	}
	if r := waitRun(t, srv, "undeclared"); r.State != workflow.StateFailed || !strings.Contains(r.Error, "subscribe:refunds") {
		t.Fatalf("run waiting on a topic it may not read: %s %q, want failed naming subscribe:refunds", r.State, r.Error)
	}
}
