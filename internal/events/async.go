package events

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbus-dev/nimbus/internal/events/cloudevents"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/store"
	"github.com/nimbus-dev/nimbus/internal/telemetry"
	"github.com/nimbus-dev/nimbus/internal/throttle"
)

// Async invocations.
//
// An async invocation is an HTTP request accepted now and run later, with
// the retries and dead letters of a topic trigger. It is stored as an
// event (AsyncEntry) on the app's internal topic AsyncTopic and delivered
// by one trigger per app with TriggerSpec.Async set: that trigger invokes
// the function the event names (its subject) with the request the event
// carries, instead of the CloudEvents binary mode. Its outcome is kept in
// the KV bucket InvocationsBucket, read with Invocations.Get.
//
// The invocation id is derived from the event's place in the stream
// (AsyncID: its message's sequence, and its index when the message is a
// pack of invocations accepted together), so accepting costs a share of
// one group-committed append and nothing else; until a record exists, the
// event itself says "queued".
const (
	// AsyncTopic is the internal topic of an app's async invocations.
	AsyncTopic = "_async"
	// AsyncEventType is the CloudEvents type of an async invocation.
	AsyncEventType = "dev.nimbus.invocation"
	// ExtRequest is the extension carrying the request line and headers
	// of an async invocation as JSON (AsyncRequest); the body is the data.
	ExtRequest = "nimbusrequest"
	// InvocationsBucket is the KV bucket of async invocation records.
	InvocationsBucket = "nimbus_invocations"
	// DefaultInvocationTTL is how long invocation records are kept.
	DefaultInvocationTTL = 24 * time.Hour
	// MaxRecordedBody caps the response body kept in a record.
	MaxRecordedBody = 64 << 10
)

// Invocation states.
const (
	StateQueued     = "queued"     // accepted, not started
	StateRunning    = "running"    // an attempt is running on this node
	StateRetrying   = "retrying"   // an attempt failed; another is scheduled
	StateSucceeded  = "succeeded"  // the function answered 1xx-3xx
	StateFailed     = "failed"     // the function answered 4xx, or every attempt failed (then it is in the dead-letter topic)
	StateSuperseded = "superseded" // folded into a later invocation by the function's debounce
)

// AsyncRequest is the request line and headers of an async invocation.
type AsyncRequest struct {
	Method   string            `json:"method"`
	Path     string            `json:"path"`
	RawQuery string            `json:"query,omitempty"`
	Header   http.Header       `json:"header,omitempty"`
	Host     string            `json:"host,omitempty"`
	Route    string            `json:"route,omitempty"`
	Params   map[string]string `json:"params,omitempty"`
}

// Invocation is the record of an async invocation.
type Invocation struct {
	ID       string `json:"id"`
	App      string `json:"app"`
	Function string `json:"function"`
	State    string `json:"state"`
	// Attempts counts the attempts started so far.
	Attempts int       `json:"attempts"`
	Accepted time.Time `json:"accepted,omitzero"`
	Updated  time.Time `json:"updated,omitzero"`
	// NextAttempt is when a retrying invocation runs again (about).
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	// Status, Header and Body are the function's answer, once it
	// answered; Body is cut at MaxRecordedBody (BodyTruncated).
	Status        int         `json:"status,omitempty"`
	Header        http.Header `json:"header,omitempty"`
	Body          []byte      `json:"body,omitempty"`
	BodyTruncated bool        `json:"body_truncated,omitempty"`
	// Error is why the last attempt failed.
	Error string `json:"error,omitempty"`
	// DeadLetter is the topic the invocation went to after its last
	// attempt failed.
	DeadLetter     string `json:"dead_letter,omitempty"`
	IdempotencyKey string `json:"idempotency_key,omitempty"`
}

// Done reports whether the invocation reached a final state.
func (inv *Invocation) Done() bool {
	switch inv.State {
	case StateSucceeded, StateFailed, StateSuperseded:
		return true
	}
	return false
}

const asyncIDPrefix = "inv-"

// AsyncID is the invocation id of the async invocation stored at stream
// sequence seq, at index in its message: "inv-<seq>" for the first (or
// only) entry, "inv-<seq>.<index>" for the others of a pack.
func AsyncID(seq uint64, index int) string {
	id := asyncIDPrefix + strconv.FormatUint(seq, 10)
	if index > 0 {
		id += "." + strconv.Itoa(index)
	}
	return id
}

// ParseAsyncID returns the stream sequence and index of an invocation id.
func ParseAsyncID(id string) (seq uint64, index int, ok bool) {
	s, ok := strings.CutPrefix(id, asyncIDPrefix)
	if !ok {
		return 0, 0, false
	}
	s, idx, packed := strings.Cut(s, ".")
	seq, err := strconv.ParseUint(s, 10, 64)
	if err != nil || seq == 0 || seq >= 1<<(64-positionIndexBits) {
		return 0, 0, false
	}
	if packed {
		index, err = strconv.Atoi(idx)
		if err != nil || index < 0 || index >= MaxPackEntries {
			return 0, 0, false
		}
	}
	return seq, index, true
}

