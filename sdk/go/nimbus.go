package nimbus

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"

	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// Level is the severity of a log line.
type Level int32

// Log levels.
const (
	LevelDebug = Level(wire.LevelDebug)
	LevelInfo  = Level(wire.LevelInfo)
	LevelWarn  = Level(wire.LevelWarn)
	LevelError = Level(wire.LevelError)
)

// String returns the level's name.
func (l Level) String() string {
	switch l {
	case LevelDebug:
		return "debug"
	case LevelInfo:
		return "info"
	case LevelWarn:
		return "warn"
	case LevelError:
		return "error"
	}
	return fmt.Sprintf("level(%d)", int32(l))
}

// Errors host functions return, wrapped with the function's name.
var (
	// ErrDenied means the function's capability is not granted in nimbus.yaml.
	ErrDenied = errors.New("capability not granted")
	// ErrBadArgument means the host rejected an argument.
	ErrBadArgument = errors.New("bad argument")
	// ErrTooLarge means an argument was over the host's size limit.
	ErrTooLarge = errors.New("argument too large")
	// ErrUnavailable means the host service behind the function is down.
	ErrUnavailable = errors.New("host service unavailable")
	// ErrHost is any other host-side failure.
	ErrHost = errors.New("host error")
	// ErrNotFound means the key does not exist (never written, deleted or
	// expired).
	ErrNotFound = errors.New("key not found")
	// ErrRevisionMismatch means a write with IfRevision found another
	// revision; the error is a *RevisionMismatchError.
	ErrRevisionMismatch = errors.New("revision mismatch")
	// ErrBucketNotFound means the app declares no bucket of that name in
	// nimbus.yaml.
	ErrBucketNotFound = errors.New("bucket not found")
)

// handler is the module's one handler. A module is one function, so this is
// the one piece of package state the ABI needs; it is written in init and read
// on every request.
var handler atomic.Pointer[http.Handler]

// Handle registers h as the function's handler. Call it from init: a reactor
// module never runs main.
func Handle(h http.Handler) {
	handler.Store(&h)
	requestHandler.Store(nil)
}

// registered is the handler that Handle stored, or nil before Handle.
func registered() http.Handler {
	if p := handler.Load(); p != nil {
		return *p
	}
	return nil
}

// HandleFunc registers f as the function's handler.
func HandleFunc(f func(http.ResponseWriter, *http.Request)) {
	Handle(http.HandlerFunc(f))
}

type metaKey struct{}

// meta is the invocation's identity, carried by the request's context. It
// is its own context (a parent plus one value) so that a request costs one
// allocation for it, not two.
type meta struct {
	context.Context
	invocationID string
	traceParent  string
}

// Value implements context.Context.
func (m *meta) Value(key any) any {
	if key == (metaKey{}) {
		return m
	}
	return m.Context.Value(key)
}

// InvocationID returns the id of the invocation r belongs to, or "" for a
// request that did not come from Nimbus.
func InvocationID(r *http.Request) string {
	if m, ok := r.Context().Value(metaKey{}).(*meta); ok {
		return m.invocationID
	}
	return ""
}

// TraceParent returns the W3C traceparent of the invocation r belongs to, or
// "" when there is none.
func TraceParent(r *http.Request) string {
	if m, ok := r.Context().Value(metaKey{}).(*meta); ok {
		return m.traceParent
	}
	return ""
}

// Log writes msg to the function's log at level. It needs the "log"
// capability; without it the error wraps ErrDenied.
func Log(level Level, msg string) error {
	return codeError("log", "log", hostLog(int32(level), msg))
}

// Logf is Log with fmt.Sprintf formatting.
func Logf(level Level, format string, args ...any) error {
	return Log(level, fmt.Sprintf(format, args...))
}

// codeError turns a host function's status code into an error.
func codeError(function, capability string, code int32) error {
	switch code {
	case wire.CodeOK:
		return nil
	case wire.CodeDenied:
		return fmt.Errorf("nimbus: %s: %w: grant it with `capabilities: [%s]` in nimbus.yaml", function, ErrDenied, capability)
	case wire.CodeBadArgument:
		return fmt.Errorf("nimbus: %s: %w", function, ErrBadArgument)
	case wire.CodeTooLarge:
		return fmt.Errorf("nimbus: %s: %w", function, ErrTooLarge)
	case wire.CodeUnavailable:
		return fmt.Errorf("nimbus: %s: %w", function, ErrUnavailable)
	case wire.CodeNotFound:
		return fmt.Errorf("nimbus: %s: %w", function, ErrNotFound)
	case wire.CodeRevisionMismatch:
		return fmt.Errorf("nimbus: %s: %w", function, ErrRevisionMismatch)
	case wire.CodeNoBucket:
		return fmt.Errorf("nimbus: %s: %w: declare it under buckets: in nimbus.yaml", function, ErrBucketNotFound)
	default:
		return fmt.Errorf("nimbus: %s: %w (code %d)", function, ErrHost, code)
	}
}
