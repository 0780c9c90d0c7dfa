package process

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nimbus-dev/nimbus/internal/capability"
	"github.com/nimbus-dev/nimbus/internal/state"
)

// The platform API: the capability services (KV, publish, log, secrets) served to
// one process over HTTP, behind a token only that process is given.
const (
	// PlatformAPIAddr is where a sandboxed process reaches the platform
	// API: the loopback of its own network namespace, so only it can.
	PlatformAPIAddr = "127.0.0.1:9002"
	// EnvAPI is the environment variable holding the API's base URL.
	EnvAPI = "NIMBUS_API"
	// EnvToken holds the process's token: every call sends
	// "Authorization: Bearer $NIMBUS_TOKEN".
	EnvToken = "NIMBUS_TOKEN"
	// HeaderRevision carries a key's revision on a KV answer.
	HeaderRevision = "X-Nimbus-Revision"
	// maxAPIBody bounds a request body: above every value and event cap,
	// which the services check with their own errors.
	maxAPIBody = 8 << 20
)

// platformAPI is the platform API of one process.
type platformAPI struct {
	inst  *instance
	token string
	addr  string // host:port as the process dials it
	ln    net.Listener
	srv   *http.Server
}

// newAPI makes the platform API of p: its listener opens inside p's
// network namespace when p is sandboxed (at the claim, before the process
// starts, as the Lambda Runtime API's does), else on a host loopback port.
func newAPI(p *proc) (*platformAPI, error) {
	a := &platformAPI{inst: p.inst, token: randomID() + randomID()}
	a.srv = &http.Server{Handler: a.mux(), ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: maxServiceHead}
	if p.sb != nil {
		a.addr = PlatformAPIAddr
		p.sb.inNetns = append(p.sb.inNetns, func() error {
			ln, err := net.Listen("tcp", a.addr)
			if err != nil {
				return fmt.Errorf("platform API: %w", err)
			}
			a.ln = ln
			return nil
		})
		return a, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("platform API: %w", err)
	}
	a.ln, a.addr = ln, ln.Addr().String()
	return a, nil
}

// maxServiceHead bounds the request heads a process sends to the node's
// endpoints for it (platform API, Lambda runtime API, egress proxy), as the
// gateway bounds its clients' (64KiB), rather than net/http's 1MiB: each
// of a process's connections (up to its 1024 open files) can hold one.
const maxServiceHead = 64 << 10

func (a *platformAPI) env() []string {
	return []string{EnvAPI + "=http://" + a.addr, EnvToken + "=" + a.token}
}

// serve starts serving; the listener exists (the process has started).
func (a *platformAPI) serve() {
	if a.ln != nil {
		go func() { _ = a.srv.Serve(a.ln) }()
	}
}

func (a *platformAPI) close() {
	_ = a.srv.Close()
	if a.ln != nil {
		_ = a.ln.Close()
	}
}

func (a *platformAPI) mux() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /kv/{bucket}", a.kvList)
	mux.HandleFunc("GET /kv/{bucket}/{key...}", a.kvGet)
	mux.HandleFunc("PUT /kv/{bucket}/{key...}", a.kvPut)
	mux.HandleFunc("DELETE /kv/{bucket}/{key...}", a.kvDelete)
	mux.HandleFunc("POST /publish/{topic}", a.publish)
	mux.HandleFunc("POST /log", a.log)
	mux.HandleFunc("GET /secret/{name}", a.secret)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		apiFail(w, http.StatusNotFound, "not_found", r.Method+" "+r.URL.Path+" is not a platform API route (GET/PUT/DELETE /kv/{bucket}/{key}, GET /kv/{bucket}, POST /publish/{topic}, POST /log, GET /secret/{name})")
	})
	return a.auth(mux)
}

