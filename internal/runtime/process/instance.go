package process

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nimbus-dev/nimbus/internal/capability"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime"
)

// sandboxPort is the port a sandboxed process listens on: each has its own
// network namespace, so every one can use the same.
const sandboxPort = 8080

// exitGrace is how long a request whose connection broke waits to see
// whether the process is exiting, to report its exit status.
const exitGrace = 200 * time.Millisecond

// maxLogLine bounds one line of process output; longer lines are split.
const maxLogLine = 16 << 10

// instance is one process of a function, replaced when it dies while idle.
// Handle may be called concurrently.
type instance struct {
	m *module

	mu      sync.Mutex
	p       *proc
	sinks   []runtime.LogSink             // of the requests in flight, in arrival order
	calls   map[string]*capability.Caller // of the requests in flight, by invocation id
	self    *capability.Caller            // platform API calls outside any request
	closed  bool
	closing sync.Once
}

var _ runtime.Instance = (*instance)(nil)

// proc is one running process and the contract's session with it.
type proc struct {
	inst   *instance
	cmd    *exec.Cmd
	sb     *sandbox // nil when unisolated
	tmp    string   // private temp directory (the sandbox's when sandboxed)
	port   int
	addr   string // host:port as the process sees it
	dial   dialer
	sess   session
	api    *platformAPI
	egress *egressProxy // nil without an http grant, or unisolated
	secret []string     // the granted secrets, NAME=value, read at the start
	stderr *lineWriter

	outs    []*outPipe      // its stdout and stderr
	exited  chan struct{}   // closed when the process has exited and its output is drained
	exitCtx context.Context // canceled when exited is closed
	exitErr error           // why it exited; set before exited is closed
	onExit  context.CancelFunc
}

// markExited records why the process exited and says it has.
func (p *proc) markExited(err error) {
	p.exitErr = err
	close(p.exited)
	p.onExit()
}

// start starts the first process of the instance.
func (i *instance) start(ctx context.Context) error {
	p, err := i.spawn(ctx)
	if err != nil {
		return err
	}
	i.mu.Lock()
	i.p = p
	i.mu.Unlock()
	return nil
}

