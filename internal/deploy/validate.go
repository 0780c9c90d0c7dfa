package deploy

import (
	"errors"
	"strings"

	"github.com/nimbus-dev/nimbus/internal/manifest"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/server"
)

// Validate loads the manifest at path (a directory or a nimbus.yaml) and
// checks it as a node would check its deploy (Check). It is `nimbus
// validate`, and the first step of Run. Problems are manifest.Errors.
func Validate(path string) (*manifest.Manifest, error) {
	m, err := manifest.Load(path)
	if err != nil {
		return nil, err
	}
	if err := Check(m); err != nil {
		return nil, err
	}
	return m, nil
}

// placeholderModule stands for a module not built yet: a valid digest, so
// that every other rule is checked.
var placeholderModule = strings.Repeat("0", 64)

// Check runs server.Check, the checks of a deploy that need no node, on
// the spec m resolves to, with placeholder module digests (modules are
// built later). A manifest that parsed may still break a rule only the
// model knows (a route or environment over its size limit, a route over
// the gateway's own); such a refusal is a manifest.Errors entry at the
// function it is about, with the message the API would give.
func Check(m *manifest.Manifest) error {
	modules := make(map[string]string, len(m.Functions))
	for _, f := range m.Functions {
		modules[f.Name] = placeholderModule
	}
	spec := m.Spec(modules)
	// One function at a time first, so an error points at its function.
	var errs manifest.Errors
	for i, f := range m.Functions {
		one := spec
		one.Functions = spec.Functions[i : i+1]
		if _, err := server.Check(m.App, one); err != nil {
			errs = append(errs, &manifest.FieldError{Pos: f.Pos, Field: "functions." + f.Name, Msg: message(err)})
		}
	}
	if len(errs) > 0 {
		return errs
	}
	if _, err := server.Check(m.App, spec); err != nil {
		pos := manifest.Position{File: m.File}
		if len(m.Functions) > 0 {
			pos = manifest.Position{File: m.Functions[0].Pos.File}
		}
		return manifest.Errors{{Pos: pos, Msg: message(err)}}
	}
	return nil
}

// message is err's message without the "invalid request: " of
// model.ErrInvalid, which says nothing in a list of manifest problems.
func message(err error) string {
	msg := err.Error()
	if errors.Is(err, model.ErrInvalid) {
		msg = strings.TrimPrefix(msg, model.ErrInvalid.Error()+": ")
	}
	return msg
}
