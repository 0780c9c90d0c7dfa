package process

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// listenerOwnedBy reports whether a TCP socket listening on port (IPv4 or
// IPv6, any address) is held open by a process of the process group pgid.
// An error means /proc could not tell (then the caller trusts the dial).
func listenerOwnedBy(port, pgid int) (bool, error) {
	inodes, err := listeningInodes(port)
	if err != nil {
		return false, err
	}
	if len(inodes) == 0 {
		return false, nil // nobody listens (any more): the dial was someone else's
	}
	// The group's leader first, the process Nimbus started: most programs
	// listen in it, and a scan of every process on the host costs
	// milliseconds (three system calls each for its group).
	if holdsSocket(pgid, inodes) {
		return true, nil
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return false, err
	}
	for _, d := range procs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || pid == pgid || processGroup(pid) != pgid {
			continue
		}
		if holdsSocket(pid, inodes) {
			return true, nil
		}
	}
	return false, nil
}

// holdsSocket reports whether process pid has one of the sockets of
// inodes open.
func holdsSocket(pid int, inodes map[string]bool) bool {
	dir := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	fds, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, fd := range fds {
		l, err := os.Readlink(filepath.Join(dir, fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") && inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] {
			return true
		}
	}
	return false
}

// listeningInodes returns the inodes of the TCP sockets (IPv4 and IPv6)
// that listen on port, asked of the kernel with a sock_diag dump of the
// listening sockets only. /proc/net/tcp would say the same, but reading
// it walks the whole connection table: 7 ms here for 150 lines, most of
// an unisolated process's cold start. It is the fallback, for a kernel
// that does not answer sock_diag for TCP (tcp_diag not loaded).
func listeningInodes(port int) (map[string]bool, error) {
	inodes, err := diagListeningInodes(port)
	if err == nil {
		return inodes, nil
	}
	inodes = map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		if err := procListeningInodes(f, port, inodes); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	return inodes, nil
}

// diagListeningInodes is listeningInodes through sock_diag.
func diagListeningInodes(port int) (map[string]bool, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_INET_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag: %w", err)
	}
	defer unix.Close(fd)
	inodes := map[string]bool{}
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		if err := dumpListeners(fd, family, port, inodes); err != nil {
			return nil, err
		}
	}
	return inodes, nil
}

// procListeningInodes adds to inodes those of the sockets in file (the
// format of /proc/net/tcp) that listen on port.
func procListeningInodes(file string, port int, inodes map[string]bool) error {
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

// Sizes and offsets of the sock_diag messages (linux/inet_diag.h): a
// request is struct inet_diag_req_v2, an answer struct inet_diag_msg,
// each after a struct nlmsghdr.
const (
	diagReqLen     = unix.SizeofNlMsghdr + 56
	diagMsgLen     = 72
	diagMsgSport   = 4  // idiag_sport, big-endian
	diagMsgInode   = 68 // idiag_inode
	tcpListenState = 10 // TCP_LISTEN
)

// dumpListeners adds to inodes those of family's listening TCP sockets
// on port.
func dumpListeners(fd int, family uint8, port int, inodes map[string]bool) error {
	req := make([]byte, diagReqLen)
	binary.NativeEndian.PutUint32(req[0:], diagReqLen)
	binary.NativeEndian.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	req[16], req[17] = family, unix.IPPROTO_TCP
	binary.NativeEndian.PutUint32(req[20:], 1<<tcpListenState)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("sock_diag: %w", err)
	}
	buf := make([]byte, 32<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("sock_diag: %w", err)
		}
		for b := buf[:n]; len(b) >= unix.SizeofNlMsghdr; {
			l := int(binary.NativeEndian.Uint32(b[0:]))
			if l < unix.SizeofNlMsghdr || l > len(b) {
				return errors.New("sock_diag: a truncated answer")
			}
			switch binary.NativeEndian.Uint16(b[4:]) {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if l >= unix.SizeofNlMsghdr+4 {
					if e := int32(binary.NativeEndian.Uint32(b[unix.SizeofNlMsghdr:])); e != 0 {
						return fmt.Errorf("sock_diag: %w", unix.Errno(-e))
					}
				}
				return nil
			}
			if m := b[unix.SizeofNlMsghdr:l]; len(m) >= diagMsgLen && int(binary.BigEndian.Uint16(m[diagMsgSport:])) == port {
				inodes[strconv.FormatUint(uint64(binary.NativeEndian.Uint32(m[diagMsgInode:])), 10)] = true
			}
			b = b[min((l+3)&^3, len(b)):]
		}
	}
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
