package server_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/api"
	"github.com/nimbus-dev/nimbus/internal/client"
	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
	"github.com/nimbus-dev/nimbus/internal/guesttest"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/security"
	"github.com/nimbus-dev/nimbus/internal/server"
)

// TestDeadLettersListAndReplayThroughAPI drives the dead-letter API with
// the orders example's guest: "count" counts events in a bucket, "audit"
// fails them until a new revision fixes it.
func TestDeadLettersListAndReplayThroughAPI(t *testing.T) {
	t.Parallel()
	orders := guesttest.MustBuild(t, "../../examples/orders/orders", guesttest.Reactor)
	srv := start(t, t.TempDir())
	ctx := context.Background()
	if _, err := srv.PutArtifact(ctx, orders); err != nil {
		t.Fatal(err)
	}
	role := func(name, r string, triggers ...model.Trigger) model.Function {
		f := fn(name, orders)
		f.Env = map[string]string{"ROLE": r}
		f.Capabilities = []string{"kv:counts"}
		f.Triggers = triggers
		return f
	}
	trig := func(attempts int) model.Trigger {
		return model.Trigger{Name: "t", Kind: model.TriggerTopic, Topic: "orders",
			MaxAttempts: attempts, BackoffMS: 10, MaxBackoffMS: 100, DeadLetter: model.DeadLetterTopic}
	}
	deploy := func(fns ...model.Function) {
		t.Helper()
		_, _, err := srv.Deploy(ctx, "shop", model.Spec{Functions: fns,
			Topics: []model.Topic{{Name: "orders", MaxEventBytes: 1 << 16, RetentionMS: 3_600_000},
				{Name: model.DeadLetterTopic, MaxEventBytes: 1 << 20, RetentionMS: 3_600_000}},
			Buckets: []model.Bucket{{Name: "counts", MaxValueBytes: 1 << 10, History: 1}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	deploy(role("count", "count", trig(3)), role("audit", "audit", trig(2)))

	c := client.New(srv.APIURL(), srv.AdminToken())
	for _, id := range []string{"a1", "a2"} {
		e := &cloudevents.Event{SpecVersion: cloudevents.SpecVersion, ID: id, Source: "/test", Type: "order.created",
			DataContentType: "application/json", Data: []byte(`{"total": 12}`)}
		if _, err := c.Publish(ctx, "shop", "orders", e); err != nil {
			t.Fatal(err)
		}
	}
	var list *api.DeadLetterList
	poll(t, "two dead letters", func() error {
		var err error
		if list, err = c.DeadLetters(ctx, "shop", client.DeadLetterQuery{}); err != nil {
			return err
		}
		if len(list.DeadLetters) != 2 {
			return fmt.Errorf("%d dead letters", len(list.DeadLetters))
		}
		return nil
	})
	for _, dl := range list.DeadLetters {
		if dl.Function != "audit" || dl.Trigger != "t" || dl.Topic != "orders" || dl.Attempts != 2 ||
			!strings.Contains(dl.Error, "audit service unavailable") || dl.Type != "order.created" ||
			dl.Data == nil || *dl.Data != `{"total": 12}` || dl.DataSize != len(`{"total": 12}`) || dl.Seq == 0 {
			t.Fatalf("dead letter %+v", dl)
		}
	}
	waitCount(t, srv, 2) // count ran each event once

	// Pages: newest first, one at a time.
	page, err := c.DeadLetters(ctx, "shop", client.DeadLetterQuery{Limit: 1, Newest: true})
	if err != nil || len(page.DeadLetters) != 1 || page.DeadLetters[0].Seq != list.DeadLetters[1].Seq || page.Next == 0 {
		t.Fatalf("newest page: %+v %v", page, err)
	}
	page, err = c.DeadLetters(ctx, "shop", client.DeadLetterQuery{Limit: 1, Newest: true, After: page.Next})
	if err != nil || len(page.DeadLetters) != 1 || page.DeadLetters[0].Seq != list.DeadLetters[0].Seq || page.Next != 0 {
		t.Fatalf("second newest page: %+v %v", page, err)
	}

	// Scopes: a read token lists, it does not replay.
	reader, err := srv.Tokens().Create(ctx, "reader", []security.Scope{security.ScopeRead})
	if err != nil {
		t.Fatal(err)
	}
	rc := client.New(srv.APIURL(), reader)
	if _, err := rc.DeadLetters(ctx, "shop", client.DeadLetterQuery{}); err != nil {
		t.Fatalf("read token listing: %v", err)
	}
	wantCode := func(err error, status int, code string) {
		t.Helper()
		var ce *client.Error
		if !errors.As(err, &ce) || ce.Status != status || ce.Code != code {
			t.Fatalf("got %v, want %d %s", err, status, code)
		}
	}
	_, err = rc.ReplayDeadLetters(ctx, "shop", api.ReplayRequest{All: true})
	wantCode(err, 403, "forbidden")
	_, err = c.ReplayDeadLetters(ctx, "shop", api.ReplayRequest{})
	wantCode(err, 400, "bad_request")
	_, err = c.ReplayDeadLetters(ctx, "shop", api.ReplayRequest{All: true, Seqs: []uint64{1}})
	wantCode(err, 400, "bad_request")
	_, err = c.ReplayDeadLetters(ctx, "shop", api.ReplayRequest{All: true, Topic: "nope"})
	wantCode(err, 404, "topic_not_found")
	_, err = c.ReplayDeadLetters(ctx, "shop", api.ReplayRequest{All: true, Topic: model.DeadLetterTopic})
	wantCode(err, 403, "topic_reserved")
	_, err = c.ReplayDeadLetters(ctx, "nope", api.ReplayRequest{All: true})
	wantCode(err, 404, "app_not_found")
	_, err = c.DeadLetters(ctx, "nope", client.DeadLetterQuery{})
	wantCode(err, 404, "app_not_found")

	// A new revision fixes audit (it now counts too); replay the first
	// dead letter to it: the count goes up by one, count does not run it
	// again.
	deploy(role("count", "count", trig(3)), role("audit", "count", trig(2)))
	ans, err := c.ReplayDeadLetters(ctx, "shop", api.ReplayRequest{Seqs: []uint64{list.DeadLetters[0].Seq}})
	if err != nil || ans.Replayed != 1 || ans.Failed != 0 || ans.Results[0].To != "audit/t" || ans.Results[0].NewSeq == 0 {
		t.Fatalf("replay: %+v %v", ans, err)
	}
	waitCount(t, srv, 3)
	ans, err = c.ReplayDeadLetters(ctx, "shop", api.ReplayRequest{Seqs: []uint64{list.DeadLetters[0].Seq}})
	if err != nil || ans.Failed != 1 || ans.Results[0].Code != "dead_letter_not_found" {
		t.Fatalf("replay of a replayed dead letter: %+v %v", ans, err)
	}

	// A revision without audit: its dead letter has no trigger to go back
	// to, and the answer says how to send it to the topic instead.
	deploy(role("count", "count", trig(3)))
	ans, err = c.ReplayDeadLetters(ctx, "shop", api.ReplayRequest{All: true})
	if err != nil || ans.Failed != 1 || ans.Results[0].Code != "trigger_gone" ||
		!strings.Contains(ans.Results[0].Error, "audit") || !strings.Contains(ans.Results[0].Error, "--topic") {
		t.Fatalf("replay to a removed trigger: %+v %v", ans, err)
	}
	ans, err = c.ReplayDeadLetters(ctx, "shop", api.ReplayRequest{All: true, Topic: "orders"})
	if err != nil || ans.Replayed != 1 || ans.Results[0].To != "topic orders" {
		t.Fatalf("replay to the topic: %+v %v", ans, err)
	}
	waitCount(t, srv, 4)
	if list, err := c.DeadLetters(ctx, "shop", client.DeadLetterQuery{}); err != nil || len(list.DeadLetters) != 0 {
		t.Fatalf("dead letters left: %+v %v", list, err)
	}
}

// waitCount waits until the orders guest's count is want.
func waitCount(t *testing.T, srv *server.Server, want int) {
	t.Helper()
	poll(t, fmt.Sprintf("orders.total = %d", want), func() error {
		v, _, err := srv.KV().Get(context.Background(), "shop", "counts", "orders.total")
		if err != nil {
			return err
		}
		if string(v) != fmt.Sprint(want) {
			return fmt.Errorf("orders.total = %s", v)
		}
		return nil
	})
}

// poll calls cond until it returns nil, for at most a minute.
func poll(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
