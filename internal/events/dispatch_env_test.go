package events_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/events"
	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
	"github.com/nimbus-dev/nimbus/internal/guesttest"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/runtime/wasm"
	"github.com/nimbus-dev/nimbus/internal/scheduler"
	"github.com/nimbus-dev/nimbus/internal/store"
)

// The dispatcher tests run everything for real: an embedded JetStream
// store, an events.Log, the scheduler over the wazero runtime, and the
// eventguest module built from testdata with the Go toolchain. They live in
// package events_test so that the runtime's imports (host functions) may
// one day import package events without a cycle.

// wasmCache is the compilation cache shared by the test binaries.
var wasmCache = guesttest.WazeroCacheDir()

const testApp = "shop"

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// env is one running node: store, log, runtime, scheduler, dispatcher.
type env struct {
	t     testing.TB
	dir   string
	st    *store.Store
	log   *events.Log
	rt    *wasm.Runtime
	sched *scheduler.Scheduler
	rec   *recorder
	disp  *events.Dispatcher
	opts  events.DispatcherOptions
	fns   []string
}

// newEnv starts a node on a fresh data directory with functions fns, all
// running the event guest.
func newEnv(t testing.TB, opts events.DispatcherOptions, fns ...string) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), opts: opts, fns: fns}
	e.open(nil)
	t.Cleanup(e.close)
	return e
}

// open starts (or restarts) the node on e.dir. wrap, if not nil, wraps the
// scheduler as the dispatcher's invoker (inside the recorder).
func (e *env) open(wrap func(events.Invoker) events.Invoker) {
	t := e.t
	t.Helper()
	// The guest is built (once per test binary) before the clock starts:
	// a cold build on a loaded machine can take longer than the deadline
	// below, which bounds the node's own start.
	guest := guesttest.MustBuild(t, "testdata/eventguest", guesttest.Reactor)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := store.Open(ctx, store.Options{DataDir: e.dir, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	e.st = st
	e.log, err = events.OpenLog(ctx, st.JetStream(), events.LogConfig{Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	e.rt, err = wasm.New(ctx, wasm.Config{CacheDir: wasmCache, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	sha, err := st.PutArtifact(ctx, guest)
	if err != nil {
		t.Fatal(err)
	}
	e.sched = scheduler.New(runtime.Set{model.RuntimeWasm: e.rt}, st, scheduler.Options{Logger: quietLogger()})
	var fns []model.Function
	for _, name := range e.fns {
		fns = append(fns, model.Function{
			Name: name, Runtime: "wasm", Module: sha, MemoryBytes: 64 << 20, TimeoutMS: 30_000,
			Concurrency: 1, MaxInstances: 8, MaxRequestBytes: 1 << 20, MaxResponseBytes: 1 << 20,
		})
	}
	rev, err := model.Plan(testApp, fns)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.sched.Activate(ctx, rev); err != nil {
		t.Fatal(err)
	}
	var inv events.Invoker = e.sched
	if wrap != nil {
		inv = wrap(inv)
	}
	if e.rec == nil {
		e.rec = &recorder{}
	}
	e.rec.mu.Lock()
	e.rec.inv = inv
	e.rec.mu.Unlock()
	opts := e.opts
	opts.Logger = quietLogger()
	e.disp = events.NewDispatcher(st.JetStream(), e.log, e.rec, opts)
}

// close stops the node in dependency order; it is safe to call twice.
func (e *env) close() {
	if e.st == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := e.disp.Close(ctx); err != nil {
		e.t.Error(err)
	}
	e.sched.Close(ctx)
	e.rt.Close(ctx)
	e.log.Close(ctx)
	e.st.Close()
	e.st = nil
}

func (e *env) sync(triggers ...events.TriggerSpec) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.disp.Sync(ctx, testApp, triggers); err != nil {
		e.t.Fatal(err)
	}
}

// publish appends events to topic in one call.
func (e *env) publish(topic string, evs ...*cloudevents.Event) {
	e.t.Helper()
	ents := make([]events.Entry, len(evs))
	for i, ev := range evs {
		ents[i] = events.EventEntry(testApp, topic, ev)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := e.log.Append(ctx, ents...); err != nil {
		e.t.Fatal(err)
	}
}

// event makes a test event; ext are name, value pairs.
func event(id, typ, subject string, ext ...string) *cloudevents.Event {
	ev := &cloudevents.Event{
		SpecVersion: cloudevents.SpecVersion, ID: id, Source: "/test", Type: typ, Subject: subject,
		DataContentType: "application/json", Data: []byte(`{"id":"` + id + `"}`),
	}
	for i := 0; i+1 < len(ext); i += 2 {
		if ev.Extensions == nil {
			ev.Extensions = map[string]string{}
		}
		ev.Extensions[ext[i]] = ext[i+1]
	}
	return ev
}

// call is one invocation the recorder saw.
type call struct {
	fn      string
	id      string // ce-id
	typ     string
	subject string
	attempt int
	req     *runtime.Request
	resp    *runtime.Response
	err     error
	seq     int // order of completion among all calls
}

func (c call) ok() bool { return c.err == nil && c.resp.Status/100 == 2 }

// recorder is the dispatcher's Invoker in tests: it calls the real
// scheduler and records every call, and checks that calls of one ordering
// group never overlap.
type recorder struct {
	mu       sync.Mutex
	inv      events.Invoker
	calls    []call
	inflight map[string]int // fn + "/" + subject -> calls running (ordering checks)
	overlap  []string
}

func (r *recorder) Invoke(ctx context.Context, app, fn string, req *runtime.Request) (*runtime.Response, error) {
	group := fn + "/" + req.Header.Get("Ce-Subject")
	r.mu.Lock()
	inv := r.inv
	if r.inflight == nil {
		r.inflight = map[string]int{}
	}
	r.inflight[group]++
	if r.inflight[group] > 1 {
		r.overlap = append(r.overlap, group)
	}
	r.mu.Unlock()
	resp, err := inv.Invoke(ctx, app, fn, req)
	attempt, _ := strconv.Atoi(req.Header.Get(events.HeaderAttempt))
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inflight[group]--
	r.calls = append(r.calls, call{
		fn: fn, id: req.Header.Get("Ce-Id"), typ: req.Header.Get("Ce-Type"), subject: req.Header.Get("Ce-Subject"),
		attempt: attempt, req: req, resp: resp, err: err, seq: len(r.calls),
	})
	return resp, err
}

// snapshot returns the calls so far.
func (r *recorder) snapshot() []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]call(nil), r.calls...)
}

// succeeded counts successful calls per fn and id.
func (r *recorder) succeeded() map[string]int {
	m := map[string]int{}
	for _, c := range r.snapshot() {
		if c.ok() {
			m[c.fn+"/"+c.id]++
		}
	}
	return m
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() error) {
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
		time.Sleep(5 * time.Millisecond)
	}
}

// waitSucceeded waits until every fn/id in want succeeded at least once.
func (e *env) waitSucceeded(want []string) {
	e.t.Helper()
	waitFor(e.t, "deliveries", func() error {
		got := e.rec.succeeded()
		var missing []string
		for _, k := range want {
			if got[k] == 0 {
				missing = append(missing, k)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("%d of %d not delivered, e.g. %s", len(missing), len(want), strings.Join(missing[:min(5, len(missing))], " "))
		}
		return nil
	})
}

func ids(fn, prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s/%s%d", fn, prefix, i)
	}
	return out
}