// spawn starts a process and waits until it is ready.
func (i *instance) spawn(ctx context.Context) (_ *proc, err error) {
	m := i.m
	r := m.rt
	p := &proc{inst: i, exited: make(chan struct{})}
	p.exitCtx, p.onExit = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			p.cleanup()
		}
	}()
	if m.sandbox {
		if p.sb, err = r.sandbox(); err != nil {
			return nil, fmt.Errorf("start %s/%s: %w", m.app, m.function, err)
		}
		// The pool makes the next one once this process is up, not while
		// it starts.
		defer r.pool.refill()
		p.tmp = p.sb.tmp
		p.port = sandboxPort
		p.dial = p.sb.dial
	} else {
		if p.tmp, err = r.newTemp(); err != nil {
			return nil, fmt.Errorf("start %s/%s: %w", m.app, m.function, err)
		}
		if p.port, err = freePort(); err != nil {
			return nil, fmt.Errorf("start %s/%s: %w", m.app, m.function, err)
		}
		var d net.Dialer
		p.dial = d.DialContext
	}
	p.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port))
	if p.sess, err = m.contract.attach(p); err != nil {
		return nil, fmt.Errorf("start %s/%s: %w", m.app, m.function, err)
	}
	if p.api, err = newAPI(p); err != nil {
		return nil, fmt.Errorf("start %s/%s: %w", m.app, m.function, err)
	}
	p.egress = newEgress(p)
	if len(m.secrets) > 0 {
		if p.secret, err = m.secretEnv(ctx, i.caller("")); err != nil {
			return nil, fmt.Errorf("start %s/%s: %w", m.app, m.function, err)
		}
	}

	p.stderr = &lineWriter{emit: func(l []byte) { i.log("stderr", l) }, keep: true}
	stdout := &lineWriter{emit: func(l []byte) { i.log("stdout", l) }}
	if sb := p.sb; sb != nil {
		p.cmd, p.outs = sb.cmd, sb.outs
		go func() {
			<-sb.exited
			p.markExited(sb.exitErr)
		}()
		view := m.view()
		view.Env = m.environ(p)
		err = sb.claim(m.limits.MemoryBytes, view, stdout, p.stderr)
	} else {
		var outW [2]*os.File
		for k, w := range []io.Writer{stdout, p.stderr} {
			var o *outPipe
			if o, outW[k], err = newOutPipe(w); err != nil {
				return nil, fmt.Errorf("start %s/%s: output pipes: %w", m.app, m.function, err)
			}
			p.outs = append(p.outs, o)
		}
		p.cmd = &exec.Cmd{
			Path:        m.argv0,
			Args:        slices.Clone(m.args),
			Env:         m.environ(p),
			Dir:         m.dir,
			Stdout:      outW[0],
			Stderr:      outW[1],
			SysProcAttr: plainProcAttr(),
		}
		err = startBatch(p.cmd)
		outW[0].Close() // the process has its own copies
		outW[1].Close()
		if err == nil {
			setRlimits(p.cmd.Process.Pid, r.cfg.MaxOpenFiles, r.cfg.MaxProcs, false)
			go func() {
				err := p.cmd.Wait()
				for _, o := range p.outs {
					o.wait(time.Second) // a child that kept the output open does not hold the exit
				}
				p.markExited(err)
			}()
		} else {
			for _, o := range p.outs {
				o.r.Close()
			}
		}
	}
	if err != nil {
		return nil, guestFailed(fmt.Sprintf("%s/%s: start %s", m.app, m.function, strings.Join(m.args, " ")), "", err)
	}
	p.api.serve()
	p.egress.serve()

	rctx, cancel := context.WithCancelCause(ctx)
	go func() {
		select {
		case <-p.exited:
			cancel(errExited)
		case <-rctx.Done():
		}
	}()
	err = p.sess.ready(rctx)
	cause := context.Cause(rctx)
	cancel(nil)
	if err != nil {
		switch {
		case errors.Is(cause, errExited):
			return nil, p.exitError("exited before it was ready")
		case ctx.Err() != nil:
			p.kill()
			return nil, guestFailed(fmt.Sprintf("%s/%s: not ready before the deadline: the process must listen on $PORT (%d)", m.app, m.function, p.port), p.stderr.lastLine(), context.Cause(ctx))
		default:
			p.kill()
			return nil, guestFailed(fmt.Sprintf("%s/%s: readiness", m.app, m.function), p.stderr.lastLine(), err)
		}
	}
	return p, nil
}

// appDir is the function's directory as the process sees it.
func (p *proc) appDir() string {
	if p.sb != nil {
		return p.inst.m.appDir()
	}
	return p.inst.m.dir
}

