package capability

import (
	"context"
	"errors"
	"fmt"

	"github.com/nimbus-dev/nimbus/internal/model"
)

// SecretStore is what the secret service needs of the secrets store; in the
// server, a *secrets.Store. Get returns the current value of an app's
// secret (ok false when it is not set), decrypted; an error is a failure
// of the store or of decryption, and never carries the value.
type SecretStore interface {
	Get(ctx context.Context, app, name string) (value []byte, ok bool, err error)
}

// SecretService reads the secrets of the caller's app (capability
// "secret", scoped per name: "secret:STRIPE_KEY"). Every read goes to the
// store, so a secret set again is seen by the next read, without a
// redeploy.
type SecretService struct {
	*guard
	store SecretStore
}

// Get returns the current value of the caller's app's secret name. Errors
// match ErrBadArgument (not a secret name), ErrDenied, ErrNotFound (the
// secret is not set) or ErrUnavailable; none carries the value.
func (s *SecretService) Get(ctx context.Context, call *Caller, name string) ([]byte, error) {
	const op = "secret"
	if !model.ValidSecretName(name) {
		return nil, fail(op, ErrBadArgument, fmt.Errorf("%q is not a secret name: %s", name, model.SecretNameRule))
	}
	if err := s.check(call, op, secretGrant(name)); err != nil {
		return nil, err
	}
	if s.store == nil {
		return nil, fail(op, ErrUnavailable, errors.New("no secret store in this process"))
	}
	v, ok, err := s.store.Get(ctx, call.App, name)
	switch {
	case err != nil:
		s.failed(call, "secret host function failed", op, err, "secret", name)
		return nil, fail(op, ErrUnavailable, fmt.Errorf("secret %s could not be read (the node's log says why)", name))
	case !ok:
		return nil, fail(op, ErrNotFound, fmt.Errorf("secret %s is not set for app %s: set it with `nimbus secret set %s %s`", name, call.App, call.App, name))
	}
	return v, nil
}
