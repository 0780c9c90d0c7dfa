package process

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime"
)

// guestDir holds the test guest (testdata/guest) built once for the test
// binary, as the only file of a function directory.
var guestDir string

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runHelper())
	}
	dir, err := os.MkdirTemp("", "process-guest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "guest"), "./testdata/guest")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build test guest: %v\n%s", err, out)
		os.Exit(1)
	}
	guestDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// tarDir is the artifact deploy makes of a function directory.
func tarDir(t testing.TB, dir string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		h, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			_, err = tw.Write(b)
			return err
		}
		return nil
	})
	if err == nil {
		err = tw.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

var guestTar struct {
	once sync.Once
	b    []byte
}

func guestArtifact(t testing.TB) []byte {
	guestTar.once.Do(func() { guestTar.b = tarDir(t, guestDir) })
	return guestTar.b
}

func newRuntime(t testing.TB) *Runtime {
	t.Helper()
	rt, err := New(Config{Dir: filepath.Join(t.TempDir(), "process"), StopGrace: time.Second, MaxProcs: 64})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close(context.Background()) })
	return rt
}

// spec is a guest function with test limits; isolation none unless sandbox.
func spec(t testing.TB, sandbox bool, mutate ...func(*runtime.Spec)) runtime.Spec {
	iso := model.IsolationNone
	if sandbox {
		iso = model.IsolationSandbox
	}
	s := runtime.Spec{
		App: "app", Function: "fn", Runtime: model.RuntimeProcess, Revision: strings.Repeat("ab", 32),
		Artifact: guestArtifact(t),
		Process:  &model.Process{Command: []string{"./guest"}, Contract: model.ContractHTTP, Isolation: iso},
		Env:      map[string]string{"GREETING": "hello"},
		Limits:   runtime.Limits{MemoryBytes: 64 << 20, Timeout: 5 * time.Second, MaxResponseBytes: 1 << 20},
	}
	for _, f := range mutate {
		f(&s)
	}
	return s
}

func load(t testing.TB, rt *Runtime, s runtime.Spec) runtime.Module {
	t.Helper()
	m, err := rt.Load(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(context.Background()) })
	return m
}

func start(t testing.TB, m runtime.Module) runtime.Instance {
	t.Helper()
	inst, err := m.NewInstance(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inst.Close(context.Background()) })
	return inst
}

func get(t testing.TB, inst runtime.Instance, path string) (*runtime.Response, error) {
	t.Helper()
	p, q, _ := strings.Cut(path, "?")
	return inst.Handle(context.Background(), &runtime.Request{Method: "GET", Path: p, RawQuery: q, InvocationID: "inv-1"})
}

