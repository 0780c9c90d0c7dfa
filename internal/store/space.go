package store

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrDiskFull is the error of a write refused because the filesystem of
// the data directory has less free space than the store keeps in reserve
// (see DiskFullError).
var ErrDiskFull = errors.New("store: disk full")

// ErrStreamStopped is the error of a write to a stream that nats-server
// stopped after one of its writes failed (see StreamStoppedError).
var ErrStreamStopped = errors.New("store: stream stopped after a failed write")

// StreamStoppedError names the stream and the write error that stopped
// it, and what to do: nats-server refuses the stream's writes, without
// answering them, until it restarts.
type StreamStoppedError struct {
	Stream string
	Cause  string // the failed write's error, as the server reported it
}

func (e *StreamStoppedError) Error() string {
	return fmt.Sprintf("store: stream %s stopped writing after a failed write (%s); nothing acknowledged is lost, "+
		"but it takes no write until the node restarts: free space if the disk is full, then restart nimbus up", e.Stream, e.Cause)
}

func (e *StreamStoppedError) Unwrap() error { return ErrStreamStopped }

// DefaultDiskReserve is the free space below which the store refuses
// writes (Options.DiskReserve).
const DefaultDiskReserve = 64 << 20

// spaceCheckEvery is how long one reading of the free space stands: a
// commit reads it again only when the last reading is older.
const spaceCheckEvery = 50 * time.Millisecond

// DiskFullError says how much space is left and what to do.
type DiskFullError struct {
	Dir     string // the data directory
	Free    uint64 // bytes free for the store when it was refused
	Reserve uint64 // the reserve it keeps
}

func (e *DiskFullError) Error() string {
	return fmt.Sprintf("store: disk full: %s free on the filesystem of %s, below the %s the store keeps in reserve; "+
		"nothing was written. Free space on that filesystem: writes resume by themselves",
		byteSize(e.Free), e.Dir, byteSize(e.Reserve))
}

func (e *DiskFullError) Unwrap() error { return ErrDiskFull }

// spaceGuard refuses writes before the filesystem is full. nats-server
// treats a failed write (ENOSPC) as fatal for the stream: the stream
// refuses every later write, without answering them, until the server
// restarts. So the store stops writing while some space is left, and
// starts again as soon as there is enough, with nothing to repair.
type spaceGuard struct {
	dir     string
	reserve uint64
	free    func(dir string) (uint64, error)

	mu      sync.Mutex
	checked time.Time
	err     error
}

// check returns a *DiskFullError when the free space is below the
// reserve, reading it at most every spaceCheckEvery. A filesystem whose
// free space cannot be read does not stop writes.
func (g *spaceGuard) check() error {
	if g == nil || g.reserve == 0 {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if now := time.Now(); now.Sub(g.checked) >= spaceCheckEvery {
		g.checked = now
		g.err = nil
		if free, err := g.free(g.dir); err == nil {
			g.err = g.refusal(free)
		}
	}
	return g.err
}

// refusal is the *DiskFullError of a write with free bytes left, nil when
// free is not below the reserve.
func (g *spaceGuard) refusal(free uint64) error {
	if free >= g.reserve {
		return nil
	}
	return &DiskFullError{Dir: g.dir, Free: free, Reserve: g.reserve}
}

// byteSize writes n in the largest unit that keeps it at 1 or more.
func byteSize(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// Storage states (StorageStatus.State).
const (
	StorageOK       = "ok"
	StorageDiskFull = "disk_full" // free space under the reserve: writes refused until there is more
	StorageStopped  = "stopped"   // a stream failed a write: its writes refused until the node restarts
)

// StorageStatus is the state of the store's disk, for the status API and
// the metrics.
type StorageStatus struct {
	Dir          string
	FreeBytes    uint64
	ReserveBytes uint64
	State        string   // StorageOK, StorageDiskFull or StorageStopped
	Message      string   // what is wrong and what to do, when State is not ok
	Stopped      []string // streams stopped after a failed write, sorted
}

// Storage reads the free space now and returns the store's disk state.
func (s *Store) Storage() StorageStatus {
	st := StorageStatus{Dir: s.space.dir, ReserveBytes: s.space.reserve, State: StorageOK}
	if free, err := s.space.free(s.space.dir); err == nil {
		st.FreeBytes = free
		if err := s.space.refusal(free); err != nil {
			st.State, st.Message = StorageDiskFull, err.Error()
		}
	}
	if stopped := s.nlog.stopped(); len(stopped) > 0 {
		st.State = StorageStopped
		st.Stopped = stopped
		st.Message = s.nlog.streamFailed(stopped[0]).Error()
	}
	return st
}
