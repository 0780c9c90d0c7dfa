package telemetry

import (
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"time"
)

// TraceContext is a W3C trace context (https://www.w3.org/TR/trace-context/).
type TraceContext struct {
	TraceID [16]byte
	SpanID  [8]byte
	Flags   byte
}

// ParseTraceParent parses a traceparent header of version 00. It reports
// false for anything malformed, including the all-zero ids the spec forbids,
// so the caller starts a new trace instead.
func ParseTraceParent(s string) (TraceContext, bool) {
	var tc TraceContext
	// 00-<32 hex>-<16 hex>-<2 hex>
	if len(s) < 55 || s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return tc, false
	}
	if s[:2] == "ff" {
		return tc, false
	}
	if s[:2] == "00" && len(s) != 55 {
		return tc, false
	}
	var ver [1]byte
	if _, err := hex.Decode(ver[:], []byte(s[:2])); err != nil {
		return tc, false
	}
	if !lowerHex(s[3:35]) || !lowerHex(s[36:52]) || !lowerHex(s[53:55]) {
		return tc, false
	}
	hex.Decode(tc.TraceID[:], []byte(s[3:35]))
	hex.Decode(tc.SpanID[:], []byte(s[36:52]))
	var f [1]byte
	hex.Decode(f[:], []byte(s[53:55]))
	tc.Flags = f[0]
	if tc.TraceID == ([16]byte{}) || tc.SpanID == ([8]byte{}) {
		return TraceContext{}, false
	}
	return tc, true
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// NewTrace starts a new sampled trace with a fresh root span.
func NewTrace() TraceContext {
	var tc TraceContext
	binary.BigEndian.PutUint64(tc.TraceID[:8], rand.Uint64())
	binary.BigEndian.PutUint64(tc.TraceID[8:], rand.Uint64()|1) // never all zero
	tc.Flags = 0x01
	return tc.Child()
}

// Continue returns the context of a new span for an incoming request: a
// child of the caller's span when traceparent is valid, else a new trace.
func Continue(traceparent string) TraceContext {
	if tc, ok := ParseTraceParent(traceparent); ok {
		return tc.Child()
	}
	return NewTrace()
}

// Child returns the context of a new span in the same trace.
func (tc TraceContext) Child() TraceContext {
	binary.BigEndian.PutUint64(tc.SpanID[:], rand.Uint64()|1)
	return tc
}

// TraceIDString is the trace id in hex, as logs carry it (key trace_id).
func (tc TraceContext) TraceIDString() string { return hex.EncodeToString(tc.TraceID[:]) }

// String formats the context as a traceparent header value.
func (tc TraceContext) String() string {
	var b [55]byte
	tc.put(b[:])
	return string(b[:])
}

// put writes the traceparent header value into b (55 bytes).
func (tc TraceContext) put(b []byte) {
	b[0], b[1], b[2] = '0', '0', '-'
	hex.Encode(b[3:35], tc.TraceID[:])
	b[35] = '-'
	hex.Encode(b[36:52], tc.SpanID[:])
	b[52] = '-'
	hex.Encode(b[53:55], []byte{tc.Flags})
}

// NewInvocation returns a new invocation id (as NewInvocationID makes
// them) and tc as a traceparent header value, both cut from one string:
// the gateway needs both for every request, and one allocation is half
// the cost of two.
func NewInvocation(tc TraceContext) (id, traceparent string) {
	var b [32 + 55]byte
	putInvocationID(b[:32])
	tc.put(b[32:])
	s := string(b[:])
	return s[:32], s[32:]
}

// NewInvocationID returns a unique invocation id: 32 hex characters whose
// first 12 are the millisecond time, so ids sort roughly by start time.
func NewInvocationID() string {
	var b [32]byte
	putInvocationID(b[:])
	return string(b[:])
}

// putInvocationID writes a new invocation id into dst (32 bytes).
func putInvocationID(dst []byte) {
	var b [16]byte
	ms := uint64(time.Now().UnixMilli())
	b[0], b[1], b[2], b[3], b[4], b[5] = byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms)
	r := rand.Uint64()
	binary.BigEndian.PutUint64(b[6:14], r)
	binary.BigEndian.PutUint16(b[14:], uint16(rand.Uint32()))
	hex.Encode(dst, b[:])
}
