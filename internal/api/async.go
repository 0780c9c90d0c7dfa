package api

import (
	"context"
	"net/http"

	"github.com/nimbus-dev/nimbus/internal/events"
	"github.com/nimbus-dev/nimbus/internal/gateway"
)

// Async is the part of the Platform behind async invocations: queueing
// them (POST .../invoke with Prefer: respond-async) and reading their
// state (GET /api/v1/invocations/{id}).
type Async interface {
	gateway.AsyncSink
	Invocation(ctx context.Context, id string) (*events.Invocation, error)
}

func (a *api) invocation(w http.ResponseWriter, r *http.Request) error {
	inv, err := a.p.Invocation(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, inv)
	return nil
}
