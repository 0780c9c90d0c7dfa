package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/api"
	"github.com/nimbus-dev/nimbus/internal/apierror"
	"github.com/nimbus-dev/nimbus/internal/events"
	"github.com/nimbus-dev/nimbus/internal/guesttest"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/server"
)

const sdkGuestDir = "../runtime/wasm/testdata/sdkguest"

// postAsync sends an async request to the gateway and decodes the 202.
func postAsync(t *testing.T, url, body, idemKey string) (events.Invocation, bool, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Content-Type", "text/plain")
	req.Header.Set("Prefer", "respond-async, wait=0")
	if idemKey != "" {
		req.Header.Set("Idempotency-Key", idemKey)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST %s with Prefer: respond-async: %d %s", url, resp.StatusCode, b)
	}
	var acc struct {
		ID        string `json:"id"`
		StatusURL string `json:"status_url"`
		Duplicate bool   `json:"duplicate"`
	}
	if err := json.Unmarshal(b, &acc); err != nil || acc.ID == "" {
		t.Fatalf("202 body %q: %v", b, err)
	}
	if resp.Header.Get("Location") != acc.StatusURL || !strings.HasSuffix(acc.StatusURL, "/"+acc.ID) {
		t.Fatalf("Location %q, status_url %q, id %q", resp.Header.Get("Location"), acc.StatusURL, acc.ID)
	}
	return events.Invocation{ID: acc.ID}, acc.Duplicate, resp.Header
}

// waitDone polls an invocation until it is final (bounded).
func waitDone(t *testing.T, srv *server.Server, id string) *events.Invocation {
	t.Helper()
	var inv *events.Invocation
	poll(t, "invocation "+id+" done", func() error {
		var err error
		if inv, err = srv.Invocation(context.Background(), id); err != nil {
			t.Fatalf("invocation %s: %v", id, err)
		}
		if !inv.Done() {
			return fmt.Errorf("not done; last state %+v", inv)
		}
		return nil
	})
	return inv
}

