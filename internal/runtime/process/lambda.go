package process

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nimbus-dev/nimbus/internal/runtime"
)

// The AWS Lambda Runtime API as Nimbus serves it to a process.
const (
	// LambdaRuntimeAPIAddr is AWS_LAMBDA_RUNTIME_API of a sandboxed
	// process: the Runtime API listens on this address of the process's own
	// network namespace (every sandbox has its own, so every one uses it).
	LambdaRuntimeAPIAddr = "127.0.0.1:9001"
	// LambdaRegion is AWS_REGION (and AWS_DEFAULT_REGION) unless the
	// function's env sets it: a fixed, valid region name, so that AWS SDKs
	// configure without error. No AWS service is reached through it.
	LambdaRegion = "us-east-1"
	// LambdaAccount is the account id in the function ARN.
	LambdaAccount = "000000000000"

	lambdaPrefix = "/2018-06-01/runtime/"
	// maxLambdaError bounds the body of an /error or /init/error post.
	maxLambdaError = 1 << 20
)

// Runtime API headers.
const (
	hdrRequestID     = "Lambda-Runtime-Aws-Request-Id"
	hdrDeadline      = "Lambda-Runtime-Deadline-Ms"
	hdrFunctionARN   = "Lambda-Runtime-Invoked-Function-Arn"
	hdrTraceID       = "Lambda-Runtime-Trace-Id"
	hdrClientContext = "Lambda-Runtime-Client-Context"
	hdrCognito       = "Lambda-Runtime-Cognito-Identity"
	hdrErrorType     = "Lambda-Runtime-Function-Error-Type"

	// HeaderFunctionError is set on the answer of an invocation whose
	// handler failed, to its errorType (AWS's Invoke API sets it too).
	HeaderFunctionError = "X-Amz-Function-Error"
	// headerClientContextIn carries a client context on a request (base64
	// JSON, as the Invoke API takes it); it is passed on decoded.
	headerClientContextIn = "X-Amz-Client-Context"
)

// lambdaContract is the AWS Lambda Runtime API: the process asks Nimbus
// for its next invocation (a long poll on /invocation/next) and posts the
// answer back. Nimbus serves the API per process, on the loopback of the
// process's network namespace when it has one. One invocation at a time.
type lambdaContract struct{}

func (lambdaContract) name() runtime.Contract { return runtime.ContractLambda }

// maxConcurrency: Lambda hands a runtime one invocation at a time.
func (lambdaContract) maxConcurrency() int { return 1 }

func (lambdaContract) attach(p *proc) (session, error) {
	s := &lambdaSession{
		p:       p,
		queue:   make(chan *invocation),
		started: make(chan struct{}),
		initErr: make(chan *LambdaError, 1),
		done:    make(chan struct{}),
	}
	s.srv = &http.Server{Handler: s.mux(), ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: maxServiceHead, ErrorLog: nil}
	if p.sb != nil {
		// The listener must exist before the process's first /next, and in
		// its namespace: the sandbox opens it there at the claim, before
		// the process starts.
		s.addr = LambdaRuntimeAPIAddr
		p.sb.inNetns = append(p.sb.inNetns, func() error {
			ln, err := net.Listen("tcp", s.addr)
			if err != nil {
				return fmt.Errorf("lambda runtime API: %w", err)
			}
			s.ln = ln
			return nil
		})
		return s, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("lambda runtime API: %w", err)
	}
	s.ln, s.addr = ln, ln.Addr().String()
	return s, nil
}

// lambdaSession is the Runtime API of one process.
type lambdaSession struct {
	p     *proc
	addr  string
	ln    net.Listener
	srv   *http.Server
	serve sync.Once

	queue     chan *invocation // handed to the next /next; unbuffered
	started   chan struct{}    // closed at the first /next: init is over
	startOnce sync.Once
	initErr   chan *LambdaError // an /init/error post
	done      chan struct{}     // closed by close
	closeOnce sync.Once

	mu      sync.Mutex
	current *invocation // handed to the process, not answered yet
}

// invocation is one request in the Runtime API's hands.
type invocation struct {
	id          string
	event       []byte
	header      http.Header // the Lambda-Runtime-* headers of /next
	maxResponse int64
	result      chan lambdaResult // buffered 1; written once, by finish
	once        sync.Once
}