// auth refuses a call without the process's token.
func (a *platformAPI) auth(next http.Handler) http.Handler {
	want := []byte("Bearer " + a.token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			apiFail(w, http.StatusUnauthorized, "unauthorized", "send Authorization: Bearer $"+EnvToken)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// caller is the invocation a call belongs to: the one its
// X-Nimbus-Invocation-Id names, else the only one in flight, else the
// instance itself (grants still apply; its log lines go to the node's log).
func (a *platformAPI) caller(r *http.Request) *capability.Caller {
	return a.inst.caller(r.Header.Get(HeaderInvocation))
}

func (a *platformAPI) kvGet(w http.ResponseWriter, r *http.Request) {
	v, rev, err := a.inst.m.rt.services.KV.Get(r.Context(), a.caller(r), r.PathValue("bucket"), r.PathValue("key"))
	if err != nil {
		serviceFail(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set(HeaderRevision, strconv.FormatUint(rev, 10))
	_, _ = w.Write(v)
}

// secret answers the current value of a granted secret: unlike the
// environment variable, made when the process started, it sees a value
// set since (rotation without a restart).
func (a *platformAPI) secret(w http.ResponseWriter, r *http.Request) {
	v, err := a.inst.m.rt.services.Secret.Get(r.Context(), a.caller(r), r.PathValue("name"))
	if err != nil {
		serviceFail(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(v)
}

func (a *platformAPI) kvPut(w http.ResponseWriter, r *http.Request) {
	var opts state.PutOptions
	q := r.URL.Query()
	if s := q.Get("ttl"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			apiFail(w, http.StatusBadRequest, "bad_argument", fmt.Sprintf("ttl %q is not a positive duration (30s, 5m)", s))
			return
		}
		opts.TTL = d
	}
	var ok bool
	if opts.IfRevision, ok = ifRevision(w, r); !ok {
		return
	}
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	rev, err := a.inst.m.rt.services.KV.Put(r.Context(), a.caller(r), r.PathValue("bucket"), r.PathValue("key"), body, opts)
	if err != nil {
		serviceFail(w, err)
		return
	}
	w.Header().Set(HeaderRevision, strconv.FormatUint(rev, 10))
	apiJSON(w, http.StatusOK, map[string]uint64{"revision": rev})
}

func (a *platformAPI) kvDelete(w http.ResponseWriter, r *http.Request) {
	ifRev, ok := ifRevision(w, r)
	if !ok {
		return
	}
	if err := a.inst.m.rt.services.KV.Delete(r.Context(), a.caller(r), r.PathValue("bucket"), r.PathValue("key"), ifRev); err != nil {
		serviceFail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *platformAPI) kvList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 0
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			apiFail(w, http.StatusBadRequest, "bad_argument", fmt.Sprintf("limit %q is not a count", s))
			return
		}
		limit = n
	}
	keys, more, err := a.inst.m.rt.services.KV.List(r.Context(), a.caller(r), r.PathValue("bucket"), q.Get("prefix"), q.Get("after"), limit)
	if err != nil {
		serviceFail(w, err)
		return
	}
	if keys == nil {
		keys = []string{}
	}
	apiJSON(w, http.StatusOK, map[string]any{"keys": keys, "more": more})
}

func (a *platformAPI) publish(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	dup, err := a.inst.m.rt.services.Publish.Publish(r.Context(), a.caller(r), r.PathValue("topic"), body)
	if err != nil {
		serviceFail(w, err)
		return
	}
	apiJSON(w, http.StatusAccepted, map[string]bool{"duplicate": dup})
}

// levels are the names POST /log takes.
var levels = map[string]capability.Level{"debug": capability.LevelDebug, "info": capability.LevelInfo, "": capability.LevelInfo,
	"warn": capability.LevelWarn, "error": capability.LevelError}

func (a *platformAPI) log(w http.ResponseWriter, r *http.Request) {
	level, ok := levels[r.URL.Query().Get("level")]
	if !ok {
		apiFail(w, http.StatusBadRequest, "bad_argument", "level must be debug, info, warn or error")
		return
	}
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	if err := a.inst.m.rt.services.Log.Log(a.caller(r), level, body); err != nil {
		serviceFail(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// ifRevision reads the if_revision query parameter: a compare-and-swap on
// that revision (0: only if the key does not exist).
func ifRevision(w http.ResponseWriter, r *http.Request) (*uint64, bool) {
	s := r.URL.Query().Get("if_revision")
	if s == "" {
		return nil, true
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		apiFail(w, http.StatusBadRequest, "bad_argument", fmt.Sprintf("if_revision %q is not a revision", s))
		return nil, false
	}
	return &n, true
}

func readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAPIBody))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		apiFail(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("the body is over %d bytes", maxAPIBody))
		return nil, false
	case err != nil:
		apiFail(w, http.StatusBadRequest, "bad_argument", "reading the body: "+err.Error())
		return nil, false
	}
	return b, true
}

// serviceFail answers a service error with its status: the one place the
// services' typed errors meet HTTP for processes.
func serviceFail(w http.ResponseWriter, err error) {
	var mm *capability.RevisionMismatchError
	switch {
	case errors.As(err, &mm):
		w.Header().Set(HeaderRevision, strconv.FormatUint(mm.Current, 10))
		apiJSON(w, http.StatusConflict, map[string]any{"error": "revision_mismatch", "message": err.Error(), "revision": mm.Current})
	case errors.Is(err, capability.ErrDenied):
		apiFail(w, http.StatusForbidden, "denied", err.Error())
	case errors.Is(err, capability.ErrBadArgument):
		apiFail(w, http.StatusBadRequest, "bad_argument", err.Error())
	case errors.Is(err, capability.ErrTooLarge):
		apiFail(w, http.StatusRequestEntityTooLarge, "too_large", err.Error())
	case errors.Is(err, capability.ErrNotFound):
		apiFail(w, http.StatusNotFound, "not_found", err.Error())
	case errors.Is(err, capability.ErrNoBucket):
		apiFail(w, http.StatusNotFound, "no_bucket", err.Error())
	case errors.Is(err, capability.ErrNoTopic):
		apiFail(w, http.StatusNotFound, "no_topic", err.Error())
	default:
		apiFail(w, http.StatusServiceUnavailable, "unavailable", err.Error())
	}
}

func apiFail(w http.ResponseWriter, status int, code, msg string) {
	apiJSON(w, status, map[string]string{"error": code, "message": strings.TrimSpace(msg)})
}

func apiJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