// environ is the process's environment: a minimal PATH, HOME and TMPDIR
// in its private temp directory, then the function's env, then its
// granted secrets, the platform API's variables, the egress proxy's
// (HTTP_PROXY...) when it has one, and what the contract sets (PORT),
// which win in that order. Nothing of the node's environment.
func (m *module) environ(p *proc) []string {
	env := map[string]string{"PATH": Path, "HOME": p.tmp, "TMPDIR": p.tmp}
	for k, v := range m.env {
		env[k] = v
	}
	platform := slices.Concat(p.secret, p.api.env())
	if p.egress != nil {
		platform = append(platform, egressEnv()...)
	}
	for _, kv := range append(platform, p.sess.env()...) {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out
}

// Handle implements runtime.Instance: it forwards the request to the
// process, starting a new one first if the last died while idle.
func (i *instance) Handle(ctx context.Context, req *runtime.Request) (*runtime.Response, error) {
	m := i.m
	p, err := i.current(ctx)
	if err != nil {
		return nil, err
	}
	i.track(req, true)
	defer func() {
		// What the process wrote before it answered belongs to this
		// request's log: let it arrive first.
		for _, o := range p.outs {
			o.drain()
		}
		i.track(req, false)
		runtime.FlushLog(req.Log)
	}()
	// A caller that goes away does not abort a request to an HTTP process:
	// the process finishes it, holding its slot, or the function's timeout
	// stops it. Aborting it would either close a healthy instance (the
	// next caller pays a cold start, and any client could force them) or
	// leave a stuck request running with no deadline, since the process is
	// not told (HTTP has no cancel but a closed connection, which most
	// servers notice only when they write).
	_, proxied := p.sess.(*httpSession)
	parent := ctx
	if proxied {
		parent = context.WithoutCancel(ctx)
	}
	tctx, cancel := context.WithTimeoutCause(parent, m.limits.Timeout, runtime.ErrTimeout)
	defer cancel()
	rctx, cancelExit := context.WithCancelCause(tctx)
	defer cancelExit(nil)
	defer context.AfterFunc(p.exitCtx, func() { cancelExit(errExited) })()
	resp, err := p.sess.handle(rctx, req, m.limits.MaxResponseBytes)
	if err == nil {
		return resp, nil
	}
	// An HTTP process whose answer was over the limit lost only that
	// request's connection: it stays in service.
	var lim *runtime.LimitError
	if errors.As(err, &lim) {
		if proxied {
			return nil, runtime.Intact(err)
		}
		return nil, err
	}
	if rctx.Err() == nil {
		// The connection failed while the request had time left: a process
		// that is dying closes its sockets before it is reaped, so give its
		// exit a moment to be seen, to report why it died.
		t := time.NewTimer(exitGrace)
		select {
		case <-p.exited:
		case <-t.C:
		}
		t.Stop()
	}
	switch {
	case p.hasExited() || errors.Is(context.Cause(rctx), errExited):
		<-p.exited
		return nil, p.exitError("exited during the request")
	case errors.Is(context.Cause(tctx), runtime.ErrTimeout):
		// A stuck process would keep its slot forever: stop it; the pool
		// replaces the instance.
		p.kill()
		return nil, &runtime.LimitError{Err: runtime.ErrTimeout, Limit: m.limits.Timeout.String()}
	case ctx.Err() != nil:
		return nil, fmt.Errorf("%s/%s: %w", m.app, m.function, ctx.Err())
	}
	return nil, guestFailed(fmt.Sprintf("%s/%s: request", m.app, m.function), p.stderr.lastLine(), err)
}

// current returns the running process, replacing it first if it exited
// while no request was in flight.
func (i *instance) current(ctx context.Context) (*proc, error) {
	i.mu.Lock()
	p := i.p
	closed := i.closed
	inflight := len(i.sinks)
	i.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("%s/%s: instance closed", i.m.app, i.m.function)
	}
	if !p.hasExited() {
		return p, nil
	}
	if inflight > 0 {
		return nil, p.exitError("exited")
	}
	i.m.rt.logger.Warn("process exited while idle; starting another", "app", i.m.app, "function", i.m.function, "error", p.exitError("exited"))
	p.cleanup()
	np, err := i.spawn(ctx)
	if err != nil {
		return nil, err
	}
	i.mu.Lock()
	i.p = np
	closed = i.closed
	i.mu.Unlock()
	if closed {
		np.stop(i.m.rt.cfg.StopGrace)
		return nil, fmt.Errorf("%s/%s: instance closed", i.m.app, i.m.function)
	}
	return np, nil
}

// track adds or removes a request in flight: its log sink, and its
// caller for the platform API.
func (i *instance) track(req *runtime.Request, add bool) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if add {
		i.sinks = append(i.sinks, req.Log)
		if i.calls == nil {
			i.calls = map[string]*capability.Caller{}
		}
		i.calls[req.InvocationID] = &capability.Caller{App: i.m.app, Function: i.m.function, InvocationID: req.InvocationID,
			TraceParent: req.TraceParent, Grants: i.m.grants, Sink: req.Log}
		return
	}
	if k := slices.Index(i.sinks, req.Log); k >= 0 {
		i.sinks = slices.Delete(i.sinks, k, k+1)
	}
	if c := i.calls[req.InvocationID]; c != nil && c.Sink == req.Log {
		delete(i.calls, req.InvocationID)
	}
}

