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
// under one lock, so that drained can tell, exactly, that everything the
// process wrote so far has reached the writer: a request's log gets the
// lines its process wrote before answering, although they travel on
// another pipe than the answer.
type outPipe struct {
	r    *os.File
	mu   sync.Mutex
	w    io.Writer
	done chan struct{} // closed when the pipe ended (every writer closed it, or close)
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
			}
			end = n <= 0 && !errors.Is(err, syscall.EINTR)
			return true
		})
		if err != nil {
			return
		}
	}
}

// drained reports whether nothing the process wrote waits in the pipe:
// all of it reached the writer.
func (o *outPipe) drained() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	rc, err := o.r.SyscallConn()
	if err != nil {
		return true
	}
	n := 0
	if cerr := rc.Control(func(fd uintptr) {
		n, err = ioctlFIONREAD(fd)
	}); cerr != nil || err != nil {
		return true
	}
	return n == 0
}

// drain waits, up to 10ms, until the pipe is drained.
func (o *outPipe) drain() {
	for k := 0; k < 100 && !o.drained(); k++ {
		pause(100 * time.Microsecond)
	}
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
