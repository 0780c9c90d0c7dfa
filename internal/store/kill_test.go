package store

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestKill9 runs a child process that writes to the registry bucket and
// reports every acknowledged write, kills it with SIGKILL mid-stream, and
// checks that a new Open finds every acknowledged write and the data
// directory unlocked.
func TestKill9(t *testing.T) {
	if dir := os.Getenv("NIMBUS_STORE_KILL_CHILD"); dir != "" {
		killChild(dir)
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKill9$", "-test.count=1")
	cmd.Env = append(os.Environ(), "NIMBUS_STORE_KILL_CHILD="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := -1
	sc := bufio.NewScanner(out)
	for sc.Scan() && acked < 200 {
		if n, ok := strings.CutPrefix(sc.Text(), "acked "); ok {
			acked, _ = strconv.Atoi(n)
		}
	}
	if acked < 200 {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child acknowledged only %d writes", acked)
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL while it is still writing
		t.Fatal(err)
	}
	cmd.Wait()

	s := openStore(t, dir, "")
	defer s.Close()
	ctx := context.Background()
	for i := 0; i <= acked; i++ {
		e, err := s.Registry().Get(ctx, fmt.Sprintf("k%d", i))
		if err != nil || string(e.Value()) != strconv.Itoa(i) {
			t.Fatalf("acknowledged write %d lost after kill -9: %v", i, err)
		}
	}
}

func killChild(dir string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, Options{DataDir: dir, Logger: testLogger()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for i := 0; i < 100000 && ctx.Err() == nil; i++ {
		if _, err := s.Registry().Put(ctx, fmt.Sprintf("k%d", i), []byte(strconv.Itoa(i))); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("acked %d\n", i)
	}
	os.Exit(0)
}