// AsyncSource is the CloudEvents source of a function's async
// invocations.
func AsyncSource(app, function string) string { return "/nimbus/" + app + "/functions/" + function }

// asyncMsgID is the Nats-Msg-Id of an async invocation with an idempotency
// key: the same key for the same function within the duplicate window is
// stored once.
func asyncMsgID(app, function, key string) string {
	h := sha256.Sum256([]byte("async\x00" + app + "\x00" + function + "\x00" + key))
	return hex.EncodeToString(h[:])
}

// RetryPolicy overrides the async trigger's retries for one invocation
// (the function's policy); zero fields keep the trigger's.
type RetryPolicy struct {
	MaxAttempts         int
	Backoff, MaxBackoff time.Duration
}

// Extensions carrying an async invocation's RetryPolicy.
const (
	extMaxAttempts = "nimbusmaxattempts"
	extBackoff     = "nimbusbackoffms"
	extMaxBackoff  = "nimbusmaxbackoffms"
)

// AsyncEntry is the log entry of an async invocation of app/function with
// req (its body is the event's data). idempotencyKey, when set, makes the
// same invocation accepted twice within the duplicate window stored once.
// policy, if not nil, is how it is retried.
func AsyncEntry(app, function string, req *runtime.Request, idempotencyKey string, policy *RetryPolicy) (Entry, error) {
	meta, err := json.Marshal(AsyncRequest{
		Method: req.Method, Path: req.Path, RawQuery: req.RawQuery, Header: req.Header,
		Host: req.Host, Route: req.Route, Params: req.Params,
	})
	if err != nil {
		return Entry{}, fmt.Errorf("async request: %w", err)
	}
	var id [16]byte
	rand.Read(id[:])
	e := &cloudevents.Event{
		SpecVersion: "1.0",
		ID:          hex.EncodeToString(id[:]),
		Source:      AsyncSource(app, function),
		Type:        AsyncEventType,
		Subject:     function,
		Time:        time.Now().UTC(),
		Extensions:  map[string]string{ExtRequest: string(meta)},
		Data:        req.Body,
	}
	if ct := req.Header.Get("Content-Type"); ct != "" {
		e.DataContentType = ct
	}
	if req.TraceParent != "" {
		e.Extensions["traceparent"] = req.TraceParent
	}
	if idempotencyKey != "" {
		e.Extensions["nimbusidempotencykey"] = idempotencyKey
	}
	if policy != nil {
		if policy.MaxAttempts > 0 {
			e.Extensions[extMaxAttempts] = strconv.Itoa(policy.MaxAttempts)
		}
		if policy.Backoff > 0 {
			e.Extensions[extBackoff] = strconv.FormatInt(policy.Backoff.Milliseconds(), 10)
		}
		if policy.MaxBackoff > 0 {
			e.Extensions[extMaxBackoff] = strconv.FormatInt(policy.MaxBackoff.Milliseconds(), 10)
		}
	}
	ent := EventEntry(app, AsyncTopic, e)
	if idempotencyKey != "" {
		ent.MsgID = asyncMsgID(app, function, idempotencyKey)
	}
	return ent, nil
}

// asyncRequest rebuilds the request of an async invocation event.
func asyncRequest(e *cloudevents.Event) (*runtime.Request, error) {
	var meta AsyncRequest
	if err := json.Unmarshal([]byte(e.Extensions[ExtRequest]), &meta); err != nil {
		return nil, fmt.Errorf("async invocation %s: request: %w", e.ID, err)
	}
	if meta.Header == nil {
		meta.Header = http.Header{}
	}
	return &runtime.Request{
		Method: meta.Method, Path: meta.Path, RawQuery: meta.RawQuery, Header: meta.Header,
		Host: meta.Host, Route: meta.Route, Params: meta.Params, Body: e.Data,
	}, nil
}

// withPolicy is the trigger's spec with the retry policy an async
// invocation carries, if any.
func withPolicy(s TriggerSpec, e *cloudevents.Event) TriggerSpec {
	num := func(ext string) int64 {
		n, err := strconv.ParseInt(e.Extensions[ext], 10, 64)
		if err != nil || n <= 0 {
			return 0
		}
		return n
	}
	if n := num(extMaxAttempts); n > 0 {
		s.MaxAttempts = int(min(n, 1000))
	}
	if n := num(extBackoff); n > 0 {
		s.Backoff = time.Duration(n) * time.Millisecond
	}
	if n := num(extMaxBackoff); n > 0 {
		s.MaxBackoff = time.Duration(n) * time.Millisecond
	}
	s.MaxBackoff = max(s.MaxBackoff, s.Backoff)
	return s
}