// lambdaResult is what the process posted for an invocation.
type lambdaResult struct {
	body  []byte
	fnErr *LambdaError // the handler failed
	err   error        // the Runtime API could not complete it
}

func (inv *invocation) finish(r lambdaResult) { inv.once.Do(func() { inv.result <- r }) }

// LambdaError is the error shape of the Runtime API (and of a failed
// invocation's answer).
type LambdaError struct {
	ErrorMessage string          `json:"errorMessage"`
	ErrorType    string          `json:"errorType"`
	StackTrace   json.RawMessage `json:"stackTrace,omitempty"`
}

// env is the Lambda environment. The function's env may override the
// defaults that describe the platform (region, time zone, handler), not
// what the contract depends on (the Runtime API, name, memory).
func (s *lambdaSession) env() []string {
	m := s.p.inst.m
	name := lambdaFunctionName(m.app, m.function)
	out := []string{
		"AWS_LAMBDA_RUNTIME_API=" + s.addr,
		"AWS_LAMBDA_FUNCTION_NAME=" + name,
		"AWS_LAMBDA_FUNCTION_VERSION=" + shortRevision(m.revision),
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE=" + strconv.FormatUint(m.limits.MemoryBytes>>20, 10),
		"AWS_LAMBDA_LOG_GROUP_NAME=/nimbus/" + m.app + "/" + m.function,
		"AWS_LAMBDA_LOG_STREAM_NAME=" + shortRevision(m.revision),
		"LAMBDA_TASK_ROOT=" + s.p.appDir(),
		"LAMBDA_RUNTIME_DIR=" + s.p.appDir(),
	}
	defaults := map[string]string{
		"AWS_REGION":         LambdaRegion,
		"AWS_DEFAULT_REGION": LambdaRegion,
		"TZ":                 ":UTC",
		"LANG":               "en_US.UTF-8",
		"_HANDLER":           filepath.Base(m.args[0]),
	}
	for k, v := range defaults {
		if _, set := m.env[k]; !set {
			out = append(out, k+"="+v)
		}
	}
	return out
}

// lambdaFunctionName is AWS_LAMBDA_FUNCTION_NAME: app and function, since
// a Lambda name is unique in its account as app/function is on a node.
func lambdaFunctionName(app, function string) string { return app + "-" + function }

// LambdaFunctionARN is the Lambda-Runtime-Invoked-Function-Arn of app's
// function.
func LambdaFunctionARN(app, function string) string {
	return "arn:aws:lambda:" + LambdaRegion + ":" + LambdaAccount + ":function:" + lambdaFunctionName(app, function)
}

func shortRevision(rev string) string {
	if len(rev) > 12 {
		return rev[:12]
	}
	return rev
}

// ready starts serving the Runtime API and returns at the process's first
// /next (its init is over), or with the error it posted to /init/error.
func (s *lambdaSession) ready(ctx context.Context) error {
	if s.ln == nil {
		return errors.New("lambda runtime API: no listener")
	}
	s.serve.Do(func() { go func() { _ = s.srv.Serve(s.ln) }() })
	select {
	case <-s.started:
		return nil
	case e := <-s.initErr:
		return fmt.Errorf("the runtime reported an init error: %s: %s", e.ErrorType, e.ErrorMessage)
	case <-ctx.Done():
		return fmt.Errorf("%w: the runtime never asked for an invocation (GET http://$AWS_LAMBDA_RUNTIME_API%sinvocation/next)", context.Cause(ctx), lambdaPrefix)
	}
}

