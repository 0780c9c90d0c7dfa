package runtime

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/nimbus-dev/nimbus/internal/model"
)

// Runtime loads function artifacts. It is safe for concurrent use.
type Runtime interface {
	// Load compiles and validates the artifact described by spec. The returned
	// Module is ready to create instances. Load of an artifact that is not
	// usable (not WebAssembly, not WASI, no known guest contract) fails with an
	// error wrapping ErrInvalidModule.
	Load(ctx context.Context, spec Spec) (Module, error)
	// Close releases everything the runtime holds. Modules loaded from it must
	// not be used afterwards.
	Close(ctx context.Context) error
}

// Set is the runtimes a node runs, keyed by the name functions give in
// model.Function.Runtime ("wasm"). The scheduler loads each function with
// the runtime its Runtime names.
type Set map[string]Runtime

// Names are the names of the runtimes in the set, sorted.
func (s Set) Names() []string { return slices.Sorted(maps.Keys(s)) }

// Close closes every runtime of the set.
func (s Set) Close(ctx context.Context) error {
	var errs []error
	for _, name := range s.Names() {
		if err := s[name].Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("runtime %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// Module is a loaded (compiled) function revision.
type Module interface {
	// Contract reports how the guest talks to the host.
	Contract() Contract
	// Reusable reports whether an instance may serve more than one request in
	// turn. WAGI instances are single use; SDK reactor instances are reusable.
	Reusable() bool
	// MaxConcurrency is how many requests one instance may serve at once
	// (at least 1). A wasm instance is single-threaded: 1. The scheduler
	// sends an instance at most min(this, the function's concurrency).
	MaxConcurrency() int
	// NewInstance creates a fresh instance (a cold start).
	NewInstance(ctx context.Context) (Instance, error)
	// Close releases the compiled code.
	Close(ctx context.Context) error
}

// Instance is one sandboxed copy of a guest. Handle may be called
// concurrently by at most its Module's MaxConcurrency callers (for wasm:
// one request at a time).
type Instance interface {
	// Handle serves one request. After Handle returns a non-nil error the
	// instance must be closed and not reused (its state is unknown),
	// unless the error says it is intact (IsIntact).
	Handle(ctx context.Context, req *Request) (*Response, error)
	// Close releases the instance.
	Close(ctx context.Context) error
}

// Contract is the protocol between host and guest.
type Contract string

const (
	// ContractWAGI is CGI over WASI: a WASI command module, request in
	// environment variables and stdin, response on stdout. One instance per
	// request.
	ContractWAGI Contract = "wagi"
	// ContractSDK is the Nimbus guest SDK: a WASI reactor exporting the
	// Nimbus handler ABI (see sdk/go/wire); instances are reused.
	ContractSDK Contract = "sdk"
	// ContractHTTP is a native process that serves HTTP on $PORT
	// (model.ContractHTTP); instances are long-lived and reused.
	ContractHTTP Contract = "http"
	// ContractLambda is a native process that speaks the AWS Lambda
	// Runtime API (model.ContractLambda); instances are long-lived, reused
	// and take one request at a time.
	ContractLambda Contract = "lambda"
)

// Spec is everything a runtime needs to load one function revision.
type Spec struct {
	App      string
	Function string
	// Runtime is the name of the runtime the function asked for
	// (model.Function.Runtime), the one that loads this spec.
	Runtime string
	// Revision is the function revision id (content address).
	Revision string
	// Artifact is the module bytes (wasm), or the tar of the function's
	// directory (process).
	Artifact []byte
	// Process is how a process function is started; nil for wasm.
	Process *model.Process
	// Env is the environment the guest sees, besides what the contract adds.
	Env map[string]string
	// Capabilities are the grants from the manifest, for example "log".
	// Anything not listed is denied.
	Capabilities []string
	Limits       Limits
}

// Limits bound what one request on one instance may use. They come from
// the function (model.Plan gives every one its default and checks its
// bounds) and are complete: a runtime applies no defaults of its own and
// refuses a Spec whose Limits has a zero field. The request body limit is
// not here: the scheduler checks it (CheckRequestBody) before a request
// reaches a runtime.
type Limits struct {
	// MemoryBytes caps the guest's linear memory.
	MemoryBytes uint64
	// Timeout is the wall-clock deadline of one request
	// (model.Function.Timeout).
	Timeout time.Duration
	// MaxResponseBytes caps the response body.
	MaxResponseBytes int64
}

// Complete reports whether every limit is set.
func (l Limits) Complete() bool {
	return l.MemoryBytes > 0 && l.Timeout > 0 && l.MaxResponseBytes > 0
}

// Request is one invocation as the guest sees it.
type Request struct {
	Method string
	// Path is the request path, unescaped as in URL.Path.
	Path string
	// RawQuery is the query string without '?'.
	RawQuery   string
	Header     http.Header
	Host       string
	RemoteAddr string
	Body       []byte
	// Route is the matched route pattern ("GET /users/{id}"), empty when
	// invoked without HTTP routing.
	Route string
	// Params are the route's path parameters.
	Params map[string]string

	InvocationID string
	// TraceParent is the W3C traceparent of this invocation.
	TraceParent string
	// Log receives what the guest writes (stdout/stderr outside the response,
	// and the log host function). Nil discards.
	Log LogSink
}

// Response is what the guest answered.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// LogSink receives guest log lines for one invocation. Implementations must
// be safe for concurrent use and must not block for long: they sit on the
// request path.
type LogSink interface {
	// Log records one line. stream is "stdout", "stderr" or "log"; level is
	// empty for stdout/stderr.
	Log(stream, level string, line []byte)
}

// LogFlusher is implemented by a LogSink that holds something back until the
// guest is done with it: guestlog's sink writes one "dropped N lines" marker
// for the lines its budget refused. A runtime calls Flush when Handle
// returns, after the request's last line; the sink may be flushed more than
// once.
type LogFlusher interface {
	Flush()
}

// FlushLog calls Flush on sink if it is a LogFlusher.
func FlushLog(sink LogSink) {
	if f, ok := sink.(LogFlusher); ok {
		f.Flush()
	}
}

// Errors a runtime returns; callers branch on them with errors.Is and map
// them to HTTP statuses at the edge.
var (
	// ErrInvalidModule means the artifact cannot be run: not WebAssembly,
	// missing WASI, or no known guest contract.
	ErrInvalidModule = errors.New("invalid module")
	// ErrTimeout means the request ran past the function's timeout.
	ErrTimeout = errors.New("function timed out")
	// ErrMemoryLimit means the guest tried to grow memory past its cap.
	ErrMemoryLimit = errors.New("memory limit exceeded")
	// ErrRequestTooLarge means the request body is over the limit.
	ErrRequestTooLarge = errors.New("request body too large")
	// ErrResponseTooLarge means the guest's response is over the limit.
	ErrResponseTooLarge = errors.New("response too large")
	// ErrGuestFailed means the guest trapped, panicked, exited non-zero or
	// broke its contract (for example malformed CGI output).
	ErrGuestFailed = errors.New("guest failed")
)

// Intact marks err as a failure of one request that left the instance
// that returned it sound: the answer was over a limit, and the guest
// itself is unharmed (a process whose connection for that request was
// dropped). The scheduler keeps such an instance instead of closing it.
func Intact(err error) error {
	if err == nil {
		return nil
	}
	return intactError{err}
}

// IsIntact reports whether err was marked with Intact.
func IsIntact(err error) bool {
	var ie intactError
	return errors.As(err, &ie)
}

type intactError struct{ err error }

func (e intactError) Error() string { return e.err.Error() }
func (e intactError) Unwrap() error { return e.err }

// LimitError carries the limit that was hit, so messages can name it
// ("function timed out after 2s"). It wraps one of the sentinel errors.
type LimitError struct {
	Err   error  // ErrTimeout, ErrMemoryLimit, ErrRequestTooLarge or ErrResponseTooLarge
	Limit string // human form of the limit, e.g. "2s" or "64MiB"
}

func (e *LimitError) Error() string { return fmt.Sprintf("%v (limit %s)", e.Err, e.Limit) }
func (e *LimitError) Unwrap() error { return e.Err }

// CheckRequestBody is the one check of a request body against its
// function's max_request_body (model.Function.MaxRequestBytes): a body of
// n bytes over limit is a *LimitError wrapping ErrRequestTooLarge. The
// scheduler applies it to every invocation before it takes an instance;
// the gateway applies it while it reads a body (to its Content-Length, then
// to what it read, which stops one byte past the limit), so an HTTP body
// never costs more memory than the limit.
func CheckRequestBody(n, limit int64) error {
	if n <= limit {
		return nil
	}
	return &LimitError{Err: ErrRequestTooLarge, Limit: model.FormatBytes(uint64(limit))}
}
