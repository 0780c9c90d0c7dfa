package server_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/apierror"
	"github.com/nimbus-dev/nimbus/internal/guesttest"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/server"
)

// TestPublishBackpressure: a node over its budget of events in the
// duplicate window answers a publish 503 events_overloaded with
// Retry-After, and stores nothing of it; the node's limits come from
// server.Config (the flags of nimbus up).
func TestPublishBackpressure(t *testing.T) {
	t.Parallel()
	counter := guesttest.MustBuild(t, counterDir, guesttest.Reactor)
	srv, err := server.Start(context.Background(), server.Config{
		DataDir: t.TempDir(), CacheDir: cacheDir, Listen: "127.0.0.1:0", APIListen: "127.0.0.1:0",
		Logger:                slog.New(slog.NewTextHandler(io.Discard, nil)),
		EventsMaxWindowEvents: 3,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close(context.Background()) })
	if _, err := srv.PutArtifact(context.Background(), counter); err != nil {
		t.Fatal(err)
	}
	topics := []model.Topic{{Name: "orders", MaxEventBytes: 1 << 16, RetentionMS: 3_600_000},
		{Name: model.DeadLetterTopic, MaxEventBytes: 1 << 20, RetentionMS: 3_600_000}}
	if _, _, err := srv.Deploy(context.Background(), "shop", model.Spec{Functions: []model.Function{fn("sub", counter)}, Topics: topics}); err != nil {
		t.Fatal(err)
	}
	post := func(ids ...string) (*http.Response, string) {
		var evs []string
		for _, id := range ids {
			evs = append(evs, `{"specversion":"1.0","id":"`+id+`","source":"/s","type":"t"}`)
		}
		resp, err := http.Post(srv.GatewayURL()+"/_nimbus/events/shop/orders", "application/cloudevents-batch+json",
			strings.NewReader("["+strings.Join(evs, ",")+"]"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	if resp, body := post("1", "2", "3"); resp.StatusCode != 202 {
		t.Fatalf("3 events, budget 3: %d %s", resp.StatusCode, body)
	}
	resp, body := post("4")
	var e apierror.Body
	json.Unmarshal([]byte(body), &e)
	secs, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	if resp.StatusCode != 503 || e.Error == nil || e.Error.Code != "events_overloaded" || secs < 1 || secs > 125 {
		t.Fatalf("over the budget: %d Retry-After %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if !strings.Contains(e.Error.Message, "--events-max-window-events") {
		t.Fatalf("message %q does not say what to do", e.Error.Message)
	}
}
