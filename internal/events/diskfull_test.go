//go:build linux

package events

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/store"
)

// smallDisk mounts a tmpfs of size bytes on a temp dir for the test (it
// needs root, which CI has; it skips otherwise) and returns its path.
func smallDisk(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d", size)); err != nil {
		t.Skipf("cannot mount a small filesystem for the test (needs root): %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// fill writes a file that leaves about left bytes free on dir's
// filesystem, and returns its path.
func fill(t *testing.T, dir string, left int64) string {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	free := int64(st.Bavail) * st.Bsize
	path := filepath.Join(dir, "filler")
	if err := os.WriteFile(path, make([]byte, max(free-left, 0)), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestDiskFull fills the data directory's filesystem for real. Appends are
// refused with ErrDiskFull (at once, saying what is free and what to do)
// before the disk is full; once space is freed they go through again on
// the same node, without a restart; every acknowledged event is there
// after a restart. Without the reserve, nats-server's stream fails its
// write, stops answering and refuses every later write until the server
// restarts.
func TestDiskFull(t *testing.T) {
	disk := smallDisk(t, 64<<20)
	data := filepath.Join(disk, "data")
	open := func() (*store.Store, *Log) {
		s, err := store.Open(context.Background(), store.Options{DataDir: data, Logger: testLogger(), DiskReserve: 8 << 20})
		if err != nil {
			t.Fatal(err)
		}
		l, err := OpenLog(context.Background(), s.JetStream(), LogConfig{Logger: testLogger(), Committer: s.Committer()})
		if err != nil {
			t.Fatal(err)
		}
		return s, l
	}
	s, l := open()
	appendOne := func(id string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := l.Append(ctx, Entry{Subject: "nimbus.events.a.t", MsgID: id, Data: make([]byte, 1000)})
		return err
	}
	acked := 0
	for ; acked < 100; acked++ {
		if err := appendOne(fmt.Sprint("e", acked)); err != nil {
			t.Fatalf("append %d on a disk with room: %v", acked, err)
		}
	}

	filler := fill(t, disk, 4<<20) // under the 8 MiB reserve, far from full
	var refused error
	deadline := time.Now().Add(30 * time.Second)
	for refused == nil && time.Now().Before(deadline) {
		if err := appendOne(fmt.Sprint("e", acked)); err != nil {
			refused = err
		} else {
			acked++ // taken before the guard read the free space again
		}
	}
	if !errors.Is(refused, store.ErrDiskFull) {
		t.Fatalf("append on a nearly full disk: %v, want ErrDiskFull", refused)
	}
	var dfe *store.DiskFullError
	if !errors.As(refused, &dfe) || dfe.Free >= dfe.Reserve || !strings.Contains(refused.Error(), "Free space on that filesystem") {
		t.Fatalf("the error does not say what is free and what to do: %v", refused)
	}
	t.Logf("refused after %d appends: %v", acked, refused)

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if err = appendOne(fmt.Sprint("e", acked)); err == nil {
			acked++
			break
		}
	}
	if err != nil {
		t.Fatalf("append after space was freed, same node: %v", err)
	}
	for i := 0; i < 10; i++ {
		if err := appendOne(fmt.Sprint("e", acked)); err != nil {
			t.Fatalf("append %d after space was freed: %v", acked, err)
		}
		acked++
	}

	l.Close(context.Background())
	s.Close()
	s, l = open()
	defer s.Close()
	defer l.Close(context.Background())
	if got := len(readAll(t, s.JetStream(), l.Stream())); got != acked {
		t.Fatalf("%d events stored after a restart, %d were acknowledged", got, acked)
	}
}
