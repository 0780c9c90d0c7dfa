package guestbuild

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/manifest"
)

// writeApp writes files (name -> content) into a new directory and returns
// the manifest loaded from its nimbus.yaml.
func writeApp(t *testing.T, files map[string]string) *manifest.Manifest {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m, err := manifest.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// events records progress events.
type events []Event

func (e *events) add(ev Event) { *e = append(*e, ev) }

func (e events) messages() string {
	var b strings.Builder
	for _, ev := range e {
		fmt.Fprintf(&b, "%s/%s: %s done=%v\n", ev.Function, ev.Step, ev.Message, ev.Done)
	}
	return b.String()
}

const wasmHeader = "\x00asm\x01\x00\x00\x00"

// TestBuildGoGuest builds a real Go wasip1 guest with the local toolchain.
func TestBuildGoGuest(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a Go program; skipped with -short")
	}
	m := writeApp(t, map[string]string{
		"nimbus.yaml": `app: hello
functions:
  hello:
    module: guest/hello.wasm
    build:
      command: go build -o hello.wasm .
      dir: guest
`,
		"guest/go.mod":  "module example.com/guest\n\ngo 1.24\n",
		"guest/main.go": "package main\n\nfunc main() {}\n",
	})
	var ev events
	mods, err := Build(context.Background(), m, ev.add)
	if err != nil {
		t.Fatalf("Build: %v\nevents:\n%s", err, ev.messages())
	}
	if !bytes.HasPrefix(mods["hello"], []byte(wasmHeader)) {
		t.Fatalf("module does not start with the wasm header (GOOS/GOARCH not set?): % x", mods["hello"][:min(8, len(mods["hello"]))])
	}
	first, last := ev[0], ev[len(ev)-1]
	if first.Step != StepBuild || first.Message != "(in guest) $ go build -o hello.wasm ." {
		t.Errorf("first event = %+v", first)
	}
	if last.Step != StepRead || !last.Done || last.Err != nil || !strings.HasPrefix(last.Message, "read guest/hello.wasm (") {
		t.Errorf("last event = %+v", last)
	}
}

func TestBuildSharedCommandRunsOnce(t *testing.T) {
	m := writeApp(t, map[string]string{
		"nimbus.yaml": `app: hello
functions:
  a:
    module: a.wasm
    build: {command: "echo ran >> count.txt; echo GOOS=$GOOS GOARCH=$GOARCH"}
  b:
    module: b.wasm
    build: {command: "echo ran >> count.txt; echo GOOS=$GOOS GOARCH=$GOARCH"}
  c:
    module: c.wasm
`,
		"a.wasm": wasmHeader + "a",
		"b.wasm": wasmHeader + "b",
		"c.wasm": wasmHeader + "c",
	})
	var ev events
	mods, err := Build(context.Background(), m, ev.add)
	if err != nil {
		t.Fatal(err)
	}
	for name, suffix := range map[string]string{"a": "a", "b": "b", "c": "c"} {
		if string(mods[name]) != wasmHeader+suffix {
			t.Errorf("module %s = %q", name, mods[name])
		}
	}
	count, err := os.ReadFile(filepath.Join(m.Dir, "count.txt"))
	if err != nil || string(count) != "ran\n" {
		t.Errorf("count.txt = %q, %v; want the shared command to run once", count, err)
	}
	want := `a/build: $ echo ran >> count.txt; echo GOOS=$GOOS GOARCH=$GOARCH done=false
a/build: GOOS=wasip1 GOARCH=wasm done=false
a/build: build ok done=true
a/read: read a.wasm (9 bytes) done=true
b/read: read b.wasm (9 bytes) done=true
c/read: read c.wasm (9 bytes) done=true
`
	if got := ev.messages(); got != want {
		t.Errorf("events:\n%s\nwant:\n%s", got, want)
	}
}

