package guestlog

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/guesttest"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/runtime/wasm"
	"github.com/nimbus-dev/nimbus/internal/telemetry"
)

// clock is a settable clock for the rate budget.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

var _ DropCounter = (*telemetry.Metrics)(nil)

// dropped reads nimbus_guest_log_dropped_lines_total{app,reason} from m's
// registry; 0 when the series does not exist.
func dropped(t *testing.T, m *telemetry.Metrics, app, reason string) float64 {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "nimbus_guest_log_dropped_lines_total" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range mt.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["app"] == app && labels["reason"] == reason {
				return mt.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func TestInvocationBudget(t *testing.T) {
	tests := []struct {
		name       string
		cfg        Config
		lines      []string
		wantStored int
		wantMarker string
	}{
		{"lines", Config{InvocationLines: 10}, repeat("line", 25), 10,
			"dropped 15 lines (budget: 10 lines or 1MiB per invocation)"},
		{"bytes", Config{InvocationBytes: 100}, append(repeat(strings.Repeat("b", 40), 3), "x", "y"), 2,
			"dropped 3 lines (budget: 1000 lines or 100B per invocation)"},
		{"within budget", Config{InvocationLines: 10}, repeat("line", 10), 10, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t)
			js := s.JetStream()
			m := telemetry.NewMetrics()
			tt.cfg.Logger, tt.cfg.Metrics = quiet(), m
			w := New(js, tt.cfg)
			sink := w.Sink("app", "f", "r", "inv1")
			for _, l := range tt.lines {
				sink.Log("stdout", "", []byte(l))
			}
			runtime.FlushLog(sink)
			runtime.FlushLog(sink) // nothing dropped since: no second marker
			// The next invocation has a budget of its own.
			next := w.Sink("app", "f", "r", "inv2")
			next.Log("stdout", "", []byte("next"))
			runtime.FlushLog(next)
			closeWriter(t, w)

			es := readAll(t, js, Query{App: "app"})
			var stored, markers []Entry
			for _, e := range es {
				switch {
				case e.Stream == MarkerStream:
					markers = append(markers, e)
				case e.Invocation == "inv1":
					stored = append(stored, e)
				}
			}
			if len(stored) != tt.wantStored {
				t.Errorf("stored %d lines of inv1, want %d", len(stored), tt.wantStored)
			}
			if last := es[len(es)-1]; last.Message != "next" {
				t.Errorf("last entry %+v, want the next invocation's line", last)
			}
			wantDropped := float64(len(tt.lines) - tt.wantStored)
			if got := dropped(t, m, "app", ReasonInvocationBudget); got != wantDropped {
				t.Errorf("metric = %v, want %v", got, wantDropped)
			}
			if tt.wantMarker == "" {
				if len(markers) != 0 {
					t.Fatalf("markers %+v, want none", markers)
				}
				return
			}
			if len(markers) != 1 {
				t.Fatalf("markers %+v, want one", markers)
			}
			mk := markers[0]
			if mk.Message != tt.wantMarker || mk.Level != "warn" || mk.Invocation != "inv1" || mk.Function != "f" {
				t.Fatalf("marker %+v, want %q", mk, tt.wantMarker)
			}
		})
	}
}

func repeat(s string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s %d", s, i)
	}
	return out
}

func TestAppRateBudget(t *testing.T) {
	s := openStore(t)
	js := s.JetStream()
	m := telemetry.NewMetrics()
	clk := newClock()
	// 10 lines/s: each app's bucket holds 50 lines.
	w := New(js, Config{Logger: quiet(), Metrics: m, AppLinesPerSecond: 10, Now: clk.now})
	logN := func(app, inv string, n int) runtime.LogSink {
		sink := w.Sink(app, "f", "r", inv)
		for i := range n {
			sink.Log("stdout", "", fmt.Appendf(nil, "%s-%d", inv, i))
		}
		return sink
	}
	runtime.FlushLog(logN("busy", "a1", 30))
	runtime.FlushLog(logN("busy", "a2", 30)) // 10 over the bucket: marker
	runtime.FlushLog(logN("calm", "c1", 5))  // another app: its own bucket
	runtime.FlushLog(logN("busy", "a3", 5))  // all over; no second marker within a second
	clk.advance(time.Second)                 // 10 more lines
	runtime.FlushLog(logN("busy", "a4", 15)) // 5 over, plus a3's 5 carried
	closeWriter(t, w)

	if got := len(readAll(t, js, Query{App: "calm"})); got != 5 {
		t.Errorf("calm app: %d entries, want 5", got)
	}
	var markers []string
	lines := 0
	for _, e := range readAll(t, js, Query{App: "busy"}) {
		if e.Stream == MarkerStream {
			markers = append(markers, e.Invocation+": "+e.Message)
		} else {
			lines++
		}
	}
	if lines != 60 {
		t.Errorf("busy app: %d lines stored, want 60 (50 of the burst, 10 after a second)", lines)
	}
	want := []string{
		"a2: dropped 10 lines (budget: 10 lines/s or 1MiB/s per app)",
		"a4: dropped 5 lines (budget: 10 lines/s or 1MiB/s per app); and 5 lines of earlier invocations of the app (at most one marker per second)",
	}
	if strings.Join(markers, "\n") != strings.Join(want, "\n") {
		t.Errorf("markers:\n%s\nwant:\n%s", strings.Join(markers, "\n"), strings.Join(want, "\n"))
	}
	if got := dropped(t, m, "busy", ReasonAppRate); got != 20 {
		t.Errorf("busy app_rate drops = %v, want 20", got)
	}
	if got := dropped(t, m, "calm", ReasonAppRate); got != 0 {
		t.Errorf("calm app_rate drops = %v, want 0", got)
	}
}

