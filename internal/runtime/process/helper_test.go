package process

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/runtime/process/sandboxinit"
)

// helperEnv makes the test binary a stand-in for a node (runHelper): it
// starts a sandboxed guest that starts a child of its own, prints the
// guest's uid, and waits to be killed.
const helperEnv = "NIMBUS_PROCESS_TEST_HELPER"

func runHelper() int {
	dir := os.Getenv(helperEnv)
	rt, err := New(Config{Dir: filepath.Join(dir, "process")})
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	guestDir = os.Getenv("GUEST_DIR")
	s := spec(panicTB{}, true)
	m, err := rt.Load(context.Background(), s)
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	inst, err := m.NewInstance(context.Background())
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	if _, err := inst.Handle(context.Background(), &runtime.Request{Method: "GET", Path: "/spawn"}); err != nil {
		fmt.Println("error:", err)
		return 1
	}
	fmt.Printf("uid %d pid %d\n", inst.(*instance).p.sb.uid, inst.(*instance).p.cmd.Process.Pid)
	select {} // until killed
}

// panicTB lets the helper, which is not a test, use the test's helpers.
type panicTB struct{ testing.TB }

func (panicTB) Helper()               {}
func (panicTB) Fatal(args ...any)     { panic(fmt.Sprint(args...)) }
func (panicTB) Fatalf(string, ...any) { panic("fatal") }

// processesOf lists the pids of live (not zombie) processes running as uid.
func processesOf(uid int) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		var uidOK, zombie bool
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "Uid:"); ok {
				f := strings.Fields(v)
				uidOK = len(f) > 0 && f[0] == strconv.Itoa(uid)
			}
			if v, ok := strings.CutPrefix(line, "State:"); ok {
				zombie = strings.HasPrefix(strings.TrimSpace(v), "Z")
			}
		}
		if uidOK && !zombie {
			out = append(out, pid)
		}
	}
	return out
}

// TestNothingSurvivesSIGKILL kills a stand-in node with SIGKILL while its
// sandboxed process (and a child that process started) runs: the process
// dies by its parent-death signal and takes its pid namespace with it.
func TestNothingSurvivesSIGKILL(t *testing.T) {
	sandboxed(t)
	node := exec.Command(os.Args[0], "-test.run=^$")
	node.Env = append(os.Environ(), helperEnv+"="+t.TempDir(), "GUEST_DIR="+guestDir)
	out, err := node.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	node.Stderr = os.Stderr
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	defer node.Process.Kill()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("helper: %v (%q)", err, line)
	}
	var uid, pid int
	if _, err := fmt.Sscanf(line, "uid %d pid %d", &uid, &pid); err != nil {
		t.Fatalf("helper said %q", line)
	}
	if n := len(processesOf(uid)); n < 2 {
		t.Fatalf("%d processes run as uid %d, want the guest and its child", n, uid)
	}
	// The sandboxes the node made ahead of time wait as helpers (still
	// root, no function in them): they must die with it too.
	var pooled []int
	eventually(t, 10*time.Second, "the node's pool of sandboxes fills", func() bool {
		pooled = helpersOf(node.Process.Pid, nil)
		return len(pooled) >= 2
	})
	if err := node.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	node.Wait()
	eventually(t, 10*time.Second, "every process of the killed node's sandbox exits", func() bool { return len(processesOf(uid)) == 0 })
	eventually(t, 10*time.Second, "every unclaimed sandbox's helper exits", func() bool { return len(helpersOf(0, pooled)) == 0 })
}

// helpersOf lists the pids of live sandbox helpers that are children of
// parent (when not 0) and among pids (when not nil).
func helpersOf(parent int, pids []int) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pids != nil && !slices.Contains(pids, pid) {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.HasPrefix(string(b), sandboxinit.Arg0+"\x00") {
			continue
		}
		st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil || strings.Contains(string(st), "State:\tZ") {
			continue
		}
		if parent != 0 && !strings.Contains(string(st), "\nPPid:\t"+strconv.Itoa(parent)+"\n") {
			continue
		}
		out = append(out, pid)
	}
	return out
}

// TestSandbox: the process runs as its own uid, as the init of its own pid
// namespace, cannot change its code, has a private temp directory, cannot
// read the node's files, and has no network but its loopback.
func TestSandbox(t *testing.T) {
	sandboxed(t)
	rt := newRuntime(t)
	inst := start(t, load(t, rt, spec(t, true)))
	who := mustGet(t, inst, "/whoami")
	var uid, pid, euid, gid, egid, threads, rootIDs int
	var wd, host, groups string
	if _, err := fmt.Sscanf(who, "uid=%d pid=%d wd=%s host=%s euid=%d gid=%d egid=%d groups=%s threads=%d rootids=%d",
		&uid, &pid, &wd, &host, &euid, &gid, &egid, &groups, &threads, &rootIDs); err != nil {
		t.Fatalf("whoami: %q: %v", who, err)
	}
	// Its own uid and gid on every thread, no supplementary group.
	if pid != 1 || uid == 0 || euid != uid || gid != uid || egid != uid || groups != "[]" || threads < 2 || rootIDs != 0 {
		t.Errorf("whoami: %s, want pid 1, one uid other than root as every id, no groups, no thread with a root id", who)
	}
	if got := mustGet(t, inst, "/write"); got != "app dir read-only; tmp writable" {
		t.Errorf("write: %s", got)
	}
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("node data"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, inst, "/read?path="+secret); !strings.HasPrefix(got, "read failed") {
		t.Errorf("reading a node file: %s", got)
	}
	// An address outside: the namespace has no route to it. (192.0.2.1 is
	// TEST-NET-1: never dialed for real even where it had a route.)
	if got := mustGet(t, inst, "/dial?addr=192.0.2.1:80"); !strings.Contains(got, "network is unreachable") {
		t.Errorf("dial outside: %s", got)
	}
}

// TestHostileGuests: a fork bomb is held to the process cap, a memory bomb
// is killed at the memory cap, and the runtime keeps serving.
func TestHostileGuests(t *testing.T) {
	sandboxed(t)
	rt := newRuntime(t)
	m := load(t, rt, spec(t, true, func(s *runtime.Spec) { s.Limits.MemoryBytes = 32 << 20; s.Limits.Timeout = 3 * time.Second }))

	bomb := start(t, m)
	sb := bomb.(*instance).p.sb
	uid := sb.uid
	if got := mustGet(t, bomb, "/forkbomb?ms=300"); got != "bombed" {
		t.Fatalf("forkbomb: %q", got)
	}
	if n := sb.pids(); n > rt.cfg.MaxProcs {
		t.Fatalf("%d processes in the sandbox, over the cap of %d", n, rt.cfg.MaxProcs)
	}
	if got := mustGet(t, start(t, m), "/big?n=2"); got != "xx" {
		t.Fatalf("another instance during the fork bomb: %q", got)
	}
	bomb.Close(context.Background())
	eventually(t, 10*time.Second, "the fork bomb's processes exit", func() bool { return len(processesOf(uid)) == 0 })

	_, err := get(t, start(t, m), "/membomb")
	var lim *runtime.LimitError
	if !errors.Is(err, runtime.ErrMemoryLimit) || !errors.As(err, &lim) || lim.Limit != "32MiB" {
		t.Fatalf("membomb: %v, want ErrMemoryLimit (32MiB)", err)
	}
	if got := mustGet(t, start(t, m), "/big?n=1"); got != "x" {
		t.Fatalf("after the memory bomb: %q", got)
	}
}
