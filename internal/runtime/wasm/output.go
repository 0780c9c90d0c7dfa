package wasm

import (
	"bytes"
	"strings"
	"sync"

	"github.com/nimbus-dev/nimbus/internal/runtime"
)

// maxLogLine caps one stdout/stderr log line; longer lines are split.
const maxLogLine = 16 << 10

// lineWriter turns a guest's stdout or stderr into LogSink lines. Its sink is
// switched per request (an SDK instance outlives requests). It remembers the
// last line and the first panic line, which make guest failures explainable.
type lineWriter struct {
	stream string

	mu        sync.Mutex
	sink      runtime.LogSink
	buf       []byte
	last      string
	panicLine string
}

func newLineWriter(stream string, sink runtime.LogSink) *lineWriter {
	return &lineWriter{stream: stream, sink: sink}
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			if len(w.buf) >= maxLogLine {
				w.emit(w.buf[:maxLogLine])
				w.buf = append(w.buf[:0], w.buf[maxLogLine:]...)
				continue
			}
			return len(p), nil
		}
		w.emit(w.buf[:min(i, maxLogLine)])
		w.buf = w.buf[:copy(w.buf, w.buf[i+1:])]
	}
}

func (w *lineWriter) emit(line []byte) {
	line = bytes.TrimSuffix(line, []byte{'\r'})
	if s := strings.TrimSpace(string(line[:min(len(line), 512)])); s != "" {
		w.last = s
		if w.panicLine == "" && (strings.HasPrefix(s, "panic: ") || strings.HasPrefix(s, "fatal error: ")) {
			w.panicLine = s
		}
	}
	if w.sink != nil {
		w.sink.Log(w.stream, "", bytes.Clone(line))
	}
}

// reset flushes what is pending to the old sink and starts a new request.
func (w *lineWriter) reset(sink runtime.LogSink) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.emit(w.buf)
		w.buf = w.buf[:0]
	}
	w.sink = sink
	w.last, w.panicLine = "", ""
}

// flush emits a pending partial line.
func (w *lineWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.emit(w.buf)
		w.buf = w.buf[:0]
	}
}

// reason is the most useful line the guest wrote: its panic, else its last.
func (w *lineWriter) reason() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.emit(w.buf)
		w.buf = w.buf[:0]
	}
	if w.panicLine != "" {
		return w.panicLine
	}
	return w.last
}

// cappedBuffer collects a WAGI guest's stdout up to limit bytes and then
// drops the rest, remembering that it did and calling onOverflow (once), which
// stops the guest.
type cappedBuffer struct {
	limit      int
	buf        bytes.Buffer
	overflow   bool
	onOverflow func()
}

// Write always reports success: the guest learns nothing from the cap (a
// short write could make it retry forever), the host reports the overflow
// and stops the guest through onOverflow.
func (b *cappedBuffer) Write(p []byte) (int, error) {
	n := len(p)
	if room := b.limit - b.buf.Len(); len(p) > room {
		if !b.overflow && b.onOverflow != nil {
			b.onOverflow()
		}
		b.overflow = true
		p = p[:max(room, 0)]
	}
	b.buf.Write(p)
	return n, nil
}

// slogSink sends lines written outside any request (during an SDK
// instance's initialization) to the runtime's logger.
type slogSink struct {
	r             *Runtime
	app, function string
}

func (s slogSink) Log(stream, level string, line []byte) {
	s.r.logger.Debug("guest output during initialization", "app", s.app, "function", s.function, "stream", stream, "level", level, "line", string(line))
}
