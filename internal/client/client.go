package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/nimbus-dev/nimbus/internal/api"
	"github.com/nimbus-dev/nimbus/internal/apierror"
	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
	"github.com/nimbus-dev/nimbus/internal/gateway"
	"github.com/nimbus-dev/nimbus/internal/guestlog"
	"github.com/nimbus-dev/nimbus/internal/model"
)

// Client calls one Nimbus server's API.
type Client struct {
	BaseURL string // e.g. http://127.0.0.1:8081
	Token   string
	// TokenSource says where Token came from (see Target); error messages
	// about the token name it.
	TokenSource string
	HTTP        *http.Client
}

// New returns a client for the API at baseURL.
func New(baseURL, token string) *Client {
	return &Client{BaseURL: strings.TrimRight(baseURL, "/"), Token: token, HTTP: &http.Client{}}
}

// Error is an error answered by the server.
type Error struct {
	Status  int
	Code    string
	Message string
	Details json.RawMessage
}

func (e *Error) Error() string { return e.Message }

func (c *Client) do(ctx context.Context, method, path string, body io.Reader, header http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, body)
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		var netErr *net.OpError
		if errors.As(err, &netErr) {
			return nil, fmt.Errorf("cannot reach the Nimbus API at %s (is `nimbus up` running? set --server or NIMBUS_URL): %w", c.BaseURL, err)
		}
		return nil, err
	}
	return resp, nil
}

// decodeError reads an API error body.
func (c *Client) decodeError(resp *http.Response) error {
	return c.explain(resp, decodeError(resp))
}

