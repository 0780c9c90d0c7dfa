package store

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

const testStream = "COMMIT_TEST"

// commitStore opens a store with a test stream (subjects t.>, duplicate
// window, atomic batches allowed) and a KV bucket "cas".
func commitStore(t *testing.T, dir string) *Store {
	t.Helper()
	s := openStore(t, dir, "")
	ctx := context.Background()
	if _, err := s.JetStream().CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: testStream, Subjects: []string{"t.>"}, Storage: jetstream.FileStorage,
		Duplicates: time.Minute, AllowAtomicPublish: true,
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.JetStream().CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "cas", Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	return s
}

func put(subject, data string) Write {
	return Write{Stream: testStream, Subject: subject, Data: []byte(data)}
}

func isWrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// queueAll makes the lane of stream look busy, runs every commit of fns
// concurrently, waits until all of them are queued and then lets the lane
// run: they are committed in one batch (if they fit), deterministically.
func queueAll(t *testing.T, c *Committer, stream string, units int, commit func(i int)) {
	t.Helper()
	c.mu.Lock()
	l := &lane{c: c, stream: stream, space: make(chan struct{}), running: true}
	c.lanes[stream] = l
	c.mu.Unlock()
	var wg sync.WaitGroup
	for i := range units {
		wg.Go(func() { commit(i) })
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		c.mu.Lock()
		n := len(l.queue)
		c.mu.Unlock()
		if n == units {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d units queued", n, units)
		}
		time.Sleep(time.Millisecond) // poll
	}
	c.wg.Add(1)
	go l.run()
	wg.Wait()
}