// asyncRetryable reports whether an answered async attempt is retried:
// server errors, 408 and 429. Other answers are final.
func asyncRetryable(status int) bool {
	return status >= 500 || status == http.StatusRequestTimeout || status == http.StatusTooManyRequests
}

// Invocations reads and writes async invocation records: KV bucket
// InvocationsBucket, key = invocation id, plus "key.<hash>" -> id for
// idempotency keys, kept for the records' TTL.
type Invocations struct {
	kv jetstream.KeyValue
	// c writes records through the commit path: concurrent completions
	// share one commit and one fsync.
	c *store.Committer
}

// OpenInvocations creates or opens the records bucket; records are written
// through c. Records are written with the store's durability (fsynced on a
// SyncAlways server): a result the API showed survives a crash.
func OpenInvocations(ctx context.Context, c *store.Committer, ttl time.Duration) (*Invocations, error) {
	if ttl <= 0 {
		ttl = DefaultInvocationTTL
	}
	kv, err := c.JetStream().CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      InvocationsBucket,
		Description: "Nimbus async invocation records",
		TTL:         ttl,
		Storage:     jetstream.FileStorage,
		History:     1,
	})
	if err != nil {
		return nil, fmt.Errorf("invocation records %s: %w", InvocationsBucket, err)
	}
	return &Invocations{kv: kv, c: c}, nil
}

// ErrNoRecord means an invocation has no record (yet).
var ErrNoRecord = errors.New("events: no invocation record")

// Get returns the record of id, or ErrNoRecord.
func (r *Invocations) Get(ctx context.Context, id string) (*Invocation, error) {
	e, err := r.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, ErrNoRecord
	}
	if err != nil {
		return nil, fmt.Errorf("invocation %s: %w", id, err)
	}
	inv := new(Invocation)
	if err := json.Unmarshal(e.Value(), inv); err != nil {
		return nil, fmt.Errorf("invocation %s: corrupt record: %w", id, err)
	}
	return inv, nil
}

// ByKey returns the id of the invocation of app/function accepted with an
// idempotency key, if its record still exists.
func (r *Invocations) ByKey(ctx context.Context, app, function, key string) (string, bool, error) {
	e, err := r.kv.Get(ctx, "key."+asyncMsgID(app, function, key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("idempotency key: %w", err)
	}
	return string(e.Value()), true, nil
}

// put writes a record (and its idempotency key's pointer once final).
func (r *Invocations) put(ctx context.Context, inv *Invocation) error {
	b, err := json.Marshal(inv)
	if err != nil {
		return err
	}
	u := &store.Unit{Writes: []store.Write{store.KVPut(InvocationsBucket, inv.ID, b)}}
	if inv.IdempotencyKey != "" && inv.Done() {
		// The record and its key's pointer in one atomic batch.
		u.Writes = append(u.Writes, store.KVPut(InvocationsBucket, "key."+asyncMsgID(inv.App, inv.Function, inv.IdempotencyKey), []byte(inv.ID)))
	}
	if _, err := r.c.Commit(ctx, u); err != nil {
		return fmt.Errorf("record invocation %s: %w", inv.ID, err)
	}
	return nil
}

// QueuedInvocation reads an async invocation from the events stream at
// seq and index, for an invocation that has no record yet. It reports
// false when that place does not hold an async invocation (or no longer
// exists).
func QueuedInvocation(ctx context.Context, js jetstream.JetStream, stream, prefix string, seq uint64, index int) (*Invocation, bool, error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, false, fmt.Errorf("events stream: %w", err)
	}
	m, err := st.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("invocation %s: %w", AsyncID(seq, index), err)
	}
	var data []byte
	if err := Entries(seq, m.Header, m.Data, func(pos uint64, ent []byte) bool {
		if PositionIndex(pos) == index {
			data = ent
			return false
		}
		return true
	}); err != nil || data == nil {
		return nil, false, nil // a malformed pack, or no entry at index
	}
	// On the app's async topic, or on the async trigger's replay subject
	// (a dead letter replayed): nimbus.events.<app>.<...>.
	rest, ok := strings.CutPrefix(m.Subject, prefix)
	app, _, _ := strings.Cut(rest, ".")
	if !ok || app == "" {
		return nil, false, nil
	}
	e, err := DecodeEntry(data)
	if err != nil || e.Type != AsyncEventType || e.Source != AsyncSource(app, e.Subject) {
		return nil, false, nil
	}
	return &Invocation{
		ID: AsyncID(seq, index), App: app, Function: e.Subject, State: StateQueued,
		Accepted: m.Time, Updated: m.Time, IdempotencyKey: e.Extensions["nimbusidempotencykey"],
	}, true, nil
}

