package process

import (
	"errors"
	"io"
	"os"
	"sync"
	"syscall"
	"time"
)

// outPipe carries one output stream of a process (stdout or stderr) to a
// writer. Each read from the pipe and the write of what it read happen
// under one lock, so that drain can tell, exactly, that everything the
// process wrote so far has reached the writer: a request's log gets the
// lines its process wrote before answering, although they travel on
// another pipe than the answer.
type outPipe struct {
	r    *os.File
	mu   sync.Mutex
	w    io.Writer
	done chan struct{} // closed when the pipe ended (every writer closed it, or close)

	// Under mu: the bytes read from the pipe so far, and a channel closed
	// (and replaced) at the next read, made when a drain waits for one.
	read  int64
	moved chan struct{}
}

// newOutPipe returns the pipe and its write end, for the process.
func newOutPipe(w io.Writer) (*outPipe, *os.File, error) {
	r, wr, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	o := &outPipe{r: r, w: w, done: make(chan struct{})}
	go o.run()
	return o, wr, nil
}

func (o *outPipe) run() {
	defer close(o.done)
	rc, err := o.r.SyscallConn()
	if err != nil {
		return
	}
	buf := make([]byte, 32<<10)
	for end := false; !end; {
		err := rc.Read(func(fd uintptr) bool {
			o.mu.Lock()
			defer o.mu.Unlock()
			n, err := syscall.Read(int(fd), buf)
			if errors.Is(err, syscall.EAGAIN) {
				return false // wait until readable
			}
			if n > 0 {
				_, _ = o.w.Write(buf[:n])
				o.read += int64(n)
				if o.moved != nil {
					close(o.moved)
					o.moved = nil
				}
			}
			end = n <= 0 && !errors.Is(err, syscall.EINTR)
			return true
		})
		if err != nil {
			return
		}
	}
}

// drainWait bounds a drain: a pipe whose reader is stuck does not hold the
// answer longer.
var drainWait = 10 * time.Millisecond

// drain waits, up to drainWait, until what the process wrote to the pipe so
// far has reached the writer. Bytes leave a pipe in order, so that is
// when the bytes waiting in it now (FIONREAD) have been read; output
// written after this call (another request's, under concurrency) is not
// waited for.
func (o *outPipe) drain() {
	o.mu.Lock()
	target := o.read + int64(o.pending())
	o.mu.Unlock()
	var timeout <-chan time.Time
	for {
		o.mu.Lock()
		if o.read >= target {
			o.mu.Unlock()
			return
		}
		if o.moved == nil {
			o.moved = make(chan struct{})
		}
		moved := o.moved
		o.mu.Unlock()
		if timeout == nil {
			t := time.NewTimer(drainWait)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case <-moved:
		case <-o.done:
			return
		case <-timeout:
			return
		}
	}
}

// pending is how many bytes wait in the pipe; 0 when that cannot be
// asked. The caller holds mu, so no read is half done.
func (o *outPipe) pending() int {
	rc, err := o.r.SyscallConn()
	if err != nil {
		return 0
	}
	n := 0
	if cerr := rc.Control(func(fd uintptr) {
		n, err = ioctlFIONREAD(fd)
	}); cerr != nil || err != nil {
		return 0
	}
	return n
}

// wait waits for the pipe's end, up to grace (a child of the process may
// hold it open), then closes it.
func (o *outPipe) wait(grace time.Duration) {
	t := time.NewTimer(grace)
	select {
	case <-o.done:
	case <-t.C:
	}
	t.Stop()
	o.r.Close()
	<-o.done
}
