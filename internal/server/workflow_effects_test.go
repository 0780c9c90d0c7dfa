package server_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/guesttest"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/state"
	"github.com/nimbus-dev/nimbus/internal/workflow"
)

const fxGuestDir = "../workflow/testdata/fxguest"

// TestWorkflowEffectsCheckedWhenMade: a step's KV writes and publishes
// (journaled: the default) are checked when the step makes them, so a
// write that could not be applied after the step commits fails the
// step's attempt with the error it would have had, and none of the
// attempt's writes is applied: a publish to a topic the app does not
// declare (ErrTopicNotFound, saying to declare it), an event over the
// topic's max_event_size, a value over the bucket's limit (ErrTooLarge),
// and a write over the tenant's kv_bytes quota (refused). A run whose
// writes pass the checks completes with them applied, a per-key TTL
// included.
func TestWorkflowEffectsCheckedWhenMade(t *testing.T) {
	t.Parallel()
	guest := guesttest.MustBuild(t, fxGuestDir, guesttest.Reactor)
	srv := startWithPolicy(t, `
quotas:
  tenants:
    team-fx: {kv_bytes: 8KiB}
`)
	ctx := context.Background()
	if _, err := srv.PutArtifact(ctx, guest); err != nil {
		t.Fatal(err)
	}
	f := fn("flow", guest)
	f.Kind = model.KindWorkflow
	f.Capabilities = []string{"log", "kv:ledger", "kv:execs", "publish:done", "publish:nosuch"}
	spec := model.Spec{Functions: []model.Function{f},
		Topics:  []model.Topic{{Name: "done", MaxEventBytes: 1024}},
		Buckets: []model.Bucket{{Name: "ledger", MaxValueBytes: 32 << 10, History: 1}, {Name: "execs", MaxValueBytes: 1 << 10, History: 1}}}
	key := tenantKey(t, srv, "team-fx")
	if code, e, _, _ := apiCall(t, srv, key, "POST", "/api/v1/apps/fx/deploy", spec); code != 200 {
		t.Fatalf("deploy: %d %s", code, e.Message)
	}
	run := func(id, input string) *workflow.Run {
		t.Helper()
		if _, _, err := srv.Workflows().Start(ctx, "fx", "flow", id, []byte(input)); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		r, err := srv.Workflows().Wait(wctx, "fx", id)
		if err != nil {
			t.Fatalf("run %s: %v", id, err)
		}
		return r
	}
	get := func(k string) (string, error) {
		v, _, err := srv.KV().Get(ctx, "fx", "ledger", k)
		return string(v), err
	}

	r := run("ok", `{"steps":1}`)
	if r.State != workflow.StateCompleted || string(r.Result) != `["s1"]` {
		t.Fatalf("run ok: %s %s %s", r.State, r.Result, r.Error)
	}
	for k, want := range map[string]string{"ok/s1": "s1", "ok/s1.ttl": "x"} {
		if v, err := get(k); err != nil || v != want {
			t.Errorf("ledger %s = %q, %v; want %q", k, v, err, want)
		}
	}

	for _, c := range []struct {
		id, input string
		want      []string // in the run's error
	}{
		{"topic", `{"bad":"topic"}`, []string{"publish nosuch", "topic not found", "declare it under topics"}},
		{"event", `{"bad":"event","bytes":2048}`, []string{"publish done", "too large"}},
		{"value", `{"bad":"value","bytes":` + strconv.Itoa(32<<10+1) + `}`, []string{"kv put ledger", "too large"}},
		{"quota", `{"bad":"value","bytes":` + strconv.Itoa(9<<10) + `}`, []string{"kv put ledger", "unavailable"}},
	} {
		r := run(c.id, c.input)
		if r.State != workflow.StateFailed {
			t.Errorf("run %s is %s (%s), want failed", c.id, r.State, r.Result)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(r.Error, w) {
				t.Errorf("run %s failed with %q, want it to say %q", c.id, r.Error, w)
			}
		}
		// The attempt's first write, checked and buffered, was dropped
		// with the attempt.
		if v, err := get(c.id + "/bad"); !errors.Is(err, state.ErrKeyNotFound) {
			t.Errorf("run %s: its failed step's write was applied: %q, %v", c.id, v, err)
		}
	}
}