func mustGet(t testing.TB, inst runtime.Instance, path string) string {
	t.Helper()
	resp, err := get(t, inst, path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return string(resp.Body)
}

// sandboxed skips a test on a host that cannot sandbox.
func sandboxed(t *testing.T) {
	t.Helper()
	if h := Probe(); !h.Sandbox() {
		t.Skipf("host cannot sandbox processes: %s", strings.Join(h.Missing, "; "))
	}
}

func modes(t *testing.T, f func(t *testing.T, sandbox bool)) {
	t.Run("unisolated", func(t *testing.T) { f(t, false) })
	t.Run("sandbox", func(t *testing.T) { sandboxed(t); f(t, true) })
}

func TestHTTPContract(t *testing.T) {
	t.Setenv("NIMBUS_NODE_SECRET", "must-not-leak")
	modes(t, func(t *testing.T, sandbox bool) {
		rt := newRuntime(t)
		m := load(t, rt, spec(t, sandbox))
		if m.Contract() != runtime.ContractHTTP || !m.Reusable() {
			t.Fatalf("contract %s reusable %v", m.Contract(), m.Reusable())
		}
		inst := start(t, m)
		resp, err := inst.Handle(context.Background(), &runtime.Request{
			Method: "PUT", Path: "/echo", RawQuery: "a=1&b=2", Body: []byte("payload"),
			Header: http.Header{"X-Test": {"yes"}, "Connection": {"close"}}, InvocationID: "inv-42",
		})
		if err != nil {
			t.Fatal(err)
		}
		h := resp.Header
		if resp.Status != 201 || string(resp.Body) != "payload" || h.Get("X-Echo-Method") != "PUT" ||
			h.Get("X-Echo-Query") != "a=1&b=2" || h.Get("X-Echo-Test") != "yes" || h.Get("X-Echo-Invocation") != "inv-42" {
			t.Fatalf("echo: %d %q %v", resp.Status, resp.Body, h)
		}

		var env []string
		if err := json.Unmarshal([]byte(mustGet(t, inst, "/env")), &env); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"GREETING=hello", "PATH=" + Path} {
			if !slices.Contains(env, want) {
				t.Errorf("env %v lacks %s", env, want)
			}
		}
		for _, kv := range env {
			if strings.Contains(kv, "must-not-leak") {
				t.Errorf("the node's environment leaked: %s", kv)
			}
			if strings.HasPrefix(kv, "GOMAXPROCS=") { // the sandbox helper's own
				t.Errorf("the sandbox helper's environment leaked: %s", kv)
			}
		}
		port := "PORT=" + fmt.Sprint(sandboxPort)
		if !sandbox {
			port = "PORT="
		}
		if !slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, port) }) {
			t.Errorf("env %v lacks %s", env, port)
		}

		// The process and all its threads are SCHED_BATCH: their wakeups
		// never preempt the node.
		if who := mustGet(t, inst, "/whoami"); !strings.Contains(who, " nonbatch=0") {
			t.Errorf("whoami: %s: want every thread SCHED_BATCH (nonbatch=0)", who)
		}

		// Concurrent requests on one instance.
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				body := fmt.Sprint("req-", i)
				resp, err := inst.Handle(context.Background(), &runtime.Request{Method: "POST", Path: "/echo", Body: []byte(body)})
				if err == nil && string(resp.Body) != body {
					err = fmt.Errorf("got %q, want %q", resp.Body, body)
				}
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Error(err)
			}
		}
	})
}

func TestReadinessPath(t *testing.T) {
	rt := newRuntime(t)
	m := load(t, rt, spec(t, false, func(s *runtime.Spec) { s.Process.ReadinessPath = "/healthz" }))
	if got := mustGet(t, start(t, m), "/healthz"); got != "ok" {
		t.Fatalf("healthz %q", got)
	}
}

// sink collects log lines.
type sink struct {
	mu    sync.Mutex
	lines []string
}

func (s *sink) Log(stream, _ string, line []byte) {
	s.mu.Lock()
	s.lines = append(s.lines, stream+": "+string(line))
	s.mu.Unlock()
}

func (s *sink) has(line string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Contains(s.lines, line)
}

func (s *sink) hasPrefix(prefix string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.ContainsFunc(s.lines, func(l string) bool { return strings.HasPrefix(l, prefix) })
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestLogsGoToTheRequest: lines a process writes while one request is in
// flight land in that request's log: the guest writes them before it
// answers, and the runtime lets its output pipes drain before the request
// ends (outPipe.drain), so every request gets its own lines.
func TestLogsGoToTheRequest(t *testing.T) {
	modes(t, func(t *testing.T, sandbox bool) {
		rt := newRuntime(t)
		inst := start(t, load(t, rt, spec(t, sandbox)))
		for attempt := range 5 {
			s := &sink{}
			tag := fmt.Sprint("t", attempt)
			if _, err := inst.Handle(context.Background(), &runtime.Request{Method: "GET", Path: "/log", RawQuery: "tag=" + tag, Log: s}); err != nil {
				t.Fatal(err)
			}
			if !s.has("stdout: to stdout "+tag) || !s.has("stderr: to stderr "+tag) {
				t.Fatalf("request %d: the process's output did not reach its log: %v", attempt, s.lines)
			}
		}
	})
}

func TestCrashFailsTheRequestAndIsReplaced(t *testing.T) {
	rt := newRuntime(t)
	m := load(t, rt, spec(t, false))
	inst := start(t, m)
	_, err := get(t, inst, "/crash")
	if !errors.Is(err, runtime.ErrGuestFailed) || !strings.Contains(err.Error(), "boom: crashing on purpose") || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("crash: %v, want ErrGuestFailed with the exit status and the last stderr line", err)
	}
	// The scheduler closes an instance whose request failed and starts
	// another; a process that dies while idle is replaced by the instance.
	inst2 := start(t, m)
	if got := mustGet(t, inst2, "/exit-later"); got != "bye" {
		t.Fatalf("exit-later: %q", got)
	}
	i2 := inst2.(*instance)
	i2.mu.Lock()
	old := i2.p
	i2.mu.Unlock()
	<-old.exited
	if got := mustGet(t, inst2, "/echo"); got != "" {
		t.Fatalf("after the idle process died: %q", got)
	}
}