func TestBuildFailingCommand(t *testing.T) {
	m := writeApp(t, map[string]string{
		"nimbus.yaml": `app: hello
functions:
  hello:
    module: hello.wasm
    build:
      command: "echo to-stderr >&2; i=1; while [ $i -le 30 ]; do echo line$i; i=$((i+1)); done; exit 3"
`,
	})
	var ev events
	_, err := Build(context.Background(), m, ev.add)
	var ce *CommandError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v; want *CommandError", err)
	}
	if len(ce.Output) != 20 || ce.Output[0] != "line11" || ce.Output[19] != "line30" {
		t.Errorf("Output = %q; want line11..line30", ce.Output)
	}
	wantStart := fmt.Sprintf("function hello: %s:6:16: build.command failed: exit status 3; last 20 lines of output:\n    line11\n", m.File)
	if !strings.HasPrefix(err.Error(), wantStart) || !strings.HasSuffix(err.Error(), "\n    line30") {
		t.Errorf("error:\n%s\nwant it to start with:\n%s", err, wantStart)
	}
	// Every line streamed, stderr included, then a final failed event.
	if got := ev.messages(); !strings.Contains(got, "hello/build: to-stderr done=false\n") || !strings.Contains(got, "hello/build: line1 done=false\n") {
		t.Errorf("events missing output lines:\n%s", got)
	}
	if last := ev[len(ev)-1]; !last.Done || last.Err != err {
		t.Errorf("last event = %+v; want Done with the error", last)
	}
}

func TestBuildModuleProblems(t *testing.T) {
	for _, c := range []struct {
		name, manifest string
		files          map[string]string
		want           string
		is             error
	}{{
		name:     "missing after build",
		manifest: "app: a\nfunctions:\n  hello:\n    module: out/hello.wasm\n    build: {command: \"true\"}\n",
		want:     "function hello: module out/hello.wasm does not exist (%s): did the build command write it? set module to the file the build produces: ",
		is:       fs.ErrNotExist,
	}, {
		name:     "missing without build",
		manifest: "app: a\nfunctions:\n  hello:\n    module: out/hello.wasm\n",
		want:     "function hello: module out/hello.wasm does not exist (%s): build it first, or add build.command to the function so deploy builds it: ",
		is:       fs.ErrNotExist,
	}, {
		name:     "not wasm",
		manifest: "app: a\nfunctions:\n  hello:\n    module: out/hello.wasm\n",
		files:    map[string]string{"out/hello.wasm": "#!/bin/sh\necho hi\n"},
		want:     `function hello: module out/hello.wasm: not a WebAssembly module: it does not start with \0asm (for Go, build with GOOS=wasip1 GOARCH=wasm)`,
		is:       ErrNotWasm,
	}} {
		t.Run(c.name, func(t *testing.T) {
			files := map[string]string{"nimbus.yaml": c.manifest}
			for k, v := range c.files {
				files[k] = v
			}
			m := writeApp(t, files)
			_, err := Build(context.Background(), m, nil)
			want := c.want
			if strings.Contains(want, "%s") {
				want = fmt.Sprintf(want, m.Functions[0].Module)
			}
			if !errors.Is(err, c.is) || !strings.HasPrefix(err.Error(), want) {
				t.Errorf("err = %v\nwant prefix %s (and errors.Is %v)", err, want, c.is)
			}
		})
	}
}

// TestBuildCancel cancels a build whose command started a background child
// and checks Build returns and the whole process group is gone.
func TestBuildCancel(t *testing.T) {
	m := writeApp(t, map[string]string{
		"nimbus.yaml": `app: a
functions:
  hello:
    module: hello.wasm
    build:
      command: "sleep 300 & echo $! > child.pid; echo started; wait"
`,
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := Build(ctx, m, func(ev Event) {
		if ev.Message == "started" {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v; want context.Canceled", err)
	}
	data, err := os.ReadFile(filepath.Join(m.Dir, "child.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	// Killing the group is asynchronous: poll until the child is gone.
	checkFor(t, 10*time.Second, 10*time.Millisecond, func() error {
		if alive(pid) {
			return fmt.Errorf("background child %d still running after cancel", pid)
		}
		return nil
	})
}

// checkFor calls f every interval until it returns nil, and fails the test
// with f's last error once total has passed (nats-server's checkFor).
func checkFor(t testing.TB, total, interval time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", total, err)
		}
		time.Sleep(interval)
	}
}

// alive reports whether pid is a running (not zombie) process.
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command name in parentheses: "pid (comm) S ...".
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}

func TestLineWriter(t *testing.T) {
	var got []string
	w := &lineWriter{emit: func(s string) { got = append(got, s) }}
	for _, chunk := range []string{"a", "b\r\nc\n", "", "d\ne", strings.Repeat("x", maxLine+10)} {
		if _, err := w.Write([]byte(chunk)); err != nil {
			t.Fatal(err)
		}
	}
	w.flush()
	if len(got) != 5 || got[0] != "ab" || got[1] != "c" || got[2] != "d" || len(got[3]) != maxLine || got[4] != "xxxxxxxxxxx" {
		t.Errorf("lines = %q", got)
	}
}
