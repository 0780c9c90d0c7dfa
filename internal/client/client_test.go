package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/apierror"
	"github.com/nimbus-dev/nimbus/internal/client"
	"github.com/nimbus-dev/nimbus/internal/guestlog"
)

// serve starts an HTTP server on 127.0.0.1 (httptest's default) that
// answers with h, and closes it when the test ends.
func serve(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// asError returns err as a *client.Error or fails the test.
func asError(t *testing.T, err error) *client.Error {
	t.Helper()
	var e *client.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *client.Error", err, err)
	}
	return e
}

func TestAuthHeaderAndBaseURL(t *testing.T) {
	var gotAuth, gotPath atomic.Value
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		gotAuth.Store(r.Header.Get("Authorization"))
		gotPath.Store(r.URL.Path)
		io.WriteString(w, `{"version":"v1","uptime":"1s","apps":3}`)
	})
	ctx := context.Background()

	// Trailing slashes on the server URL do not double the path's slash.
	c := client.New(srv.URL+"//", "nmb_secret")
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != "v1" || st.Apps != 3 {
		t.Fatalf("status = %+v", st)
	}
	if got := gotAuth.Load(); got != "Bearer nmb_secret" {
		t.Fatalf("Authorization = %q", got)
	}
	if got := gotPath.Load(); got != "/api/v1/status" {
		t.Fatalf("path = %q", got)
	}

	// No token, no Authorization header.
	if _, err := client.New(srv.URL, "").Status(ctx); err != nil {
		t.Fatal(err)
	}
	if got := gotAuth.Load(); got != "" {
		t.Fatalf("Authorization without a token = %q", got)
	}
}

func TestPathEscaping(t *testing.T) {
	var got atomic.Value
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		got.Store(r.URL.EscapedPath())
		io.WriteString(w, `{}`)
	})
	if _, err := client.New(srv.URL, "").App(context.Background(), "a/b c"); err != nil {
		t.Fatal(err)
	}
	if want := "/api/v1/apps/a%2Fb%20c"; got.Load() != want {
		t.Fatalf("path = %q, want %q", got.Load(), want)
	}
}

// TestAPIError: an error written by apierror (the server's one encoder)
// comes back as a *client.Error with the same status, code, message and
// details.
func TestAPIError(t *testing.T) {
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		e := apierror.New(http.StatusUnprocessableEntity, "invalid_manifest", "manifest has 1 error")
		e.Details = []map[string]string{{"path": "functions.api.memory"}}
		apierror.Write(w, e)
	})
	_, err := client.New(srv.URL, "").Apps(context.Background())
	e := asError(t, err)
	if e.Status != http.StatusUnprocessableEntity || e.Code != "invalid_manifest" || e.Message != "manifest has 1 error" {
		t.Fatalf("error = %+v", e)
	}
	if err.Error() != "manifest has 1 error" {
		t.Fatalf("Error() = %q", err.Error())
	}
	var details []map[string]string
	if err := json.Unmarshal(e.Details, &details); err != nil || len(details) != 1 || details[0]["path"] != "functions.api.memory" {
		t.Fatalf("details = %s (%v)", e.Details, err)
	}
}

// TestNonAPIError: a body that is not the API's envelope (a proxy's page,
// plain text) still gives a stable code, http_<status>.
func TestNonAPIError(t *testing.T) {
	for _, tc := range []struct {
		body    string
		status  int
		message string
	}{
		{"upstream down\n", http.StatusBadGateway, "upstream down"},
		{"", http.StatusServiceUnavailable, "503 Service Unavailable"},
		{`{"other":"json"}`, http.StatusInternalServerError, `{"other":"json"}`},
	} {
		srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(tc.status)
			io.WriteString(w, tc.body)
		})
		e := asError(t, client.New(srv.URL, "").KVDelete(context.Background(), "app", "b", "k", nil))
		if e.Status != tc.status || e.Code != fmt.Sprintf("http_%d", tc.status) || e.Message != tc.message {
			t.Errorf("body %q: error = %+v", tc.body, e)
		}
	}
}

// TestInvokeErrors: a function's own error answer is a result; only an
// answer marked with X-Nimbus-Error (the platform's) is an error.
func TestInvokeErrors(t *testing.T) {
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/apps/shop/functions/api/invoke" {
			http.NotFound(w, r)
			return
		}
		switch r.Header.Get("Content-Type") {
		case "text/platform":
			apierror.Write(w, apierror.New(http.StatusGatewayTimeout, "timeout", "function api timed out after 1s"))
		default:
			// The function's own JSON 404, without the platform's header.
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("X-Nimbus-Invocation-Id", "inv-1")
			w.Header().Set("Traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `{"error":{"code":"no_such_order","message":"no"}}`)
		}
	})
	c := client.New(srv.URL, "")
	ctx := context.Background()

	res, err := c.Invoke(ctx, "shop", "api", []byte("{}"), "application/json")
	if err != nil {
		t.Fatalf("function's own 404 became an error: %v", err)
	}
	if res.Status != http.StatusNotFound || !strings.Contains(string(res.Body), "no_such_order") ||
		res.InvocationID != "inv-1" || !strings.HasPrefix(res.TraceParent, "00-0af7") {
		t.Fatalf("result = %+v", res)
	}

	_, err = c.Invoke(ctx, "shop", "api", nil, "text/platform")
	if e := asError(t, err); e.Status != http.StatusGatewayTimeout || e.Code != "timeout" {
		t.Fatalf("platform error = %+v", e)
	}
}

