package process

import (
	"maps"
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// TestListenerOwnedBy: a listener is found as its process group's, and
// not as another group's (an unisolated process whose port another
// program took must not be reported ready).
func TestListenerOwnedBy(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		addr := "127.0.0.1:0"
		if network == "tcp6" {
			addr = "[::1]:0"
		}
		ln, err := net.Listen(network, addr)
		if err != nil {
			t.Logf("%s: %v (skipped)", network, err)
			continue
		}
		port := ln.Addr().(*net.TCPAddr).Port
		if ok, err := listenerOwnedBy(port, syscall.Getpgrp()); err != nil || !ok {
			t.Fatalf("%s: our own listener on %d: owned=%v err=%v", network, port, ok, err)
		}
		other := exec.Command("sleep", "30")
		other.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := other.Start(); err != nil {
			t.Fatal(err)
		}
		ok, err := listenerOwnedBy(port, other.Process.Pid)
		other.Process.Kill()
		other.Wait()
		if err != nil || ok {
			t.Fatalf("%s: a listener of ours reported as another group's: owned=%v err=%v", network, ok, err)
		}
		ln.Close()
		if ok, _ := listenerOwnedBy(port, syscall.Getpgrp()); ok {
			t.Fatalf("%s: a closed listener still reported", network)
		}
	}
}

// TestFreePortOutsideEphemeralRange: ports given to unisolated processes
// are below the kernel's ephemeral range, where "port 0" listeners and
// outgoing connections never land.
// TestListeningInodesAgree: sock_diag and /proc/net (the fallback) find
// the same listening sockets, for IPv4 and IPv6.
func TestListeningInodesAgree(t *testing.T) {
	for _, addr := range []string{"127.0.0.1:0", "[::1]:0"} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Logf("%s: %v (skipped)", addr, err)
			continue
		}
		defer ln.Close()
		port := ln.Addr().(*net.TCPAddr).Port
		diag, err := diagListeningInodes(port)
		if err != nil {
			t.Fatalf("sock_diag: %v", err)
		}
		proc := map[string]bool{}
		for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
			if err := procListeningInodes(f, port, proc); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
		}
		if len(diag) != 1 || !maps.Equal(diag, proc) {
			t.Fatalf("%s: sock_diag found %v, /proc/net %v", addr, diag, proc)
		}
	}
}

func TestFreePortOutsideEphemeralRange(t *testing.T) {
	for range 20 {
		p, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		if p < 10000 || p >= 32768 {
			t.Fatalf("port %d outside 10000-32767", p)
		}
	}
}