func TestCommitSharesCommits(t *testing.T) {
	s := commitStore(t, t.TempDir())
	defer s.Close()
	c := s.Committer()
	const callers, each = 64, 50
	var mu sync.Mutex
	seqs := map[uint64]string{}
	var wg sync.WaitGroup
	for g := range callers {
		wg.Go(func() {
			for i := range each {
				id := fmt.Sprintf("%d.%d", g, i)
				res, err := c.Commit(context.Background(), &Unit{Writes: []Write{put("t.a", id)}})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if other, ok := seqs[res[0].Seq]; ok {
					t.Errorf("%s and %s both at seq %d", id, other, res[0].Seq)
				}
				seqs[res[0].Seq] = id
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	st := c.Stats()
	t.Logf("stats %+v (%.1f writes per commit)", st, float64(st.Writes)/float64(st.Commits))
	if st.Writes != callers*each || st.Failed != 0 {
		t.Fatalf("stats %+v", st)
	}
	if st.Commits >= st.Writes || st.MaxBatch < 2 {
		t.Errorf("no commit was shared: %+v", st)
	}
	stream, err := s.JetStream().Stream(context.Background(), testStream)
	if err != nil {
		t.Fatal(err)
	}
	for seq, id := range seqs {
		m, err := stream.GetMsg(context.Background(), seq)
		if err != nil || string(m.Data) != id {
			t.Fatalf("seq %d: %v %q, want %q", seq, err, m.Data, id)
		}
	}
}

// TestCommitCASFailsAlone: in one batch of many units, the units whose
// compare-and-swap does not hold fail with the server's wrong-last-sequence
// error and the others are committed.
func TestCommitCASFailsAlone(t *testing.T) {
	s := commitStore(t, t.TempDir())
	defer s.Close()
	c := s.Committer()
	ctx := context.Background()
	res, err := c.Commit(ctx, &Unit{Writes: []Write{KVPut("cas", "k", []byte("v0"))}})
	if err != nil {
		t.Fatal(err)
	}
	rev := res[0].Seq
	stale := rev + 1000
	const units = 40
	errs := make([]error, units)
	var counters Counters
	queueAll(t, c, KVStream("cas"), units, func(i int) {
		// Every unit writes two keys of its own; every fifth also
		// compare-and-swaps "k" at a revision it does not have.
		u := &Unit{Counters: &counters, Writes: []Write{
			KVPut("cas", fmt.Sprintf("a%d", i), []byte("x")),
			KVPut("cas", fmt.Sprintf("b%d", i), []byte("y")),
		}}
		if i%5 == 0 {
			w := KVPut("cas", "k", []byte("conflict"))
			w.IfLastSeq = &stale
			u.Writes = append(u.Writes, w)
		}
		_, errs[i] = c.Commit(ctx, u)
	})
	kv, err := s.JetStream().KeyValue(ctx, "cas")
	if err != nil {
		t.Fatal(err)
	}
	for i, err := range errs {
		_, getErr := kv.Get(ctx, fmt.Sprintf("a%d", i))
		if i%5 == 0 {
			if !isWrongLastSeq(err) {
				t.Errorf("unit %d: %v, want a wrong-last-sequence error", i, err)
			}
			if !errors.Is(getErr, jetstream.ErrKeyNotFound) {
				t.Errorf("unit %d failed but its write a%d is stored (%v)", i, i, getErr)
			}
			continue
		}
		if err != nil || getErr != nil {
			t.Errorf("unit %d: %v, read back: %v", i, err, getErr)
		}
	}
	if e, err := kv.Get(ctx, "k"); err != nil || string(e.Value()) != "v0" {
		t.Errorf("k: %v %v", e, err)
	}
	st := counters.Stats()
	if st.Splits == 0 || st.Failed != 3*units/5 || st.Writes != 2*units*4/5 {
		t.Errorf("counters %+v", st)
	}
}

func TestCommitDuplicates(t *testing.T) {
	s := commitStore(t, t.TempDir())
	defer s.Close()
	c := s.Committer()
	ctx := context.Background()
	w := func(id string) Write { x := put("t.d", id); x.MsgID = id; return x }
	first, err := c.Commit(ctx, &Unit{Writes: []Write{w("a")}})
	if err != nil {
		t.Fatal(err)
	}
	// Across commits, within a unit, and across units of one batch.
	results := make([][]Result, 8)
	errs := make([]error, 8)
	queueAll(t, c, testStream, 8, func(i int) {
		u := &Unit{Writes: []Write{w(fmt.Sprintf("u%d", i)), w(fmt.Sprintf("u%d", i))}}
		switch i {
		case 0:
			u.Writes = append(u.Writes, w("a"))
		case 1, 2:
			u.Writes = append(u.Writes, w("shared"))
		}
		results[i], errs[i] = c.Commit(ctx, u)
	})
	for i := range 8 {
		if errs[i] != nil {
			t.Fatalf("unit %d: %v", i, errs[i])
		}
		r := results[i]
		if r[0].Duplicate || !r[1].Duplicate || r[1].Seq != r[0].Seq {
			t.Errorf("unit %d: %+v", i, r)
		}
	}
	if r := results[0][2]; !r.Duplicate || r.Seq != first[0].Seq {
		t.Errorf("a again: %+v, first at %d", r, first[0].Seq)
	}
	if a, b := results[1][2], results[2][2]; a.Duplicate == b.Duplicate || a.Seq != b.Seq {
		t.Errorf("shared: %+v and %+v", a, b)
	}
}

func TestCommitRejects(t *testing.T) {
	s := commitStore(t, t.TempDir())
	defer s.Close()
	c := s.Committer()
	ctx := context.Background()
	_, err := c.Commit(ctx, &Unit{Writes: []Write{put("t.x", "1"), KVPut("cas", "k", nil)}})
	if !errors.Is(err, ErrMultiStream) {
		t.Errorf("two streams: %v", err)
	}
	_, err = c.Commit(ctx, &Unit{Writes: []Write{put("t.x", "1"), put("t.*", "2")}})
	var we *WriteError
	if !errors.As(err, &we) || we.Index != 1 || !errors.Is(err, ErrInvalidWrite) {
		t.Errorf("wildcard: %v", err)
	}
	_, err = c.Commit(ctx, &Unit{Writes: []Write{{Stream: testStream, Subject: "t.x", Data: make([]byte, MaxPayload)}}})
	if !errors.As(err, &we) || !errors.Is(err, ErrWriteTooLarge) {
		t.Errorf("too large: %v", err)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Commit(ctx, &Unit{Writes: []Write{put("t.x", "1")}}); !errors.Is(err, ErrCommitterClosed) {
		t.Errorf("after close: %v", err)
	}
}

// TestCommitKill9 runs a child that commits units of two writes from
// several goroutines and reports each acknowledged unit, kills it with
// SIGKILL mid-stream, and checks that every acknowledged unit is stored
// whole after a restart.
func TestCommitKill9(t *testing.T) {
	if dir := os.Getenv("NIMBUS_COMMIT_KILL_CHILD"); dir != "" {
		commitKillChild(t, dir)
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCommitKill9$", "-test.count=1")
	cmd.Env = append(os.Environ(), "NIMBUS_COMMIT_KILL_CHILD="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var acked []string
	sc := bufio.NewScanner(out)
	for sc.Scan() && len(acked) < 300 {
		if id, ok := strings.CutPrefix(sc.Text(), "acked "); ok {
			acked = append(acked, id)
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if len(acked) < 300 {
		t.Fatalf("child acknowledged only %d units", len(acked))
	}
	s := openStore(t, dir, "")
	defer s.Close()
	ctx := context.Background()
	st, err := s.JetStream().Stream(ctx, testStream)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range acked {
		for _, part := range []string{"a", "b"} {
			m, err := st.GetLastMsgForSubject(ctx, "t."+id+"."+part)
			if err != nil || string(m.Data) != id {
				t.Fatalf("acknowledged unit %s lost its write %s after kill -9: %v", id, part, err)
			}
		}
	}
}

func commitKillChild(t *testing.T, dir string) {
	s := commitStore(t, dir)
	c := s.Committer()
	var wg sync.WaitGroup
	var out sync.Mutex
	for g := range 8 {
		wg.Go(func() {
			for i := range 10000 {
				id := strconv.Itoa(g) + "-" + strconv.Itoa(i)
				_, err := c.Commit(context.Background(), &Unit{Writes: []Write{put("t."+id+".a", id), put("t."+id+".b", id)}})
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(1)
				}
				out.Lock()
				fmt.Printf("acked %s\n", id)
				out.Unlock()
			}
		})
	}
	wg.Wait()
	os.Exit(0)
}
