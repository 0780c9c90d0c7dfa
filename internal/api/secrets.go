package api

import (
	"context"
	"net/http"

	"github.com/nimbus-dev/nimbus/internal/security"
)

// SecretStore is what the secrets endpoints need; *security.Secrets
// implements it. Nothing in the API reads a secret's value back.
type SecretStore interface {
	Set(ctx context.Context, app, name string, value []byte) (security.SecretInfo, error)
	List(ctx context.Context, app string) ([]security.SecretInfo, error)
	Delete(ctx context.Context, app, name string) error
}

var _ SecretStore = (*security.Secrets)(nil)

// SecretsPlatform is a Platform that keeps secrets: Handler serves
// /api/v1/apps/{app}/secrets when the Platform is one.
type SecretsPlatform interface {
	Secrets() SecretStore
}

// SetSecretRequest is the body of PUT /api/v1/apps/{app}/secrets/{name}.
type SetSecretRequest struct {
	Value string `json:"value"`
}

// secretRoutes serves the secrets of an app, under the "secrets" scope:
// PUT sets one (the answer is its name, version and time), GET lists
// them (names, versions and times), DELETE removes one. No answer ever
// holds a value.
func secretRoutes(handle func(string, security.Scope, func(http.ResponseWriter, *http.Request) error), s SecretStore) {
	handle("GET /api/v1/apps/{app}/secrets", security.ScopeSecrets, func(w http.ResponseWriter, r *http.Request) error {
		list, err := s.List(r.Context(), r.PathValue("app"))
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, list)
	})
	handle("PUT /api/v1/apps/{app}/secrets/{name}", security.ScopeSecrets, func(w http.ResponseWriter, r *http.Request) error {
		var req SetSecretRequest
		if err := decodeJSON(r, &req); err != nil {
			return err
		}
		info, err := s.Set(r.Context(), r.PathValue("app"), r.PathValue("name"), []byte(req.Value))
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, info)
	})
	handle("DELETE /api/v1/apps/{app}/secrets/{name}", security.ScopeSecrets, func(w http.ResponseWriter, r *http.Request) error {
		if err := s.Delete(r.Context(), r.PathValue("app"), r.PathValue("name")); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	})
}

// SecretInfo is a secret as the API shows it: name, version, time.
type SecretInfo = security.SecretInfo
