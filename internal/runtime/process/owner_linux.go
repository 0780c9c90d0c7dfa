package process

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// listenerOwnedBy reports whether a TCP socket listening on port (IPv4 or
// IPv6, any address) is held open by a process of the process group pgid.
// An error means /proc could not tell (then the caller trusts the dial).
func listenerOwnedBy(port, pgid int) (bool, error) {
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		if err := listeningInodes(f, port, inodes); err != nil && !errors.Is(err, os.ErrNotExist) {
			return false, err
		}
	}
	if len(inodes) == 0 {
		return false, nil // nobody listens (any more): the dial was someone else's
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return false, err
	}
	for _, d := range procs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || processGroup(pid) != pgid {
			continue
		}
		fds, err := os.ReadDir(filepath.Join("/proc", d.Name(), "fd"))
		if err != nil {
			continue
		}
		for _, fd := range fds {
			l, err := os.Readlink(filepath.Join("/proc", d.Name(), "fd", fd.Name()))
			if err == nil && strings.HasPrefix(l, "socket:[") && inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] {
				return true, nil
			}
		}
	}
	return false, nil
}

// listeningInodes adds to inodes those of the sockets in file (the format
// of /proc/net/tcp) that listen on port.
func listeningInodes(file string, port int, inodes map[string]bool) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // the header
	for sc.Scan() {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[3] != "0A" { // 0A: TCP_LISTEN
			continue
		}
		i := strings.LastIndexByte(fields[1], ':')
		if p, err := strconv.ParseUint(fields[1][i+1:], 16, 16); err == nil && int(p) == port {
			inodes[fields[9]] = true
		}
	}
	return sc.Err()
}

// processGroup is pid's process group, or -1 if it cannot be read.
func processGroup(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return -1
	}
	// pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 3 {
		return -1
	}
	g, err := strconv.Atoi(f[2])
	if err != nil {
		return -1
	}
	return g
}
