package workflow

import (
	"testing"

	"github.com/nimbus-dev/nimbus/internal/telemetry"
)

// A run's trace id is stable (every activation, on any node, is in the
// same trace) and differs between runs and apps; an activation's
// traceparent is a valid W3C one in it.
func TestRunTraceID(t *testing.T) {
	t.Parallel()
	a := RunTraceID("shop", "r1")
	if a != RunTraceID("shop", "r1") || a == RunTraceID("shop", "r2") || a == RunTraceID("bank", "r1") || len(a) != 32 {
		t.Fatalf("trace ids %q", a)
	}
	tp := runTraceParent("shop", "r1")
	tc, ok := telemetry.ParseTraceParent(tp)
	if !ok || tc.TraceIDString() != a {
		t.Fatalf("traceparent %q: parsed %v, trace %s, want %s", tp, ok, tc.TraceIDString(), a)
	}
}

// BenchmarkRunTraceParent is the per-activation cost of the run's trace
// context (a hash and a random span id); a step attempt pays one span id.
func BenchmarkRunTraceParent(b *testing.B) {
	for b.Loop() {
		_ = runTraceParent("shop", "order-12345")
	}
}