// handle hands one request to the process's next /next and waits for its
// answer.
func (s *lambdaSession) handle(ctx context.Context, req *runtime.Request, maxResponse int64) (*runtime.Response, error) {
	m := s.p.inst.m
	viaRoute := req.Route != ""
	event := req.Body
	if viaRoute {
		var err error
		if event, err = apiGatewayEvent(req, time.Now()); err != nil {
			return nil, guestFailed(fmt.Sprintf("%s/%s: API Gateway event", m.app, m.function), "", err)
		}
	}
	id := lambdaRequestID(req.InvocationID)
	inv := &invocation{
		id: id, event: event, maxResponse: maxResponse,
		header: invocationHeader(ctx, id, req, m.app, m.function), result: make(chan lambdaResult, 1),
	}
	select {
	case s.queue <- inv:
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
	var res lambdaResult
	select {
	case res = <-inv.result:
	case <-ctx.Done():
		s.drop(inv)
		return nil, context.Cause(ctx)
	}
	switch {
	case res.err != nil:
		return nil, res.err
	case res.fnErr != nil:
		return s.functionError(req, res.fnErr, viaRoute), nil
	case viaRoute:
		resp, err := apiGatewayResponse(res.body)
		if err != nil {
			logLine(req, "error", fmt.Sprintf("malformed Lambda proxy response: %v", err))
			return gatewayError(), nil
		}
		if int64(len(resp.Body)) > maxResponse {
			return nil, responseTooLarge(maxResponse)
		}
		return resp, nil
	}
	// As the Invoke API answers a buffered invocation, whatever type the
	// runtime posted (urllib says form, aws-lambda-go octet-stream).
	return &runtime.Response{Status: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}}, Body: res.body}, nil
}

// invocationHeader builds the Lambda-Runtime-* headers of an invocation.
func invocationHeader(ctx context.Context, id string, req *runtime.Request, app, function string) http.Header {
	h := http.Header{}
	h.Set(hdrRequestID, id)
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(15 * time.Minute) // Lambda's longest; Handle always sets one
	}
	h.Set(hdrDeadline, strconv.FormatInt(deadline.UnixMilli(), 10))
	h.Set(hdrFunctionARN, LambdaFunctionARN(app, function))
	if t := xrayTraceID(req.TraceParent); t != "" {
		h.Set(hdrTraceID, t)
	}
	if cc := clientContext(req.Header.Get(headerClientContextIn)); cc != "" {
		h.Set(hdrClientContext, cc)
	}
	return h
}

// functionError is the answer of an invocation whose handler failed: the
// Lambda error shape for a direct invocation, API Gateway's 502 for a
// route (which does not show the error to the caller), and a log line on
// the invocation either way.
func (s *lambdaSession) functionError(req *runtime.Request, e *LambdaError, viaRoute bool) *runtime.Response {
	b, _ := json.Marshal(e)
	logLine(req, "error", "lambda function error: "+string(b))
	typ := e.ErrorType
	if typ == "" {
		typ = "Unhandled"
	}
	if viaRoute {
		resp := gatewayError()
		resp.Header.Set(HeaderFunctionError, typ)
		return resp
	}
	return &runtime.Response{Status: http.StatusBadGateway,
		Header: http.Header{"Content-Type": {"application/json"}, HeaderFunctionError: {typ}}, Body: b}
}

// gatewayError is what API Gateway answers when the function failed or
// its answer was not a proxy response.
func gatewayError() *runtime.Response {
	return &runtime.Response{Status: http.StatusBadGateway, Header: http.Header{"Content-Type": {"application/json"}},
		Body: []byte(`{"message":"Internal Server Error"}`)}
}

func logLine(req *runtime.Request, level, line string) {
	if req.Log != nil {
		req.Log.Log("log", level, []byte(line))
	}
}

// drop forgets inv (its request ended) so that a late answer to it is
// refused.
func (s *lambdaSession) drop(inv *invocation) {
	s.mu.Lock()
	if s.current == inv {
		s.current = nil
	}
	s.mu.Unlock()
	inv.finish(lambdaResult{err: errors.New("abandoned")})
}

func (s *lambdaSession) close() {
	s.closeOnce.Do(func() {
		close(s.done)
		_ = s.srv.Close()
		if s.ln != nil {
			_ = s.ln.Close()
		}
	})
}

// mux routes the Runtime API.
func (s *lambdaSession) mux() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+lambdaPrefix+"invocation/next", s.next)
	mux.HandleFunc("POST "+lambdaPrefix+"invocation/{id}/response", s.response)
	mux.HandleFunc("POST "+lambdaPrefix+"invocation/{id}/error", s.invocationError)
	mux.HandleFunc("POST "+lambdaPrefix+"init/error", s.initError)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		apiError(w, http.StatusNotFound, "UnsupportedEndpoint",
			fmt.Sprintf("%s %s is not part of the Runtime API Nimbus serves (no extensions, telemetry or logs API)", r.Method, r.URL.Path))
	})
	return mux
}

