package process

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestSandboxPool: starts claim sandboxes made ahead of time, each once:
// two instances have their own uid, network namespace and cgroups; the
// pool refills; and closing the runtime leaves no helper of an unclaimed
// sandbox running.
func TestSandboxPool(t *testing.T) {
	sandboxed(t)
	t.Parallel()
	rt, err := New(Config{Dir: filepath.Join(t.TempDir(), "process"), StopGrace: time.Second, MaxProcs: 64, Sandboxes: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close(context.Background())
	m := load(t, rt, spec(t, true))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := rt.SandboxesReady(ctx); err != nil {
		t.Fatal(err)
	}
	pooled := map[*sandbox]bool{}
	rt.pool.mu.Lock()
	for _, sb := range rt.pool.ready {
		pooled[sb] = true
	}
	rt.pool.mu.Unlock()

	a, b := start(t, m).(*instance).p, start(t, m).(*instance).p
	if !pooled[a.sb] || !pooled[b.sb] {
		t.Fatal("the starts made their own sandboxes though the pool was full")
	}
	netns := func(p *proc) string {
		l, err := os.Readlink("/proc/" + strconv.Itoa(p.cmd.Process.Pid) + "/ns/net")
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	memA, memB := a.sb.cg.binds()[0][0], b.sb.cg.binds()[0][0] // the memory cgroups (v1), the one cgroup (v2)
	if a.sb.uid == b.sb.uid || netns(a) == netns(b) || memA == memB {
		t.Fatalf("two instances share a sandbox: uids %d %d, netns %s %s, cgroups %s %s",
			a.sb.uid, b.sb.uid, netns(a), netns(b), memA, memB)
	}
	limitFile := "memory.limit_in_bytes"
	if rt.host.Cgroup2 != "" {
		limitFile = "memory.max"
	}
	limit, err := os.ReadFile(filepath.Join(memA, limitFile))
	if err != nil || string(limit) != strconv.Itoa(64<<20)+"\n" {
		t.Fatalf("claimed sandbox's memory cap: %q %v, want the function's 64MiB", limit, err)
	}
	if err := rt.SandboxesReady(ctx); err != nil {
		t.Fatalf("the pool does not refill: %v", err)
	}
	rt.pool.mu.Lock()
	var uids []int
	refilled := rt.pool.ready
	for _, sb := range refilled {
		if pooled[sb] {
			t.Error("a claimed sandbox is back in the pool")
		}
		uids = append(uids, sb.uid)
	}
	rt.pool.mu.Unlock()
	for _, uid := range uids {
		if len(processesOf(uid)) != 0 {
			t.Fatalf("a pooled helper runs as its uid %d before any claim: it must still be root", uid)
		}
	}
	rt.Close(context.Background())
	rt.pool.mu.Lock()
	n := len(rt.pool.ready)
	rt.pool.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d sandboxes pooled after Close", n)
	}
	for _, sb := range refilled {
		if sb.alive() {
			t.Fatalf("the helper of an unclaimed sandbox (pid %d) runs after Close", sb.cmd.Process.Pid)
		}
	}
}