// deliverAsync makes one attempt at an async invocation (see deliver for
// what the results mean) and records its outcome. s is the trigger's spec
// with the invocation's retry policy.
func (t *trigger) deliverAsync(dl *delivery, attempt int, s *TriggerSpec) (retry bool, delay time.Duration) {
	e := dl.event
	id := AsyncID(dl.seq, PositionIndex(dl.pos))
	rec := &Invocation{
		ID: id, App: s.App, Function: e.Subject, Attempts: attempt,
		Accepted: dl.stored, IdempotencyKey: e.Extensions["nimbusidempotencykey"],
	}
	if (dl.delivered > 1 || dl.pos <= t.recordedTo) && dl.local == 0 {
		// A redelivery, or an invocation stored before this loop started
		// (after a kill -9 the server may count a redelivery as a first
		// delivery, see recordsHorizon): the attempt may have finished
		// just before a crash that lost the ack.
		if old, err := t.d.records.Get(t.ctx, id); err == nil && old.Done() {
			t.d.dups.Add(1)
			t.forget(dl.pos)
			t.ack(dl)
			return false, 0
		}
	}
	req, err := asyncRequest(e)
	if err != nil {
		rec.State, rec.Error, rec.DeadLetter = StateFailed, err.Error(), s.DeadLetter
		return t.finalThen(dl, nil, attempt, err.Error(), func() { t.record(rec) })
	}
	req.InvocationID = id
	req.TraceParent = telemetry.Continue(e.Extensions["traceparent"]).String()
	req.Header.Set(HeaderAttempt, strconv.Itoa(attempt))

	t.d.running.Store(dl.pos, attempt)
	resp, err := t.d.inv.Invoke(t.ctx, s.App, e.Subject, req)
	t.d.running.Delete(dl.pos)
	if t.ctx.Err() != nil {
		return false, 0
	}
	if wait, ok := flowDeferral(err); ok {
		return t.putOff(dl, wait)
	}
	var cause string
	switch {
	case errors.Is(err, throttle.ErrSuperseded):
		rec.State = StateSuperseded
	case err == nil && !asyncRetryable(resp.Status):
		rec.State = StateSucceeded
		if resp.Status >= 400 {
			rec.State = StateFailed
			rec.Error = fmt.Sprintf("function answered %d", resp.Status)
		}
		rec.Status, rec.Header, rec.Body = resp.Status, resp.Header, resp.Body
		if rec.Status == 0 {
			rec.Status = http.StatusOK
		}
		if len(rec.Body) > MaxRecordedBody {
			rec.Body, rec.BodyTruncated = rec.Body[:MaxRecordedBody], true
		}
	case errors.Is(err, runtime.ErrRequestTooLarge):
		// No attempt can succeed.
		rec.State, rec.Error = StateFailed, err.Error()
	case err != nil:
		cause = err.Error()
	default:
		body := resp.Body
		if len(body) > 256 {
			body = body[:256]
		}
		cause = fmt.Sprintf("function answered %d: %s", resp.Status, strings.TrimSpace(string(body)))
		rec.Status, rec.Header, rec.Body = resp.Status, resp.Header, body
	}
	if rec.State != "" {
		rec.Updated = time.Now().UTC()
		// Done: the record first, so that once acked the result is there.
		if err := t.d.records.put(t.ctx, rec); err != nil {
			if t.ctx.Err() != nil {
				return false, 0
			}
			if n, ok := t.recordErrs.due(time.Now()); ok {
				t.logger.Error("record async invocation; will run it again", "invocation", id, "err", err, "failed_since_last_report", n)
			}
			return t.retryLater(dl, backoff(s, attempt))
		}
		if h := t.d.onAsyncRecorded; h != nil {
			h(id)
		}
		t.d.nDelivered.Add(1)
		t.forget(dl.pos)
		t.ack(dl)
		return false, 0
	}

	t.d.failed.Add(1)
	dl.lastErr = cause
	rec.Error = cause
	if attempt < s.MaxAttempts {
		delay := backoff(s, attempt)
		rec.State, rec.NextAttempt = StateRetrying, time.Now().Add(delay).UTC()
		t.record(rec)
		return t.retryLater(dl, delay)
	}
	rec.State, rec.DeadLetter = StateFailed, s.DeadLetter
	return t.finalThen(dl, nil, attempt, cause, func() { t.record(rec) })
}

// record writes an async invocation record that is informative only (the
// message's ack does not depend on it).
func (t *trigger) record(rec *Invocation) {
	rec.Updated = time.Now().UTC()
	if err := t.d.records.put(t.ctx, rec); err != nil && t.ctx.Err() == nil {
		if n, ok := t.recordErrs.due(time.Now()); ok {
			t.logger.Warn("record async invocation", "invocation", rec.ID, "err", err, "failed_since_last_report", n)
		}
	}
}
