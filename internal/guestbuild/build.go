package guestbuild

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/nimbus-dev/nimbus/internal/manifest"
)

// Steps reported in Event.Step.
const (
	StepBuild = "build" // running a build command
	StepRead  = "read"  // reading a function's module
)

// outputLines is how many of the last lines of a failed command's output an
// error keeps.
const outputLines = 20

// maxLine bounds one line of output kept or reported; longer lines are cut.
const maxLine = 4096

// waitDelay is how long Build waits, after a command exits, for processes it
// left running in the background to close its output.
const waitDelay = 2 * time.Second

// ErrNotWasm means a module file is not a WebAssembly binary.
var ErrNotWasm = errors.New("not a WebAssembly module")

// wasmMagic starts every WebAssembly binary.
var wasmMagic = []byte("\x00asm")

// Event is one step of progress. For StepBuild, a first event announces the
// command, then each line of its output is an event, then a last event has
// Done set (and Err on failure). For StepRead, one event with Done set.
type Event struct {
	// Function is the function the step is for; a build shared by several
	// functions is reported under the first of them.
	Function string
	Step     string
	Message  string
	Done     bool
	Err      error
}

// CommandError is a build command that failed.
type CommandError struct {
	// Functions share the command; the first is the one reported.
	Functions []string
	// Pos is the position of build.command in the manifest.
	Pos     manifest.Position
	Command string
	// Err is why it failed, usually an *exec.ExitError.
	Err error
	// Output is the last lines the command printed (stdout and stderr
	// interleaved), at most 20.
	Output []string
}

func (e *CommandError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "function %s: %s: build.command failed: %s", e.Functions[0], e.Pos, e.Err)
	if len(e.Functions) > 1 {
		fmt.Fprintf(&b, " (shared by %s)", strings.Join(e.Functions, ", "))
	}
	if len(e.Output) == 0 {
		b.WriteString("; it printed nothing")
		return b.String()
	}
	fmt.Fprintf(&b, "; last %d lines of output:", len(e.Output))
	for _, l := range e.Output {
		b.WriteString("\n    ")
		b.WriteString(l)
	}
	return b.String()
}

func (e *CommandError) Unwrap() error { return e.Err }

// job is one distinct build command and the functions that share it.
type job struct {
	build     *manifest.Build
	runtime   string
	functions []string
}

// Build runs the build commands of m and reads every function's module. It
// returns the module bytes by function name. progress, if not nil, is called
// for each step, from the calling goroutine or one owned by Build, never
// concurrently.
func Build(ctx context.Context, m *manifest.Manifest, progress func(Event)) (map[string][]byte, error) {
	if progress == nil {
		progress = func(Event) {}
	}
	var jobs []*job
	byKey := map[string]*job{}
	for _, f := range m.Functions {
		if f.Build == nil {
			continue
		}
		key := f.Runtime + "\x00" + f.Build.Dir + "\x00" + f.Build.Command
		if j, ok := byKey[key]; ok {
			j.functions = append(j.functions, f.Name)
			continue
		}
		j := &job{build: f.Build, runtime: f.Runtime, functions: []string{f.Name}}
		byKey[key] = j
		jobs = append(jobs, j)
	}
	for _, j := range jobs {
		if err := run(ctx, m, j, progress); err != nil {
			return nil, err
		}
	}
	out := make(map[string][]byte, len(m.Functions))
	for _, f := range m.Functions {
		data, err := readModule(m, f)
		progress(Event{Function: f.Name, Step: StepRead, Message: readMessage(m, f, data, err), Done: true, Err: err})
		if err != nil {
			return nil, err
		}
		out[f.Name] = data
	}
	return out, nil
}

func readMessage(m *manifest.Manifest, f *manifest.Function, data []byte, err error) string {
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("read %s (%d bytes)", rel(m, f.Module), len(data))
}

