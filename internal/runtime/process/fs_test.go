package process

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFilesystemView: a sandboxed process sees its code read-only at /app,
// a private /tmp bounded in size, the system paths, and nothing else of
// the host: not a world-readable file planted by the node, not the host's
// users, not the runtime's directory, not /etc/shadow.
func TestFilesystemView(t *testing.T) {
	sandboxed(t)
	rt, err := New(Config{Dir: filepath.Join(t.TempDir(), "process"), MaxProcs: 64, TmpBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close(t.Context()) })
	inst := start(t, load(t, rt, spec(t, true)))

	planted := filepath.Join(t.TempDir(), "planted")
	for _, d := range []string{filepath.Dir(planted), filepath.Dir(filepath.Dir(planted))} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(planted, []byte("host data"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{planted, "/etc/shadow", filepath.Join(rt.dir, "tmp"), "/root/.bashrc"} {
		if got := mustGet(t, inst, "/read?path="+path); !strings.Contains(got, "no such file or directory") {
			t.Errorf("reading %s: %q, want no such file", path, got)
		}
	}
	passwd := mustGet(t, inst, "/cat?path=/etc/passwd")
	uid := inst.(*instance).p.sb.uid
	if !strings.Contains(passwd, fmt.Sprintf("nimbus:x:%d:%d:", uid, uid)) || strings.Count(passwd, "\n") != 2 {
		t.Errorf("/etc/passwd is not the sandbox's own:\n%s", passwd)
	}
	if got := mustGet(t, inst, "/ls?path=/"); got != "app bin dev etc lib lib64 proc sbin sys tmp usr" {
		t.Errorf("the root holds %q", got)
	}
	if got := mustGet(t, inst, "/ls?path=/proc"); strings.Contains(got, "2 ") || !strings.HasPrefix(got, "1 ") {
		// Only pid 1 (and what it started) is in its pid namespace.
		t.Errorf("/proc: %q, want the namespace's own processes", got)
	}
	if got := mustGet(t, inst, "/whoami"); !strings.Contains(got, " wd=/app ") {
		t.Errorf("whoami: %s, want the working directory /app", got)
	}
	if got := mustGet(t, inst, "/write"); got != "app dir read-only; tmp writable" {
		t.Errorf("write: %s", got)
	}
	// /tmp is a 1MiB tmpfs: 2MiB do not fit.
	if got := mustGet(t, inst, "/fill?n=2097152"); !strings.Contains(got, "no space left on device") {
		t.Errorf("filling /tmp: %s", got)
	}
	// Its own cgroups, read-only, where runtimes look for their limits.
	limitFile := "/sys/fs/cgroup/memory/memory.limit_in_bytes"
	if rt.host.Cgroup2 != "" {
		limitFile = "/sys/fs/cgroup/memory.max"
		// The cgroup namespace is rooted at the instance's cgroup.
		if got := mustGet(t, inst, "/cat?path=/proc/self/cgroup"); got != "0::/\n" {
			t.Errorf("/proc/self/cgroup as the process reads it: %q", got)
		}
	}
	if got := mustGet(t, inst, "/cat?path="+limitFile); got != fmt.Sprint(64<<20)+"\n" {
		t.Errorf("memory limit as the process reads it: %q", got)
	}
	if got := mustGet(t, inst, "/read?path=/usr/bin/env"); got != "read ok" {
		t.Errorf("system paths: %s", got)
	}
}
