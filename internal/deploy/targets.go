package deploy

import (
	"context"
	"fmt"

	"github.com/nimbus-dev/nimbus/internal/client"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/server"
)

// API deploys through the control plane API.
type API struct{ C *client.Client }

var _ Target = API{}

func (a API) HasArtifact(ctx context.Context, sha string) (bool, error) {
	return a.C.HasArtifact(ctx, sha)
}

func (a API) PutArtifact(ctx context.Context, sha string, data []byte) error {
	return a.C.PutArtifact(ctx, sha, data)
}

func (a API) Deploy(ctx context.Context, app string, spec model.Spec) (*model.Revision, bool, error) {
	r, err := a.C.Deploy(ctx, app, spec)
	if err != nil {
		return nil, false, err
	}
	return r.Revision, r.Changed, nil
}

// Local deploys into a server in the same process.
type Local struct{ S *server.Server }

var _ Target = Local{}

func (l Local) HasArtifact(ctx context.Context, sha string) (bool, error) {
	return l.S.HasArtifact(ctx, sha)
}

func (l Local) PutArtifact(ctx context.Context, sha string, data []byte) error {
	got, err := l.S.PutArtifact(ctx, data)
	if err != nil {
		return err
	}
	if got != sha {
		return fmt.Errorf("artifact stored as %s, expected %s", got, sha)
	}
	return nil
}

func (l Local) Deploy(ctx context.Context, app string, spec model.Spec) (*model.Revision, bool, error) {
	return l.S.Deploy(ctx, app, spec)
}
