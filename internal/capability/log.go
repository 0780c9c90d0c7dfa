package capability

import "fmt"

// DefaultMaxLogBytes caps one log message; longer messages are truncated.
const DefaultMaxLogBytes = 8 << 10

// Level is the level of a log line. Its values are the wasm ABI's
// (sdk/go/wire.LevelDebug...).
type Level int32

// Log levels.
const (
	LevelDebug Level = iota
	LevelInfo
	LevelWarn
	LevelError
)

var levelNames = [...]string{LevelDebug: "debug", LevelInfo: "info", LevelWarn: "warn", LevelError: "error"}

// String returns the level's name as the log stores it: "debug", "info",
// "warn" or "error".
func (l Level) String() string {
	if l < 0 || int(l) >= len(levelNames) {
		return fmt.Sprintf("Level(%d)", int32(l))
	}
	return levelNames[l]
}

// LogService writes lines to an invocation's log (capability "log").
type LogService struct {
	*guard
	maxBytes int
}

// truncatedMark ends a message cut at the limit.
const truncatedMark = " …(truncated)"

// Log writes msg as one line of the caller's log (stream "log") at level.
// A message over the limit is cut there and marked " …(truncated)". msg is
// copied; the caller may reuse it when Log returns.
func (s *LogService) Log(call *Caller, level Level, msg []byte) error {
	const op = "log"
	if level < LevelDebug || level > LevelError {
		return fail(op, ErrBadArgument, fmt.Errorf("level %d is not 0 to 3", level))
	}
	if err := s.check(call, op, logGrant()); err != nil {
		return err
	}
	n := min(len(msg), s.maxBytes)
	line := make([]byte, n, n+len(truncatedMark))
	copy(line, msg)
	if n < len(msg) {
		line = append(line, truncatedMark...)
	}
	if call.Sink != nil {
		call.Sink.Log("log", level.String(), line)
	}
	return nil
}
