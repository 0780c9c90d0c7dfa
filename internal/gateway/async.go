package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/nimbus-dev/nimbus/internal/apierror"
	"github.com/nimbus-dev/nimbus/internal/runtime"
)

// AsyncSink queues async invocations; the server implements it.
type AsyncSink interface {
	// EnqueueInvocation returns once the invocation is durably queued.
	EnqueueInvocation(ctx context.Context, app, function string, req *runtime.Request, idempotencyKey string) (id string, duplicate bool, err error)
}

// Headers of async invocations.
const (
	HeaderPrefer         = "Prefer"
	HeaderIdempotencyKey = "Idempotency-Key"
	// MaxIdempotencyKey bounds an Idempotency-Key header.
	MaxIdempotencyKey = 256
)

// InvocationsPath is where the state of an async invocation is read (on
// the API listener).
const InvocationsPath = "/api/v1/invocations/"

// Accepted is the answer to an accepted async invocation.
type Accepted struct {
	ID string `json:"id"`
	// Status is where its state is read (API, read scope).
	Status string `json:"status_url"`
	// Duplicate is true when the Idempotency-Key matched an earlier
	// invocation, whose id this is.
	Duplicate bool `json:"duplicate,omitempty"`
}

// SetAsync turns on async invocation of routes (Prefer: respond-async).
func (g *Gateway) SetAsync(sink AsyncSink) {
	g.setCalls(func(c *Invocations) { c.Async = sink })
}

// WantsAsync reports whether a request asks to be answered before it runs
// (RFC 7240 "Prefer: respond-async").
func WantsAsync(h http.Header) bool {
	for _, v := range h.Values(HeaderPrefer) {
		for pref := range strings.SplitSeq(v, ",") {
			name, _, _ := strings.Cut(pref, ";")
			if strings.EqualFold(strings.TrimSpace(name), "respond-async") {
				return true
			}
		}
	}
	return false
}

// ServeAsync queues req for app/function and answers 202 with the
// invocation id and a Location to read its state; the sink's errors are
// answered as apierror.From maps them.
func ServeAsync(w http.ResponseWriter, r *http.Request, sink AsyncSink, app, function string, req *runtime.Request) {
	key := r.Header.Get(HeaderIdempotencyKey)
	if len(key) > MaxIdempotencyKey {
		apierror.Write(w, apierror.New(http.StatusBadRequest, "bad_idempotency_key",
			"Idempotency-Key is longer than 256 bytes; use a shorter unique key (a UUID)"))
		return
	}
	id, dup, err := sink.EnqueueInvocation(r.Context(), app, function, req, key)
	if err != nil {
		apierror.Write(w, err)
		return
	}
	res := Accepted{ID: id, Status: InvocationsPath + id, Duplicate: dup}
	h := w.Header()
	h.Set(HeaderInvocationID, id)
	h.Set("Location", res.Status)
	h.Set("Preference-Applied", "respond-async")
	h.Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	json.NewEncoder(w).Encode(res)
}