// run runs one build command, streaming its output as events.
func run(ctx context.Context, m *manifest.Manifest, j *job, progress func(Event)) error {
	name := j.functions[0]
	msg := "$ " + j.build.Command
	if j.build.Dir != m.Dir {
		msg = fmt.Sprintf("(in %s) %s", rel(m, j.build.Dir), msg)
	}
	progress(Event{Function: name, Step: StepBuild, Message: msg})

	lines := &lineWriter{emit: func(l string) { progress(Event{Function: name, Step: StepBuild, Message: l}) }}
	cmd := exec.CommandContext(ctx, "sh", "-c", j.build.Command)
	cmd.Dir = j.build.Dir
	cmd.Env = os.Environ()
	if j.runtime == manifest.RuntimeWasm {
		// Later entries win, so these override the caller's GOOS/GOARCH.
		cmd.Env = append(cmd.Env, "GOOS=wasip1", "GOARCH=wasm")
	}
	cmd.Stdout = lines // one writer for both: exec then copies with one goroutine
	cmd.Stderr = lines
	cmd.WaitDelay = waitDelay
	killProcessGroup(cmd)

	err := cmd.Run()
	lines.flush()
	if errors.Is(err, exec.ErrWaitDelay) {
		// The command succeeded but left a background process holding its
		// output; that is not a build failure.
		err = nil
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		err = fmt.Errorf("function %s: build canceled: %w", name, ctxErr)
	} else if err != nil {
		err = &CommandError{Functions: j.functions, Pos: j.build.Pos, Command: j.build.Command, Err: err, Output: lines.last}
	}
	progress(Event{Function: name, Step: StepBuild, Message: doneMessage(err), Done: true, Err: err})
	return err
}

func doneMessage(err error) string {
	if err != nil {
		return "build failed"
	}
	return "build ok"
}

// readModule reads f's module and checks it looks like WebAssembly; for a
// process function it packs the function's directory (Pack).
func readModule(m *manifest.Manifest, f *manifest.Function) ([]byte, error) {
	if f.Runtime == manifest.RuntimeProcess {
		data, err := Pack(f.Module)
		if err != nil {
			return nil, fmt.Errorf("function %s: pack %s: %w", f.Name, rel(m, f.Module), err)
		}
		return data, nil
	}
	data, err := os.ReadFile(f.Module)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		hint := "build it first, or add build.command to the function so deploy builds it"
		if f.Build != nil {
			hint = "did the build command write it? set module to the file the build produces"
		}
		return nil, fmt.Errorf("function %s: module %s does not exist (%s): %s: %w", f.Name, rel(m, f.Module), f.Module, hint, err)
	case err != nil:
		return nil, fmt.Errorf("function %s: read module %s: %w", f.Name, rel(m, f.Module), err)
	case !bytes.HasPrefix(data, wasmMagic):
		return nil, fmt.Errorf("function %s: module %s: %w: it does not start with \\0asm (for Go, build with GOOS=wasip1 GOARCH=wasm)", f.Name, rel(m, f.Module), ErrNotWasm)
	}
	return data, nil
}

// rel is path relative to the manifest's directory, as the manifest wrote it.
func rel(m *manifest.Manifest, path string) string {
	r, err := filepath.Rel(m.Dir, path)
	if err != nil {
		return path
	}
	return filepath.ToSlash(r)
}

// lineWriter splits output into lines, emits each, and keeps the last few.
// exec calls Write from one goroutine at a time because Stdout and Stderr
// are the same writer.
type lineWriter struct {
	emit    func(string)
	partial []byte
	last    []string
}

func (w *lineWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.partial = append(w.partial, p...)
			// Split very long lines rather than buffer without bound.
			for len(w.partial) > maxLine {
				w.line(w.partial[:maxLine])
				w.partial = append(w.partial[:0], w.partial[maxLine:]...)
			}
			break
		}
		w.partial = append(w.partial, p[:i]...)
		w.line(w.partial)
		w.partial = w.partial[:0]
		p = p[i+1:]
	}
	return n, nil
}

func (w *lineWriter) flush() {
	if len(w.partial) > 0 {
		w.line(w.partial)
		w.partial = nil
	}
}

func (w *lineWriter) line(b []byte) {
	if len(b) > maxLine {
		b = b[:maxLine]
	}
	s := strings.TrimRight(string(b), "\r")
	if len(w.last) == outputLines {
		w.last = append(w.last[:0], w.last[1:]...)
	}
	w.last = append(w.last, s)
	w.emit(s)
}
