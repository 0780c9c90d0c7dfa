//go:build unix

package store

import "golang.org/x/sys/unix"

// freeSpace is what an unprivileged writer may still use on dir's
// filesystem.
func freeSpace(dir string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return uint64(st.Bavail) * uint64(st.Bsize), nil
}
