//go:build !unix

package store

// dirLock is a no-op where flock is unavailable; Nimbus targets Linux and
// macOS.
type dirLock struct{}

func lockDir(string) (*dirLock, error) { return &dirLock{}, nil }

func (*dirLock) release() error { return nil }