// caller is who a platform API call speaks for: the request in flight
// with invocation id, else the only request in flight, else the instance
// itself (same grants; its log lines go to the node's log).
func (i *instance) caller(id string) *capability.Caller {
	i.mu.Lock()
	defer i.mu.Unlock()
	if c := i.calls[id]; c != nil {
		return c
	}
	if len(i.calls) == 1 && id == "" {
		for _, c := range i.calls {
			return c
		}
	}
	if i.self == nil {
		i.self = &capability.Caller{App: i.m.app, Function: i.m.function, Grants: i.m.grants, Sink: nodeSink{i}}
	}
	return i.self
}

// egressCaller is who an egress request speaks for: the request in flight
// when there is exactly one, else a caller of its own for this request
// (the same grants; its lines go to the node's log), so that the
// per-invocation request count does not add up over the instance's life.
func (i *instance) egressCaller() *capability.Caller {
	i.mu.Lock()
	defer i.mu.Unlock()
	if len(i.calls) == 1 {
		for _, c := range i.calls {
			return c
		}
	}
	return &capability.Caller{App: i.m.app, Function: i.m.function, Grants: i.m.grants, Sink: nodeSink{i}}
}

// nodeSink writes an instance's platform API log lines, made outside any
// request, to the node's log.
type nodeSink struct{ i *instance }

func (s nodeSink) Log(stream, level string, line []byte) {
	s.i.m.rt.logger.Info(string(line), "app", s.i.m.app, "function", s.i.m.function, "stream", stream, "level", level)
}

// log routes one line of output: to the request in flight when there is
// exactly one, else to the runtime's logger, tagged with the function.
func (i *instance) log(stream string, line []byte) {
	i.mu.Lock()
	var sink runtime.LogSink
	if len(i.sinks) == 1 {
		sink = i.sinks[0]
	}
	n := len(i.sinks)
	i.mu.Unlock()
	if sink != nil {
		sink.Log(stream, "", line)
		return
	}
	i.m.rt.logger.Info(string(line), "app", i.m.app, "function", i.m.function, "stream", stream, "in_flight", n)
}

// Close implements runtime.Instance: SIGTERM, the grace period, SIGKILL.
func (i *instance) Close(context.Context) error {
	i.closing.Do(func() {
		i.mu.Lock()
		i.closed = true
		p := i.p
		i.mu.Unlock()
		if p != nil {
			p.stop(i.m.rt.cfg.StopGrace)
		}
		i.m.forget(i)
	})
	return nil
}

func (p *proc) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// exitError is the error of a request whose process died: the memory cap
// when it was killed over it, else ErrGuestFailed with the exit status and
// the last line it wrote to stderr.
func (p *proc) exitError(what string) error {
	<-p.exited
	m := p.inst.m
	if p.sb != nil && p.sb.memoryExceeded() {
		return &runtime.LimitError{Err: runtime.ErrMemoryLimit, Limit: model.FormatBytes(m.limits.MemoryBytes)}
	}
	status := "exit status 0"
	if p.exitErr != nil {
		status = p.exitErr.Error()
	}
	return guestFailed(fmt.Sprintf("%s/%s: process %s (%s)", m.app, m.function, what, status), p.stderr.lastLine(), nil)
}

// kill sends SIGKILL to the process's group (and, in its own pid
// namespace, to everything it started).
func (p *proc) kill() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	pid := p.cmd.Process.Pid
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	_ = syscall.Kill(pid, syscall.SIGKILL)
}