func TestStartFailure(t *testing.T) {
	rt := newRuntime(t)
	m := load(t, rt, spec(t, false, func(s *runtime.Spec) { s.Env["GUEST_FAIL_START"] = "1" }))
	_, err := m.NewInstance(context.Background())
	if !errors.Is(err, runtime.ErrGuestFailed) || !strings.Contains(err.Error(), "exited before it was ready") || !strings.Contains(err.Error(), "GUEST_FAIL_START is set") {
		t.Fatalf("NewInstance: %v", err)
	}
}

func TestLimits(t *testing.T) {
	modes(t, func(t *testing.T, sandbox bool) {
		rt := newRuntime(t)
		m := load(t, rt, spec(t, sandbox, func(s *runtime.Spec) { s.Limits.Timeout = 300 * time.Millisecond; s.Limits.MaxResponseBytes = 1000 }))

		inst := start(t, m)
		proc := func() *proc { // the process serving now (a pid is 1 in a sandbox)
			i := inst.(*instance)
			i.mu.Lock()
			defer i.mu.Unlock()
			return i.p
		}
		first := proc()
		// An answer over the limit fails the request and leaves the
		// process serving: the error says so.
		if _, err := get(t, inst, "/big?n=1001"); !errors.Is(err, runtime.ErrResponseTooLarge) || !runtime.IsIntact(err) {
			t.Fatalf("big response: %v (intact %v)", err, runtime.IsIntact(err))
		}
		if got := mustGet(t, inst, "/big?n=1000"); len(got) != 1000 {
			t.Fatalf("response at the limit: %d bytes", len(got))
		}
		// A caller that goes away does not abort the request: the process
		// finishes it (the request holds its slot until then) and serves on.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		resp, err := inst.Handle(ctx, &runtime.Request{Method: "GET", Path: "/sleep", RawQuery: "ms=150"})
		cancel()
		if err != nil || string(resp.Body) != "slept" {
			t.Fatalf("caller gone: %v, want the process's answer all the same", err)
		}
		mustGet(t, inst, "/big?n=1")
		if proc() != first {
			t.Fatal("after the caller left: another process serves, want the same")
		}
		// ... and a stuck request whose caller went away is still stopped
		// at the function's timeout.
		ctx, cancel = context.WithTimeout(context.Background(), 20*time.Millisecond)
		_, err = inst.Handle(ctx, &runtime.Request{Method: "GET", Path: "/loop"})
		cancel()
		if !errors.Is(err, runtime.ErrTimeout) {
			t.Fatalf("a loop whose caller left: %v, want the timeout", err)
		}
		select {
		case <-first.exited:
		case <-time.After(5 * time.Second):
			t.Fatal("the looping process still runs after its timeout, its caller gone")
		}

		// An infinite loop: the deadline kills the process.
		inst = start(t, m)
		p := inst.(*instance).p
		_, err = get(t, inst, "/loop")
		var lim *runtime.LimitError
		if !errors.Is(err, runtime.ErrTimeout) || !errors.As(err, &lim) || lim.Limit != "300ms" || runtime.IsIntact(err) {
			t.Fatalf("loop: %v (intact %v)", err, runtime.IsIntact(err))
		}
		select {
		case <-p.exited:
		case <-time.After(5 * time.Second):
			t.Fatal("the looping process is still running after its request timed out")
		}
		// Another instance serves.
		if got := mustGet(t, start(t, m), "/big?n=3"); got != "xxx" {
			t.Fatalf("after the loop: %q", got)
		}
	})
}

