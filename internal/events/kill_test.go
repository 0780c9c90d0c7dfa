package events

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TestKill9 runs a child process whose 16 appenders write events through a
// Log and report every acknowledged one, kills it with SIGKILL while it is
// still appending, and checks that after a new store.Open every
// acknowledged event is in the stream at its acknowledged sequence.
func TestKill9(t *testing.T) {
	t.Parallel()
	if dir := os.Getenv("NIMBUS_EVENTS_KILL_CHILD"); dir != "" {
		killChild(dir)
		return
	}
	const wantAcked = 3000
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKill9$", "-test.count=1")
	cmd.Env = append(os.Environ(), "NIMBUS_EVENTS_KILL_CHILD="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[string]uint64{}
	sc := bufio.NewScanner(out)
	for sc.Scan() && len(acked) < wantAcked {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == "acked" {
			seq, _ := strconv.ParseUint(f[2], 10, 64)
			acked[f[1]] = seq
		}
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL while it is still appending
		t.Fatal(err)
	}
	cmd.Wait()
	if len(acked) < wantAcked {
		t.Fatalf("child acknowledged only %d events", len(acked))
	}

	s := openStore(t, dir)
	defer s.Close()
	ctx := context.Background()
	l, err := OpenLog(ctx, s.JetStream(), LogConfig{Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(ctx)
	stored := map[string]uint64{}
	for _, m := range readAll(t, s.JetStream(), l.Stream()) {
		id := m.Headers().Get(nats.MsgIdHdr)
		if _, dup := stored[id]; dup {
			t.Fatalf("%s stored twice", id)
		}
		stored[id] = seqOf(t, m)
	}
	for id, seq := range acked {
		if stored[id] != seq {
			t.Fatalf("acknowledged event %s (seq %d) lost after kill -9 (found at %d)", id, seq, stored[id])
		}
	}
	t.Logf("%d acknowledged before SIGKILL, %d stored after restart", len(acked), len(stored))
}

func killChild(dir string) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s := openStore(nopTB{}, dir)
	l, err := OpenLog(ctx, s.JetStream(), LogConfig{Logger: testLogger()})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := 0; i < 100000 && ctx.Err() == nil; i++ {
				id := fmt.Sprintf("%d.%d", g, i)
				acks, err := l.Append(ctx, Entry{Subject: "nimbus.events.app.t", MsgID: id, Data: []byte(id)})
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(1)
				}
				mu.Lock()
				fmt.Printf("acked %s %d\n", id, acks[0].Seq)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	os.Exit(0)
}

// nopTB lets the child reuse openStore; it exits on failure.
type nopTB struct{ testing.TB }

func (nopTB) Helper() {}
func (nopTB) Fatal(args ...any) {
	fmt.Fprintln(os.Stderr, args...)
	os.Exit(1)
}