// TestGuestFloodKeepsOtherAppsLogs is the hardening finding: one request of
// a guest logging in a loop filled the shared logs stream and evicted every
// other app's entries. A real guest floods here, through the wasm runtime,
// far past its budget and past its app's stream limit; another app's
// entries all stay readable.
func TestGuestFloodKeepsOtherAppsLogs(t *testing.T) {
	guest := guesttest.MustBuild(t, "../runtime/wasm/testdata/sdkguest", guesttest.Reactor)
	s := openStore(t)
	js := s.JetStream()
	m := telemetry.NewMetrics()
	clk := newClock()
	const appMax = 64 << 10
	w := New(js, Config{Logger: quiet(), Metrics: m, AppMaxBytes: appMax, Now: clk.now})

	quietApp := w.Sink("quiet", "f", "r", "inv-q")
	for i := range 50 {
		quietApp.Log("log", "info", fmt.Appendf(nil, "q%d", i))
	}
	runtime.FlushLog(quietApp)

	ctx := context.Background()
	rt, err := wasm.New(ctx, wasm.Config{Logger: quiet(), CacheDir: guesttest.WazeroCacheDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close(ctx) })
	mod, err := rt.Load(ctx, runtime.Spec{App: "flooder", Function: "f", Artifact: guest,
		Limits: runtime.Limits{MemoryBytes: model.DefaultMemoryBytes, Timeout: model.DefaultTimeout, MaxResponseBytes: model.DefaultMaxBodyBytes}})
	if err != nil {
		t.Fatal(err)
	}
	const invocations, perInvocation = 3, 20_000
	for i := range invocations {
		inst, err := mod.NewInstance(ctx)
		if err != nil {
			t.Fatal(err)
		}
		id := fmt.Sprint("inv-a", i)
		resp, err := inst.Handle(ctx, &runtime.Request{
			Method: "GET", Path: "/flood", RawQuery: fmt.Sprint("n=", perInvocation), Header: http.Header{},
			InvocationID: id, Log: w.Sink("flooder", "f", "r", id),
		})
		if err != nil || string(resp.Body) != fmt.Sprint("flooded ", perInvocation) {
			t.Fatalf("invocation %d: %v %q", i, err, resp.Body)
		}
		inst.Close(ctx)
		clk.advance(time.Second) // each invocation gets its marker
	}
	closeWriter(t, w)

	// Every entry of the other app is still there, in order.
	qs := readAll(t, js, Query{App: "quiet"})
	if len(qs) != 50 {
		t.Fatalf("quiet app: %d entries after the flood, want 50", len(qs))
	}
	for i, e := range qs {
		if e.Message != fmt.Sprint("q", i) {
			t.Fatalf("quiet app entry %d = %q", i, e.Message)
		}
	}
	// The flooder hit its own stream limit: it evicted its own oldest
	// entries, and its newest one is the last invocation's marker.
	info, err := js.Stream(ctx, StreamName("flooder"))
	if err != nil {
		t.Fatal(err)
	}
	if st := info.CachedInfo().State; st.Bytes > appMax || st.FirstSeq == 1 {
		t.Errorf("flooder stream: %d bytes from seq %d, want at most %d and its oldest evicted", st.Bytes, st.FirstSeq, appMax)
	}
	last := readAll(t, js, Query{App: "flooder", Limit: 1})
	wantMarker := fmt.Sprintf("dropped %d lines (budget: %d lines or 1MiB per invocation)", perInvocation-DefaultInvocationLines, DefaultInvocationLines)
	if len(last) != 1 || last[0].Stream != MarkerStream || last[0].Message != wantMarker || last[0].Invocation != "inv-a2" {
		t.Fatalf("flooder's last entry = %+v, want the marker %q", last, wantMarker)
	}

	// The metric moved, for the flooder only.
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	want := fmt.Sprintf(`nimbus_guest_log_dropped_lines_total{app="flooder",reason="invocation_budget"} %d`, invocations*(perInvocation-DefaultInvocationLines))
	if body := rec.Body.String(); !strings.Contains(body, want) || strings.Contains(body, `app="quiet"`) {
		t.Fatalf("metrics lack %s (or count the quiet app):\n%s", want, grepLines(body, "nimbus_guest_log"))
	}
}

func grepLines(s, substr string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
