package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbus-dev/nimbus/internal/events"
	"github.com/nimbus-dev/nimbus/internal/state"
	"github.com/nimbus-dev/nimbus/internal/store"
)

// TestKillJournaledEffects: runs of a workflow whose steps (journaled
// effects: the default) write KV keys (one with a TTL) and publish an
// event with a random id. The node is killed with
// SIGKILL while every run's first journaled step runs (its write made,
// the step not ended), and again during the second. After the restarts
// the runs complete, every later step saw its journaled step's write,
// the history of each key holds exactly one write, and the topic one
// event (by id) per step: those of the execution that committed (docs/workflows.md "Guarantees").
func TestKillJournaledEffects(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary and a guest, kills and restarts a node")
	}
	const runs = 3
	tmp := t.TempDir()
	c := newCLI(t, tmp)
	data := filepath.Join(tmp, "data")
	app := filepath.Join("testdata", "killfx")
	srv, f, stderr := c.up(app, data)
	token := f["admin"] // printed on the first start only
	client := &http.Client{Timeout: 30 * time.Second}
	api := func(method, path string, body, out any) error {
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, f["API"]+path, rd)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode >= 300 {
			return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
		if out == nil {
			return nil
		}
		return json.Unmarshal(b, out)
	}
	// count is how many times the plain step key ran (0: never).
	count := func(key string) int {
		req, _ := http.NewRequest("GET", f["API"]+"/api/v1/apps/killfx/buckets/execs/keys/"+key, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			return -1
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		n, _ := strconv.Atoi(string(b))
		return n
	}
	id := func(i int) string { return "fx" + strconv.Itoa(i) }
	for i := range runs {
		var res struct{ Created bool }
		if err := api("POST", "/api/v1/apps/killfx/workflows/flow/runs",
			map[string]any{"id": id(i), "input": json.RawMessage(`{"steps":2,"step_ms":1500}`)}, &res); err != nil || !res.Created {
			t.Fatalf("start %s: %v", id(i), err)
		}
	}
	// The journaled step s<n> follows mark<n> at once and takes 1.5 s:
	// once every run's mark<n> ran, the kill cuts s<n> after its write.
	killAfter := func(mark string) {
		t.Helper()
		poll(t, 30*time.Second, func() error {
			for i := range runs {
				if count(id(i)+"/"+mark) == 0 {
					var r struct{ State, Error string }
					err := api("GET", "/api/v1/apps/killfx/runs/"+id(i), nil, &r)
					return fmt.Errorf("run %s (%s %s %v): %s not yet; node: %s", id(i), r.State, r.Error, err, mark, lastLines(stderr.String(), 15))
				}
			}
			return nil
		})
		if err := srv.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		srv.Wait()
		srv, f, stderr = c.up(app, data)
	}
	killAfter("mark1")
	killAfter("mark2")
	for i := range runs {
		var r struct {
			State, Error string
			Result       []string
		}
		poll(t, 30*time.Second, func() error {
			if err := api("GET", "/api/v1/apps/killfx/runs/"+id(i), nil, &r); err != nil {
				return err
			}
			if r.State != "completed" {
				return fmt.Errorf("run %s is %s %s", id(i), r.State, r.Error)
			}
			return nil
		})
		if fmt.Sprint(r.Result) != "[s1 s2]" {
			t.Errorf("run %s answered %v, want [s1 s2] (each later step sees its journaled step's write)", id(i), r.Result)
		}
	}
	srv.Process.Signal(syscall.SIGKILL)
	srv.Wait()

	// Every write the ledger's history holds, by key.
	ctx := context.Background()
	st, err := store.Open(ctx, store.Options{DataDir: data, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	bucket := state.BucketName("killfx", "ledger")
	s, err := st.JetStream().Stream(ctx, store.KVStream(bucket))
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(store.KVSubject(bucket, ">")))
	if err != nil {
		t.Fatal(err)
	}
	for i := range runs {
		for _, k := range []string{"s1", "s2"} {
			key := id(i) + "/" + k
			if n := info.State.Subjects[store.KVSubject(bucket, key)]; n != 1 {
				t.Errorf("ledger key %s was written %d times, want once", key, n)
			}
			// A put then a delete, once.
			if n := info.State.Subjects[store.KVSubject(bucket, key+".tmp")]; n != 2 {
				t.Errorf("ledger key %s.tmp was written %d times, want twice (a put, a delete)", key, n)
			}
			// A put with a one-hour TTL, once, with its TTL.
			if n := info.State.Subjects[store.KVSubject(bucket, key+".ttl")]; n != 1 {
				t.Errorf("ledger key %s.ttl was written %d times, want once", key, n)
			}
			if m, err := s.GetLastMsgForSubject(ctx, store.KVSubject(bucket, key+".ttl")); err != nil {
				t.Errorf("ledger key %s.ttl: %v", key, err)
			} else if ttl := m.Header.Get(jetstream.MsgTTLHeader); ttl != "3600" {
				t.Errorf("ledger key %s.ttl has Nats-TTL %q, want 3600", key, ttl)
			}
		}
	}
	if got, want := len(info.State.Subjects), 6*runs; got != want { // s1, s2 and their .tmp and .ttl
		t.Errorf("the ledger has %d keys, want %d: %v", got, want, info.State.Subjects)
	}

	// Every event on the topic, by the key it carries, counted by id.
	es, err := st.JetStream().Stream(ctx, events.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]map[string]bool{}
	subj := events.SubjectFor(events.DefaultSubjectPrefix, "killfx", "done")
	for seq := uint64(1); ; {
		m, err := es.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		seq = m.Sequence + 1
		e, err := events.DecodeEntry(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		k := string(e.Data)
		if ids[k] == nil {
			ids[k] = map[string]bool{}
		}
		ids[k][e.ID] = true
	}
	for i := range runs {
		for _, k := range []string{"s1", "s2"} {
			key := strconv.Quote(id(i) + "/" + k)
			if n := len(ids[key]); n != 1 {
				t.Errorf("the topic has %d events (by id) of %s, want 1", n, key)
			}
		}
	}
	if len(ids) != 2*runs {
		t.Errorf("the topic has events of %d keys, want %d", len(ids), 2*runs)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
