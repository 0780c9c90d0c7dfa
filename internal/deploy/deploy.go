// Package deploy is the deploy pipeline as a user sees it: validate the
// manifest, build the modules, upload the ones the server lacks, activate
// the revision. Each step reports progress. The CLI runs it against the API;
// `nimbus up` runs it in process against the server it just started.
package deploy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	"github.com/nimbus-dev/nimbus/internal/guestbuild"
	"github.com/nimbus-dev/nimbus/internal/model"
)

// Target is where a deploy goes.
type Target interface {
	HasArtifact(ctx context.Context, sha string) (bool, error)
	PutArtifact(ctx context.Context, sha string, data []byte) error
	Deploy(ctx context.Context, app string, spec model.Spec) (*model.Revision, bool, error)
}

// Event is one step of progress.
type Event struct {
	Step     string `json:"step"` // validate, build, upload, activate
	Function string `json:"function,omitempty"`
	Message  string `json:"message"`
}

// Result is what a deploy did.
type Result struct {
	App      string          `json:"app"`
	Revision *model.Revision `json:"revision"`
	Changed  bool            `json:"changed"`
	Uploaded int             `json:"uploaded"`
}

// Run deploys the app at path (a directory or a nimbus.yaml).
func Run(ctx context.Context, t Target, path string, progress func(Event)) (*Result, error) {
	if progress == nil {
		progress = func(Event) {}
	}
	m, err := Validate(path)
	if err != nil {
		return nil, err
	}
	progress(Event{Step: "validate", Message: fmt.Sprintf("%s: app %s, %d function(s)", m.File, m.App, len(m.Functions))})
	modules, err := guestbuild.Build(ctx, m, func(e guestbuild.Event) {
		if e.Err != nil {
			return
		}
		progress(Event{Step: e.Step, Function: e.Function, Message: e.Message})
	})
	if err != nil {
		return nil, err
	}
	res := &Result{App: m.App}
	shas := make(map[string]string, len(m.Functions))
	for _, f := range m.Functions {
		data := modules[f.Name]
		sum := sha256.Sum256(data)
		sha := hex.EncodeToString(sum[:])
		has, err := t.HasArtifact(ctx, sha)
		if err != nil {
			return nil, fmt.Errorf("upload %s: %w", f.Name, err)
		}
		if has {
			progress(Event{Step: "upload", Function: f.Name, Message: fmt.Sprintf("module %s already on the server", sha[:12])})
		} else {
			progress(Event{Step: "upload", Function: f.Name, Message: fmt.Sprintf("uploading module %s (%s)", sha[:12], humanBytes(len(data)))})
			if err := t.PutArtifact(ctx, sha, data); err != nil {
				return nil, fmt.Errorf("upload %s: %w", f.Name, err)
			}
			res.Uploaded++
		}
		shas[f.Name] = sha
	}
	progress(Event{Step: "activate", Message: "activating revision"})
	rev, changed, err := t.Deploy(ctx, m.App, m.Spec(shas))
	if err != nil {
		return nil, fmt.Errorf("deploy %s: %w", m.App, err)
	}
	res.Revision, res.Changed = rev, changed
	return res, nil
}

func humanBytes(n int) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