// stop ends the process: SIGTERM to its group, then SIGKILL after grace
// (at once for a process that does not handle SIGTERM), and releases what
// it held.
func (p *proc) stop(grace time.Duration) {
	if p.cmd != nil && p.cmd.Process != nil && !p.hasExited() {
		pid := p.cmd.Process.Pid
		if p.sb != nil && !catchesTERM(pid) {
			p.kill()
		} else {
			_ = syscall.Kill(-pid, syscall.SIGTERM)
			t := time.NewTimer(grace)
			select {
			case <-p.exited:
			case <-t.C:
				p.kill()
			}
			t.Stop()
		}
		<-p.exited
	}
	p.cleanup()
}

// cleanup releases the contract session, the sandbox and the temp
// directory. The process has exited (or never started).
func (p *proc) cleanup() {
	if p.sb == nil && p.cmd != nil && p.cmd.Process != nil && !p.hasExited() {
		p.kill()
		<-p.exited
	}
	if p.sess != nil {
		p.sess.close()
		p.sess = nil
	}
	if p.api != nil {
		p.api.close()
		p.api = nil
	}
	p.egress.close()
	p.egress = nil
	if p.sb != nil {
		p.sb.release()
		p.sb = nil
	} else if p.tmp != "" {
		_ = os.RemoveAll(p.tmp)
	}
	p.tmp = ""
}

// newTemp makes a private temp directory for one process.
func (r *Runtime) newTemp() (string, error) {
	root := filepath.Join(r.dir, "tmp")
	if err := os.MkdirAll(root, 0o711); err != nil {
		return "", err
	}
	return os.MkdirTemp(root, "i-")
}

// freePort picks a free loopback port for an unisolated process (which
// shares the node's network). Not one the kernel would hand out itself
// (its ephemeral range, 32768-60999 by default): between this check and
// the process's own listen, any program's "port 0" listener or outgoing
// connection could take such a port, and the readiness probe would then
// reach that program instead. Below the range only programs that choose
// their port collide, and the probe checks that the listener found is
// the process's own (listenerOwnedBy).
func freePort() (int, error) {
	const lo, hi = 10000, 32768
	start := int(rand.Int64N(hi - lo))
	for i := range hi - lo {
		port := lo + (start+i)%(hi-lo)
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		ln.Close()
		return port, nil
	}
	return 0, errors.New("no free loopback port between 10000 and 32767 for an unisolated process")
}

// guestError is ErrGuestFailed with the reason.
type guestError struct {
	reason string
	cause  error
}

func (e *guestError) Error() string { return runtime.ErrGuestFailed.Error() + ": " + e.reason }
func (e *guestError) Unwrap() []error {
	if e.cause == nil {
		return []error{runtime.ErrGuestFailed}
	}
	return []error{runtime.ErrGuestFailed, e.cause}
}

func guestFailed(what, stderr string, cause error) error {
	if cause != nil {
		what += ": " + cause.Error()
	}
	if stderr != "" {
		what += "; last stderr line: " + stderr
	}
	return &guestError{reason: what, cause: cause}
}

// lineWriter splits process output into lines and emits each; with keep,
// it remembers the last for error messages. exec copies each stream from
// one goroutine.
type lineWriter struct {
	emit    func([]byte)
	keep    bool
	partial []byte
	mu      sync.Mutex
	last    string
}

func (w *lineWriter) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		k := bytes.IndexByte(b, '\n')
		if k < 0 {
			w.partial = append(w.partial, b...)
			for len(w.partial) >= maxLogLine {
				w.line(w.partial[:maxLogLine])
				w.partial = append(w.partial[:0], w.partial[maxLogLine:]...)
			}
			break
		}
		w.partial = append(w.partial, b[:k]...)
		w.line(w.partial)
		w.partial = w.partial[:0]
		b = b[k+1:]
	}
	return n, nil
}

func (w *lineWriter) line(b []byte) {
	b = bytes.TrimRight(b, "\r")
	if w.keep && len(bytes.TrimSpace(b)) > 0 {
		w.mu.Lock()
		w.last = string(b[:min(len(b), 512)])
		w.mu.Unlock()
	}
	w.emit(slices.Clone(b))
}

func (w *lineWriter) lastLine() string {
	if w == nil {
		return ""
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}
