package process

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingSink counts the bytes written to it.
type countingSink struct{ n atomic.Int64 }

func (s *countingSink) Write(b []byte) (int, error) {
	s.n.Add(int64(len(b)))
	return len(b), nil
}

// TestDrainUnderSteadyOutput: while a process writes without pause (the
// lines of other requests, under concurrency), drain still returns only
// once everything written before it was called reached the writer.
func TestDrainUnderSteadyOutput(t *testing.T) {
	// Not the bound that keeps a stuck pipe from holding answers: what is
	// tested is what drain waits for.
	defer func(d time.Duration) { drainWait = d }(drainWait)
	drainWait = time.Minute
	sink := &countingSink{}
	o, w, err := newOutPipe(sink)
	if err != nil {
		t.Fatal(err)
	}
	var written atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		line := []byte("a line another request wrote\n")
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, err := w.Write(line)
			written.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	for range 200 {
		before := written.Load()
		o.drain()
		if got := sink.n.Load(); got < before {
			t.Fatalf("drain returned with %d bytes delivered, %d were written before it", got, before)
		}
	}
	close(stop)
	wg.Wait()
	w.Close()
	o.wait(time.Second)
	if got, want := sink.n.Load(), written.Load(); got != want {
		t.Fatalf("%d bytes delivered, %d written", got, want)
	}
}

// TestDrainAfterEnd: a drain of a pipe that ended returns at once.
func TestDrainAfterEnd(t *testing.T) {
	o, w, err := newOutPipe(&countingSink{})
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("last words\n"))
	w.Close()
	<-o.done
	o.drain()
	o.wait(time.Second)
}
