//go:build unix

package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// dirLock is an exclusive advisory lock on DataDir/LOCK. nats-server takes no
// lock on its store directory, and two servers writing one JetStream
// directory corrupt it, so Nimbus takes its own. The kernel releases the lock
// when the process dies, so a kill -9 leaves no stale lock behind.
type dirLock struct {
	f *os.File
}

func lockDir(dir string) (*dirLock, error) {
	path := filepath.Join(dir, "LOCK")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock data directory: %w", err)
	}
	if err := flockWait(f, lockWait); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s (lock %s is held; stop the other `nimbus up` or use another --data directory)", ErrLocked, dir, path)
		}
		return nil, fmt.Errorf("lock data directory %s: %w", dir, err)
	}
	// The pid is informational only: the flock is what excludes.
	_ = f.Truncate(0)
	_, _ = fmt.Fprintf(f, "%d\n", os.Getpid())
	return &dirLock{f: f}, nil
}

// lockWait is how long lockDir waits for a lock that is held. A lock
// released a moment ago can still be held for a moment: flock belongs to
// the open file, and a child forked by this process (a process function,
// a build) shares every descriptor from fork until its exec closes the
// close-on-exec ones. So a node that stops and starts again on the same
// directory in one process could find its own lock still held. Another
// live node holds it for longer than this, and is reported.
const lockWait = 2 * time.Second

// flockWait takes an exclusive flock on f, trying again until wait has
// passed while another holds it.
func flockWait(f *os.File, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for delay := 5 * time.Millisecond; ; delay = min(2*delay, 200*time.Millisecond) {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().Add(delay).After(deadline) {
			return err
		}
		time.Sleep(delay)
	}
}

func (l *dirLock) release() error {
	if l == nil || l.f == nil {
		return nil
	}
	// Closing the file drops the flock.
	err := l.f.Close()
	l.f = nil
	if err != nil {
		return fmt.Errorf("unlock data directory: %w", err)
	}
	return nil
}
