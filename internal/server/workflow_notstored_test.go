package server_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbus-dev/nimbus/internal/guesttest"
	"github.com/nimbus-dev/nimbus/internal/server"
	"github.com/nimbus-dev/nimbus/internal/workflow"
)

// TestWorkflowStartNotStored: a route's start that waits for the run's
// result, while the store refuses the workflow log's writes (the stream
// is full), is answered 503 run_not_stored, saying to start it again: not
// 404 for a run the client just started, not a hang. Once the store takes
// writes again, the same start runs and answers the result.
func TestWorkflowStartNotStored(t *testing.T) {
	t.Parallel()
	guest := guesttest.MustBuild(t, wfGuestDir, guesttest.Reactor)
	srv, err := server.Start(context.Background(), server.Config{
		DataDir: t.TempDir(), CacheDir: cacheDir, Listen: "127.0.0.1:0", APIListen: "127.0.0.1:0",
		NATSListen: "127.0.0.1:0", // to reach the store from the test
		Version:    "test", Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close(context.Background()) })
	deployWF(t, srv, guest, "")

	post := func(id string) (int, string) {
		req, _ := http.NewRequest("POST", srv.GatewayURL()+"/flow", strings.NewReader(`{"steps":2}`))
		req.Header.Set(server.HeaderRunID, id)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := post("order-0"); code != 200 {
		t.Fatalf("a start before the store refuses: %d %s", code, body)
	}

	opt, err := nats.NkeyOptionFromSeed(srv.NATSSeedFile())
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(srv.NATSURL(), opt)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := js.Stream(ctx, workflow.LogStreamName("shop"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	orig, full := info.Config, info.Config
	full.MaxMsgs, full.Discard = int64(info.State.Msgs), jetstream.DiscardNew
	if _, err := js.UpdateStream(ctx, full); err != nil {
		t.Fatal(err)
	}

	code, body := post("order-1")
	var e struct {
		Error struct{ Code, Message string }
	}
	_ = json.Unmarshal([]byte(body), &e)
	if code != http.StatusServiceUnavailable || e.Error.Code != "run_not_stored" || !strings.Contains(e.Error.Message, "start it again") {
		t.Fatalf("a start while the store refuses writes: %d %s, want 503 run_not_stored", code, body)
	}

	if _, err := js.UpdateStream(ctx, orig); err != nil {
		t.Fatal(err)
	}
	if code, body := post("order-1"); code != 200 {
		t.Fatalf("the same start once the store takes writes: %d %s", code, body)
	}
}
