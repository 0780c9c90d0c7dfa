//go:build unix

package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
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
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
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