// next is the long poll: it answers with the next invocation.
func (s *lambdaSession) next(w http.ResponseWriter, r *http.Request) {
	s.startOnce.Do(func() { close(s.started) })
	s.mu.Lock()
	if prev := s.current; prev != nil {
		// Lambda's runtimes answer before they ask again; one that does not
		// has lost the invocation.
		s.current = nil
		s.mu.Unlock()
		prev.finish(lambdaResult{err: guestFailed("the runtime asked for the next invocation without answering "+prev.id, "", nil)})
		s.mu.Lock()
	}
	s.mu.Unlock()
	var inv *invocation
	select {
	case inv = <-s.queue:
	case <-r.Context().Done():
		return
	case <-s.done:
		apiError(w, http.StatusGone, "ShuttingDown", "the instance is stopping")
		return
	}
	s.mu.Lock()
	s.current = inv
	s.mu.Unlock()
	for k, v := range inv.header {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(inv.event)))
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write(inv.event); err != nil {
		s.drop(inv)
	}
}

// take returns the invocation in the process's hands with id, and forgets
// it; nil when there is none (answered already, or abandoned).
func (s *lambdaSession) take(id string) *invocation {
	s.mu.Lock()
	defer s.mu.Unlock()
	inv := s.current
	if inv == nil || inv.id != id {
		return nil
	}
	s.current = nil
	return inv
}

func (s *lambdaSession) response(w http.ResponseWriter, r *http.Request) {
	inv := s.take(r.PathValue("id"))
	if inv == nil {
		apiError(w, http.StatusBadRequest, "InvalidRequestID", "no invocation "+r.PathValue("id")+" is waiting for an answer")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, inv.maxResponse+1))
	if err != nil {
		inv.finish(lambdaResult{err: guestFailed("reading the invocation's response", "", err)})
		return
	}
	if int64(len(body)) > inv.maxResponse {
		inv.finish(lambdaResult{err: responseTooLarge(inv.maxResponse)})
		apiError(w, http.StatusRequestEntityTooLarge, "RequestEntityTooLarge", "the response is over the function's max_response_body")
		return
	}
	inv.finish(lambdaResult{body: body})
	accepted(w)
}

func (s *lambdaSession) invocationError(w http.ResponseWriter, r *http.Request) {
	inv := s.take(r.PathValue("id"))
	if inv == nil {
		apiError(w, http.StatusBadRequest, "InvalidRequestID", "no invocation "+r.PathValue("id")+" is waiting for an answer")
		return
	}
	e, err := readLambdaError(r)
	if err != nil {
		inv.finish(lambdaResult{err: guestFailed("reading the invocation's error", "", err)})
		return
	}
	inv.finish(lambdaResult{fnErr: e})
	accepted(w)
}

func (s *lambdaSession) initError(w http.ResponseWriter, r *http.Request) {
	e, err := readLambdaError(r)
	if err != nil {
		return
	}
	m := s.p.inst.m
	m.rt.logger.Warn("lambda runtime init error", "app", m.app, "function", m.function, "error_type", e.ErrorType, "error", e.ErrorMessage)
	select {
	case s.initErr <- e:
	default:
	}
	accepted(w)
}

// readLambdaError reads an error post: the error shape, or any body as
// the message; the error type header fills a missing errorType.
func readLambdaError(r *http.Request) (*LambdaError, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxLambdaError))
	if err != nil {
		return nil, err
	}
	e := &LambdaError{}
	if json.Unmarshal(body, e) != nil || (e.ErrorMessage == "" && e.ErrorType == "") {
		e = &LambdaError{ErrorMessage: strings.TrimSpace(string(body))}
	}
	if e.ErrorType == "" {
		e.ErrorType = r.Header.Get(hdrErrorType)
	}
	if e.ErrorType == "" {
		e.ErrorType = "Unhandled"
	}
	return e, nil
}

func accepted(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_, _ = w.Write([]byte(`{"status":"OK"}`))
}

func apiError(w http.ResponseWriter, status int, typ, msg string) {
	b, _ := json.Marshal(LambdaError{ErrorMessage: msg, ErrorType: typ})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