func TestInvokeAsync(t *testing.T) {
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Prefer") != "respond-async" {
			apierror.Write(w, apierror.New(http.StatusBadRequest, "not_async", "want Prefer: respond-async"))
			return
		}
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, `{"id":"inv-%s","status_url":"/api/v1/invocations/x","duplicate":%v}`,
			r.Header.Get("Idempotency-Key"), r.Header.Get("Idempotency-Key") != "")
	})
	acc, err := client.New(srv.URL, "").InvokeAsync(context.Background(), "shop", "api", nil, "", "k1")
	if err != nil {
		t.Fatal(err)
	}
	if acc.ID != "inv-k1" || !acc.Duplicate || acc.Status != "/api/v1/invocations/x" {
		t.Fatalf("accepted = %+v", acc)
	}
}

func TestArtifacts(t *testing.T) {
	var put atomic.Value
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		sha := strings.TrimPrefix(r.URL.Path, "/api/v1/artifacts/")
		switch {
		case r.Method == http.MethodHead && sha == "have":
		case r.Method == http.MethodHead && sha == "broken":
			w.WriteHeader(http.StatusInternalServerError)
		case r.Method == http.MethodHead:
			w.WriteHeader(http.StatusNotFound)
		case r.Method == http.MethodPut && sha == "bad":
			apierror.Write(w, apierror.New(http.StatusBadRequest, "digest_mismatch", "body does not hash to bad"))
		case r.Method == http.MethodPut:
			b, _ := io.ReadAll(r.Body)
			put.Store(r.Header.Get("Content-Type") + " " + string(b))
			w.WriteHeader(http.StatusCreated)
		}
	})
	c := client.New(srv.URL, "")
	ctx := context.Background()
	if ok, err := c.HasArtifact(ctx, "have"); !ok || err != nil {
		t.Fatalf("HasArtifact(have) = %v, %v", ok, err)
	}
	if ok, err := c.HasArtifact(ctx, "missing"); ok || err != nil {
		t.Fatalf("HasArtifact(missing) = %v, %v", ok, err)
	}
	if _, err := c.HasArtifact(ctx, "broken"); asError(t, err).Code != "http_500" {
		t.Fatalf("HasArtifact(broken) = %v", err)
	}
	if err := c.PutArtifact(ctx, "abc", []byte("\x00asm")); err != nil {
		t.Fatal(err)
	}
	if got := put.Load(); got != "application/wasm \x00asm" {
		t.Fatalf("put = %q", got)
	}
	if e := asError(t, c.PutArtifact(ctx, "bad", nil)); e.Code != "digest_mismatch" {
		t.Fatalf("PutArtifact(bad) = %+v", e)
	}
}

func TestKV(t *testing.T) {
	var query atomic.Value
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		query.Store(r.URL.RawQuery)
		switch r.Method {
		case http.MethodGet:
			w.Header().Set("X-Nimbus-Revision", "7")
			io.WriteString(w, "value")
		case http.MethodPut:
			io.WriteString(w, `{"revision":8}`)
		}
	})
	c := client.New(srv.URL, "")
	ctx := context.Background()
	v, rev, err := c.KVGet(ctx, "shop", "carts", "k")
	if err != nil || string(v) != "value" || rev != 7 {
		t.Fatalf("KVGet = %q, %d, %v", v, rev, err)
	}
	want := uint64(7)
	rev, err = c.KVPut(ctx, "shop", "carts", "k", []byte("v2"), time.Minute, &want)
	if err != nil || rev != 8 {
		t.Fatalf("KVPut = %d, %v", rev, err)
	}
	if got := query.Load(); got != "if_revision=7&ttl=1m0s" {
		t.Fatalf("KVPut query = %q", got)
	}
}

func TestLogs(t *testing.T) {
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("function") != "api" || r.URL.Query().Get("limit") != "2" || r.URL.Query().Get("run") != "order-1" {
			apierror.Write(w, apierror.New(http.StatusBadRequest, "bad_query", r.URL.RawQuery))
			return
		}
		io.WriteString(w, `{"app":"shop","function":"api","stream":"stdout","message":"one"}`+"\n")
		io.WriteString(w, `{"app":"shop","function":"api","stream":"log","level":"info","message":"two","run":"order-1","step":{"name":"charge","position":1,"attempt":2}}`+"\n")
	})
	var got []guestlog.Entry
	err := client.New(srv.URL, "").Logs(context.Background(), "shop", client.LogQuery{Function: "api", Limit: 2, Run: "order-1"},
		func(e guestlog.Entry) error { got = append(got, e); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Message != "one" || got[1].Level != "info" || got[1].Run != "order-1" || got[1].Step == nil || *got[1].Step != (guestlog.Step{Name: "charge", Position: 1, Attempt: 2}) {
		t.Fatalf("entries = %+v", got)
	}
}

// TestUnreachable: a refused connection names the server and how to point
// the CLI elsewhere.
func TestUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there now
	_, err = client.New(addr, "").Status(context.Background())
	if err == nil || !strings.Contains(err.Error(), "cannot reach the Nimbus API at "+addr) {
		t.Fatalf("err = %v", err)
	}
	var opErr *net.OpError
	if !errors.As(err, &opErr) {
		t.Fatalf("err %v does not wrap the *net.OpError", err)
	}
}

// TestWait: Wait polls until the API answers.
func TestWait(t *testing.T) {
	var calls atomic.Int32
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) < 3 {
			apierror.Write(w, apierror.New(http.StatusServiceUnavailable, "starting", "starting"))
			return
		}
		io.WriteString(w, `{}`)
	})
	if err := client.New(srv.URL, "").Wait(context.Background(), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := calls.Load(); n != 3 {
		t.Fatalf("%d calls, want 3", n)
	}
}