// TestEndlessResponseHead: a process that answers with a head that never
// ends (one endless header line, endless headers, endless 1xx answers)
// fails its request at once, with the node's memory bounded, instead of
// being read until the request's timeout; the instance serves on.
func TestEndlessResponseHead(t *testing.T) {
	modes(t, func(t *testing.T, sandbox bool) {
		rt := newRuntime(t)
		m := load(t, rt, spec(t, sandbox, func(s *runtime.Spec) { s.Limits.Timeout = time.Minute }))
		inst := start(t, m)
		for _, kind := range []string{"line", "headers", "1xx"} {
			_, err := get(t, inst, "/headerbomb?kind="+kind)
			if !errors.Is(err, runtime.ErrGuestFailed) || !strings.Contains(err.Error(), "response head over 1MiB") {
				t.Fatalf("%s: %v", kind, err)
			}
			if got := mustGet(t, inst, "/big?n=3"); got != "xxx" {
				t.Fatalf("after %s: %q", kind, got)
			}
		}
	})
}

func TestLoadErrors(t *testing.T) {
	rt := newRuntime(t)
	for _, tc := range []struct {
		name   string
		mutate func(*runtime.Spec)
		want   string
	}{
		{"not a tar", func(s *runtime.Spec) { s.Artifact = []byte("\x00asm\x01\x00\x00\x00") }, "not a tar"},
		{"empty", func(s *runtime.Spec) { s.Artifact = nil }, "artifact is empty"},
		{"missing program", func(s *runtime.Spec) { s.Process.Command = []string{"./server"} }, `command "./server" is not in the function's directory`},
		{"not on PATH", func(s *runtime.Spec) { s.Process.Command = []string{"no-such-program-x"} }, "not found in the process's PATH"},
		{"outside", func(s *runtime.Spec) { s.Process.Command = []string{"../guest"} }, "outside the function's directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := rt.Load(context.Background(), spec(t, false, tc.mutate))
			if !errors.Is(err, runtime.ErrInvalidModule) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load: %v, want %q", err, tc.want)
			}
		})
	}
	// A tar that escapes its directory.
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "../evil", Mode: 0o644, Size: 1, Typeflag: tar.TypeReg})
	tw.Write([]byte("x"))
	tw.Close()
	_, err := rt.Load(context.Background(), spec(t, false, func(s *runtime.Spec) { s.Artifact = buf.Bytes() }))
	if !errors.Is(err, runtime.ErrInvalidModule) || !strings.Contains(err.Error(), "outside the function's directory") {
		t.Fatalf("escaping tar: %v", err)
	}
}

// TestUnisolatedNeedsOptIn: on a host without the sandbox a function that
// does not opt out is refused with what is missing.
func TestUnisolatedNeedsOptIn(t *testing.T) {
	rt, err := New(Config{Dir: t.TempDir(), Host: &Host{Missing: []string{"root (test)"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close(context.Background())
	_, err = rt.Load(context.Background(), spec(t, true))
	if !errors.Is(err, ErrUnisolated) || !strings.Contains(err.Error(), "root (test)") || !strings.Contains(err.Error(), "isolation: none") {
		t.Fatalf("Load: %v", err)
	}
	m, err := rt.Load(context.Background(), spec(t, false))
	if err != nil {
		t.Fatalf("Load with isolation none: %v", err)
	}
	m.Close(context.Background())
}
