package telemetry

import (
	"strings"
	"testing"
)

func TestParseTraceParent(t *testing.T) {
	valid := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	tc, ok := ParseTraceParent(valid)
	if !ok {
		t.Fatalf("valid traceparent rejected")
	}
	if tc.String() != valid {
		t.Fatalf("round trip: got %s", tc.String())
	}
	if tc.TraceIDString() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("trace id %s", tc.TraceIDString())
	}
	for _, bad := range []string{
		"",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
		"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
		"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
		"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
		"zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	} {
		if _, ok := ParseTraceParent(bad); ok {
			t.Errorf("accepted bad traceparent %q", bad)
		}
	}
	// A future version may carry more fields after the flags.
	if _, ok := ParseTraceParent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what"); !ok {
		t.Errorf("rejected a future-version traceparent")
	}
}

func TestChildKeepsTrace(t *testing.T) {
	root := NewTrace()
	child := root.Child()
	if child.TraceID != root.TraceID || child.SpanID == root.SpanID {
		t.Fatalf("child %s of %s", child, root)
	}
	if _, ok := ParseTraceParent(root.String()); !ok {
		t.Fatalf("new trace does not parse: %s", root)
	}
}

func TestInvocationIDsUnique(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 10000; i++ {
		id := NewInvocationID()
		if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
			t.Fatalf("bad id %q", id)
		}
		if seen[id] {
			t.Fatalf("duplicate id %q", id)
		}
		seen[id] = true
	}
}

func FuzzParseTraceParent(f *testing.F) {
	f.Add("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		tc, ok := ParseTraceParent(s)
		if ok && s[:2] == "00" && tc.String() != s {
			t.Fatalf("round trip %q -> %q", s, tc.String())
		}
	})
}

// TestNewInvocation checks the id and traceparent cut from one string: an
// id of 32 lower-case hex characters and tc's traceparent, unchanged.
func TestNewInvocation(t *testing.T) {
	t.Parallel()
	tc := NewTrace()
	id, tp := NewInvocation(tc)
	if len(id) != 32 || !lowerHex(id) {
		t.Errorf("invocation id %q: want 32 lower-case hex characters", id)
	}
	if tp != tc.String() {
		t.Errorf("traceparent %q, want %q", tp, tc.String())
	}
	if got, ok := ParseTraceParent(tp); !ok || got != tc {
		t.Errorf("traceparent %q parses to %v, %v; want %v", tp, got, ok, tc)
	}
	if other, _ := NewInvocation(tc); other == id {
		t.Errorf("two invocations got the same id %q", id)
	}
}
