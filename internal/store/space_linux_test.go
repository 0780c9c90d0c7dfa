//go:build linux

package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// TestStreamStoppedByAFullDisk fills a real filesystem (a tmpfs; it needs
// root, which CI has) with no reserve kept, so that a write reaches the
// full disk: nats-server stops the stream, the commit that hit it ends
// without an answer (after the commit timeout), and the next commits fail
// with ErrStreamStopped saying to restart, without being sent. After freeing space and restarting,
// the stream takes writes and holds every acknowledged one.
func TestStreamStoppedByAFullDisk(t *testing.T) {
	disk := t.TempDir()
	if err := syscall.Mount("tmpfs", disk, "tmpfs", 0, "size=48m"); err != nil {
		t.Skipf("cannot mount a small filesystem for the test (needs root): %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(disk, syscall.MNT_DETACH) })
	data := filepath.Join(disk, "data")
	open := func() *Store {
		s, err := Open(context.Background(), Options{DataDir: data, Logger: testLogger(), DiskReserve: -1})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.JetStream().CreateOrUpdateStream(context.Background(), jetstream.StreamConfig{
			Name: testStream, Subjects: []string{"t.>"}, Storage: jetstream.FileStorage, AllowAtomicPublish: true,
		}); err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	var st syscall.Statfs_t
	if err := syscall.Statfs(disk, &st); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(disk, "filler")
	if err := os.WriteFile(filler, make([]byte, int64(st.Bavail)*st.Bsize-(1<<20)), 0o644); err != nil {
		t.Fatal(err)
	}
	commit := func(i int) error {
		// Longer than the commit timeout (10s), which the write the server
		// left unanswered holds the stream's lane for.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err := s.Committer().Commit(ctx, &Unit{Writes: []Write{{Stream: testStream, Subject: "t.x", Data: make([]byte, 4096)}}})
		return err
	}
	acked, i := 0, 0
	var err error
	for ; i < 1000; i++ {
		if err = commit(i); err != nil {
			break
		}
		acked++
	}
	if err == nil {
		t.Fatal("1000 writes of 4 KiB fit on a disk with 1 MiB free")
	}
	t.Logf("after %d writes: %v", acked, err)
	err = commit(i + 1)
	if !errors.Is(err, ErrStreamStopped) || !strings.Contains(err.Error(), "restart") || !strings.Contains(err.Error(), testStream) {
		t.Fatalf("a write to the stopped stream: %v, want ErrStreamStopped naming it and saying to restart", err)
	}

	if st := s.Storage(); st.State != StorageStopped || len(st.Stopped) != 1 || st.Stopped[0] != testStream || !strings.Contains(st.Message, "restart") {
		t.Fatalf("storage state of a stopped stream: %+v", st)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open()
	defer s.Close()
	if err := commit(i + 2); err != nil {
		t.Fatalf("a write after freeing space and restarting: %v", err)
	}
	if st := s.Storage(); st.State != StorageOK || len(st.Stopped) != 0 {
		t.Fatalf("storage state after the restart: %+v", st)
	}
	info, err := s.JetStream().Stream(context.Background(), testStream)
	if err != nil {
		t.Fatal(err)
	}
	if n := info.CachedInfo().State.Msgs; n < uint64(acked)+1 {
		t.Fatalf("%d messages after the restart, %d were acknowledged before it and 1 after", n, acked)
	}
}