// decodeError reads an API error body.
func decodeError(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var b struct {
		Error *apierror.Error `json:"error"`
	}
	var raw struct {
		Error struct {
			Details json.RawMessage `json:"details"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &b) == nil && b.Error != nil {
		json.Unmarshal(data, &raw)
		return &Error{Status: resp.StatusCode, Code: b.Error.Code, Message: b.Error.Message, Details: raw.Error.Details}
	}
	code := resp.Header.Get(apierror.Header)
	msg := strings.TrimSpace(string(data))
	if msg == "" {
		msg = resp.Status
		if code != "" {
			msg += " (" + code + ")"
		}
	}
	if code == "" {
		code = "http_" + fmt.Sprint(resp.StatusCode)
	}
	return &Error{Status: resp.StatusCode, Code: code, Message: msg}
}

func (c *Client) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	h := http.Header{}
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(data)
		h.Set("Content-Type", "application/json")
	}
	resp, err := c.do(ctx, method, path, body, h)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return c.decodeError(resp)
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// Status calls GET /api/v1/status.
func (c *Client) Status(ctx context.Context) (*api.Status, error) {
	var s api.Status
	return &s, c.call(ctx, http.MethodGet, "/api/v1/status", nil, &s)
}

// HasArtifact reports whether the server holds the artifact.
func (c *Client) HasArtifact(ctx context.Context, sha string) (bool, error) {
	resp, err := c.do(ctx, http.MethodHead, "/api/v1/artifacts/"+sha, nil, nil)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return true, nil
	case http.StatusNotFound:
		return false, nil
	}
	return false, c.decodeError(resp)
}

// PutArtifact uploads an artifact under its sha256.
func (c *Client) PutArtifact(ctx context.Context, sha string, data []byte) error {
	h := http.Header{"Content-Type": {"application/wasm"}}
	resp, err := c.do(ctx, http.MethodPut, "/api/v1/artifacts/"+sha, bytes.NewReader(data), h)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return c.decodeError(resp)
	}
	return nil
}

// Deploy activates a new revision of app.
func (c *Client) Deploy(ctx context.Context, app string, spec model.Spec) (*api.DeployResult, error) {
	var out api.DeployResult
	return &out, c.call(ctx, http.MethodPost, "/api/v1/apps/"+url.PathEscape(app)+"/deploy", spec, &out)
}

// Rollback moves app back to revision ("" = the previous one).
func (c *Client) Rollback(ctx context.Context, app, revision string) (*api.DeployResult, error) {
	var out api.DeployResult
	return &out, c.call(ctx, http.MethodPost, "/api/v1/apps/"+url.PathEscape(app)+"/rollback", api.RollbackRequest{Revision: revision}, &out)
}

// Apps lists apps.
func (c *Client) Apps(ctx context.Context) ([]api.AppSummary, error) {
	var out []api.AppSummary
	return out, c.call(ctx, http.MethodGet, "/api/v1/apps", nil, &out)
}

// App shows one app.
func (c *Client) App(ctx context.Context, app string) (*api.AppDetail, error) {
	var out api.AppDetail
	return &out, c.call(ctx, http.MethodGet, "/api/v1/apps/"+url.PathEscape(app), nil, &out)
}

// Revisions lists an app's revisions, newest first.
func (c *Client) Revisions(ctx context.Context, app string) ([]model.Revision, error) {
	var out []model.Revision
	return out, c.call(ctx, http.MethodGet, "/api/v1/apps/"+url.PathEscape(app)+"/revisions", nil, &out)
}

// InvokeResult is a function's answer to Invoke.
type InvokeResult struct {
	Status       int         `json:"status"`
	Header       http.Header `json:"headers"`
	Body         []byte      `json:"-"`
	InvocationID string      `json:"invocation_id"`
	TraceParent  string      `json:"traceparent"`
}

// Invoke calls app/function directly, without HTTP routing. A function's
// own non-2xx answer is a result, not an error; platform failures (timeout,
// limits) are errors.
func (c *Client) Invoke(ctx context.Context, app, function string, body []byte, contentType string) (*InvokeResult, error) {
	h := http.Header{}
	if contentType != "" {
		h.Set("Content-Type", contentType)
	}
	resp, err := c.do(ctx, http.MethodPost, "/api/v1/apps/"+url.PathEscape(app)+"/functions/"+url.PathEscape(function)+"/invoke", bytes.NewReader(body), h)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") == "application/json" && resp.StatusCode >= 400 && resp.Header.Get("X-Nimbus-Error") != "" {
		return nil, c.decodeError(resp)
	}
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	r := &InvokeResult{Status: resp.StatusCode, Header: resp.Header, Body: data,
		InvocationID: resp.Header.Get("X-Nimbus-Invocation-Id"), TraceParent: resp.Header.Get("Traceparent")}
	return r, nil
}

// LogQuery selects logs.
type LogQuery struct {
	Function string
	Since    string // duration or RFC 3339
	Limit    int
	Follow   bool
	Run      string // one workflow run's lines
}

// Logs streams an app's guest logs to fn until the stream ends (or, with
// Follow, until ctx is done).
func (c *Client) Logs(ctx context.Context, app string, q LogQuery, fn func(guestlog.Entry) error) error {
	v := url.Values{}
	if q.Function != "" {
		v.Set("function", q.Function)
	}
	if q.Since != "" {
		v.Set("since", q.Since)
	}
	if q.Limit > 0 {
		v.Set("limit", fmt.Sprint(q.Limit))
	}
	if q.Run != "" {
		v.Set("run", q.Run)
	}
	if q.Follow {
		v.Set("follow", "true")
	}
	resp, err := c.do(ctx, http.MethodGet, "/api/v1/apps/"+url.PathEscape(app)+"/logs?"+v.Encode(), nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return c.decodeError(resp)
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var e guestlog.Entry
		if err := dec.Decode(&e); err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read log stream: %w", err)
		}
		if err := fn(e); err != nil {
			return err
		}
	}
}

// Wait polls the API until it answers or the timeout passes.
func (c *Client) Wait(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		_, err := c.Status(ctx)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func kvPath(app, bucket string) string {
	return "/api/v1/apps/" + url.PathEscape(app) + "/buckets/" + url.PathEscape(bucket) + "/keys"
}

// KVGet reads a key: its value and revision.
func (c *Client) KVGet(ctx context.Context, app, bucket, key string) ([]byte, uint64, error) {
	resp, err := c.do(ctx, http.MethodGet, kvPath(app, bucket)+"/"+key, nil, nil)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return nil, 0, c.decodeError(resp)
	}
	v, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, 0, err
	}
	var rev uint64
	fmt.Sscan(resp.Header.Get(api.HeaderRevision), &rev)
	return v, rev, nil
}

// KVPut writes a key. ttl 0 means none; ifRevision nil means unconditional.
func (c *Client) KVPut(ctx context.Context, app, bucket, key string, value []byte, ttl time.Duration, ifRevision *uint64) (uint64, error) {
	q := url.Values{}
	if ttl > 0 {
		q.Set("ttl", ttl.String())
	}
	if ifRevision != nil {
		q.Set("if_revision", fmt.Sprint(*ifRevision))
	}
	resp, err := c.do(ctx, http.MethodPut, kvPath(app, bucket)+"/"+key+"?"+q.Encode(), bytes.NewReader(value), http.Header{"Content-Type": {"application/octet-stream"}})
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return 0, c.decodeError(resp)
	}
	var out api.KVPutResult
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return 0, fmt.Errorf("kv put: decode answer: %w", err)
	}
	return out.Revision, nil
}

// KVDelete deletes a key.
func (c *Client) KVDelete(ctx context.Context, app, bucket, key string, ifRevision *uint64) error {
	q := ""
	if ifRevision != nil {
		q = "?if_revision=" + fmt.Sprint(*ifRevision)
	}
	return c.call(ctx, http.MethodDelete, kvPath(app, bucket)+"/"+key+q, nil, nil)
}

// KVList lists keys with a prefix, one page after the key `after`.
func (c *Client) KVList(ctx context.Context, app, bucket, prefix, after string) (*api.KVKeys, error) {
	q := url.Values{"prefix": {prefix}, "after": {after}}
	var out api.KVKeys
	return &out, c.call(ctx, http.MethodGet, kvPath(app, bucket)+"?"+q.Encode(), nil, &out)
}

// Publish sends one event to app/topic (CloudEvents binary mode) and returns
// once the server has stored it.
func (c *Client) Publish(ctx context.Context, app, topic string, e *cloudevents.Event) (*gateway.PublishResult, error) {
	// WriteRequest encodes the event's attributes as ce-* headers; c.do
	// sends them with the data as the body.
	enc := &http.Request{Header: http.Header{}}
	if err := cloudevents.WriteRequest(enc, e); err != nil {
		return nil, err
	}
	path := "/api/v1/apps/" + url.PathEscape(app) + "/topics/" + url.PathEscape(topic) + "/events"
	resp, err := c.do(ctx, http.MethodPost, path, bytes.NewReader(e.Data), enc.Header)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return nil, c.decodeError(resp)
	}
	var out gateway.PublishResult
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("publish: decode answer: %w", err)
	}
	return &out, nil
}

// DeadLetterQuery selects a page of dead letters.
type DeadLetterQuery struct {
	Limit  int    // page size; 0: the server's default (100)
	After  uint64 // the previous page's Next
	Newest bool   // newest first; default oldest first
}

// DeadLetters lists a page of an app's dead letters.
func (c *Client) DeadLetters(ctx context.Context, app string, q DeadLetterQuery) (*api.DeadLetterList, error) {
	v := url.Values{}
	if q.Limit > 0 {
		v.Set("limit", fmt.Sprint(q.Limit))
	}
	if q.After > 0 {
		v.Set("after", fmt.Sprint(q.After))
	}
	if q.Newest {
		v.Set("order", "newest")
	}
	var out api.DeadLetterList
	return &out, c.call(ctx, http.MethodGet, "/api/v1/apps/"+url.PathEscape(app)+"/dead-letters?"+v.Encode(), nil, &out)
}

// ReplayDeadLetters re-drives dead letters of an app (req.Seqs, or req.All).
// A dead letter that could not be replayed is in the answer, not an error.
func (c *Client) ReplayDeadLetters(ctx context.Context, app string, req api.ReplayRequest) (*api.ReplayAnswer, error) {
	var out api.ReplayAnswer
	return &out, c.call(ctx, http.MethodPost, "/api/v1/apps/"+url.PathEscape(app)+"/dead-letters/replay", req, &out)
}