// TestAsyncInvocation: Prefer: respond-async on a route answers 202 with
// an id; the invocation runs once with the original request; its result,
// a retried failure ending in the dead-letter topic, and idempotency keys
// are visible through the invocation record and the API.
func TestAsyncInvocation(t *testing.T) {
	t.Parallel()
	guest := guesttest.MustBuild(t, sdkGuestDir, guesttest.Reactor)
	srv, err := server.Start(context.Background(), server.Config{
		DataDir: t.TempDir(), CacheDir: cacheDir, Listen: "127.0.0.1:0", APIListen: "127.0.0.1:0",
		AsyncMaxAttempts: 3, AsyncBackoff: 10 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close(context.Background()) })
	f := fn("g", guest, "/{path...}")
	f.MaxInstances = 1
	h := fn("h", guest) // its own retry policy: 2 attempts
	h.Async = &model.AsyncPolicy{MaxAttempts: 2, BackoffMS: 10, MaxBackoffMS: 10}
	if _, err := srv.PutArtifact(context.Background(), guest); err != nil {
		t.Fatal(err)
	}
	topics := []model.Topic{{Name: model.DeadLetterTopic, MaxEventBytes: 1 << 20, RetentionMS: 3_600_000}}
	if _, _, err := srv.Deploy(context.Background(), "jobs", model.Spec{Functions: []model.Function{f, h}, Topics: topics}); err != nil {
		t.Fatal(err)
	}

	// Success: the function sees the original request; the record keeps
	// its answer.
	acc, _, hdr := postAsync(t, srv.GatewayURL()+"/echo?x=1", "hi", "")
	if hdr.Get("Preference-Applied") != "respond-async" {
		t.Errorf("Preference-Applied = %q", hdr.Get("Preference-Applied"))
	}
	inv := waitDone(t, srv, acc.ID)
	if inv.State != events.StateSucceeded || inv.Status != 201 || inv.Attempts != 1 || inv.Function != "g" || inv.App != "jobs" {
		t.Fatalf("record: %+v", inv)
	}
	if body := string(inv.Body); !strings.Contains(body, "POST /echo?x=1") || !strings.HasSuffix(body, "body=hi") {
		t.Fatalf("the function saw another request: %q", body)
	}

	// The same through the API, with a read token.
	req, _ := http.NewRequest("GET", srv.APIURL()+"/api/v1/invocations/"+acc.ID, nil)
	req.Header.Set("Authorization", "Bearer "+srv.AdminToken())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var viaAPI events.Invocation
	json.NewDecoder(resp.Body).Decode(&viaAPI)
	resp.Body.Close()
	if resp.StatusCode != 200 || viaAPI.State != events.StateSucceeded || viaAPI.ID != acc.ID {
		t.Fatalf("GET /api/v1/invocations/%s: %d %+v", acc.ID, resp.StatusCode, viaAPI)
	}

	// Idempotency-Key: the same key gives the same invocation, run once,
	// while it is queued and after it finished.
	countBefore := count(t, srv)
	a1, dup1, _ := postAsync(t, srv.GatewayURL()+"/echo", "once", "order-42")
	a2, dup2, _ := postAsync(t, srv.GatewayURL()+"/echo", "once", "order-42")
	if a1.ID != a2.ID || dup1 || !dup2 {
		t.Fatalf("same Idempotency-Key: ids %s, %s duplicate %v, %v", a1.ID, a2.ID, dup1, dup2)
	}
	waitDone(t, srv, a1.ID)
	a3, dup3, _ := postAsync(t, srv.GatewayURL()+"/echo", "once", "order-42")
	if a3.ID != a1.ID || !dup3 {
		t.Fatalf("Idempotency-Key after completion: id %s duplicate %v, want %s", a3.ID, dup3, a1.ID)
	}
	if n := count(t, srv) - countBefore; n != 2 { // the echo, plus the /count call itself
		t.Fatalf("the idempotent invocation ran %d times (want 1)", n-1)
	}

	// A function that always fails: retried, then failed and dead-lettered.
	bad, _, _ := postAsync(t, srv.GatewayURL()+"/panic", "", "")
	inv = waitDone(t, srv, bad.ID)
	if inv.State != events.StateFailed || inv.Attempts != 3 || inv.DeadLetter != model.DeadLetterTopic || inv.Error == "" {
		t.Fatalf("failing invocation: %+v", inv)
	}
	// Its dead letter replays to the async trigger as a new invocation.
	page, err := srv.DeadLetters(context.Background(), "jobs", events.DeadLetterQuery{})
	if err != nil || len(page.Letters) != 1 || page.Letters[0].Function != events.AsyncTopic || page.Letters[0].Event.Subject != "g" {
		t.Fatalf("dead letters: %v %+v", err, page)
	}
	res, err := srv.ReplayDeadLetters(context.Background(), "jobs", api.ReplayRequest{Seqs: []uint64{page.Letters[0].Seq}})
	if err != nil || len(res) != 1 || res[0].Err != nil || res[0].NewSeq == 0 {
		t.Fatalf("replay: %v %+v", err, res)
	}
	inv = waitDone(t, srv, events.AsyncID(res[0].NewSeq, 0))
	if inv.State != events.StateFailed || inv.Attempts != 3 || inv.Function != "g" {
		t.Fatalf("replayed invocation: %+v", inv)
	}

	// A function's own policy (manifest async:) overrides the node's.
	id, _, err := srv.EnqueueInvocation(context.Background(), "jobs", "h",
		&runtime.Request{Method: "GET", Path: "/panic", Header: http.Header{}}, "")
	if err != nil {
		t.Fatal(err)
	}
	if inv = waitDone(t, srv, id); inv.State != events.StateFailed || inv.Attempts != 2 {
		t.Fatalf("invocation of h (max_attempts 2): %+v", inv)
	}

	// A 4xx answer is final: not retried.
	nf, _, _ := postAsync(t, srv.GatewayURL()+"/nope", "", "")
	inv = waitDone(t, srv, nf.ID)
	if inv.State != events.StateFailed || inv.Attempts != 1 || inv.Status != 404 {
		t.Fatalf("4xx invocation: %+v", inv)
	}

	// The event log and the dispatcher are on /metrics: the failed
	// invocations were dead-lettered three times (g, its replay, h).
	_, metrics, _ := get(t, srv.APIURL()+"/metrics")
	for _, want := range []string{`nimbus_deliveries_total{outcome="dead_lettered"} 3`, "nimbus_events_appended_total ", "nimbus_events_commits_total ", "nimbus_events_messages_total ", "nimbus_events_window_ids "} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	// Invocations accepted at the same time share a stored message: each
	// has an id of its own ("inv-<seq>.<index>" past a message's first),
	// which reads back and runs once.
	ids := make([]string, 16)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() {
			id, _, err := srv.EnqueueInvocation(context.Background(), "jobs", "g",
				&runtime.Request{Method: "GET", Path: "/echo", RawQuery: fmt.Sprint("n=", i), Header: http.Header{}}, "")
			if err != nil {
				t.Error(err)
			}
			ids[i] = id
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	for i, id := range ids {
		if seen[id] {
			t.Fatalf("two invocations accepted as %s: %v", id, ids)
		}
		seen[id] = true
		inv := waitDone(t, srv, id)
		if inv.State != events.StateSucceeded || inv.Attempts != 1 || !strings.Contains(string(inv.Body), fmt.Sprint("GET /echo?n=", i, " ")) {
			t.Fatalf("invocation %s (request %d): %+v %q", id, i, inv, inv.Body)
		}
	}
	t.Logf("16 concurrent invocations: %v", ids)

	// Unknown ids are 404, and so are malformed ones.
	for _, bad := range []string{"inv-999999.3", "inv-1.1000", "inv-1.x", "inv-0"} {
		if _, err := srv.Invocation(context.Background(), bad); apierror.From(err).Status != 404 {
			t.Errorf("invocation %q: %v, want 404", bad, err)
		}
	}
	_, err = srv.Invocation(context.Background(), "inv-999999")
	if ae := apierror.From(err); err == nil || ae.Status != 404 || ae.Code != "invocation_not_found" {
		t.Fatalf("unknown invocation: %v", err)
	}
}

// count asks the single instance of jobs/g how many requests it served.
func count(t *testing.T, srv *server.Server) int {
	t.Helper()
	code, body, _ := get(t, srv.GatewayURL()+"/count")
	if code != 200 {
		t.Fatalf("/count: %d %s", code, body)
	}
	var n int
	if err := json.Unmarshal([]byte(body), &n); err != nil {
		t.Fatalf("/count body %q", body)
	}
	return n
}
