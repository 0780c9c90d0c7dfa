package manifest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"gopkg.in/yaml.v3"

	"github.com/nimbus-dev/nimbus/internal/model"
)

// authFields are the fields of a route's auth, in documentation order.
var authFields = []string{"type", "issuer", "audience", "jwks_url", "jwks_file", "jwks", "algorithms", "claims"}

// auth parses a route's auth map into a canonical model.RouteAuth:
//
//	auth: {type: key}
//	auth: {type: jwt, issuer: https://auth.example.com/, audience: orders,
//	       jwks_url: https://auth.example.com/.well-known/jwks.json}
//
// jwks_file (relative to the manifest) and jwks (the set itself, as YAML or
// a JSON string) give the keys for nodes that cannot fetch them; the file
// is read now, so the deploy carries the keys.
func (p *parser) auth(n *yaml.Node, field string) (*model.RouteAuth, bool) {
	if n.Kind != yaml.MappingNode {
		p.errorf(n, field, "must be a map, such as {type: key} or {type: jwt, issuer: ..., audience: ..., jwks_url: ...}, not %s", describe(n))
		return nil, false
	}
	before := len(p.errs)
	fields := p.mapping(n, field, authFields)
	a := &model.RouteAuth{}
	for name, dst := range map[string]*string{"type": &a.Type, "issuer": &a.Issuer, "audience": &a.Audience, "jwks_url": &a.JWKSURL} {
		if kv, ok := fields.get(name); ok {
			*dst, _ = p.str(kv.value, join(field, name))
		}
	}
	if _, ok := fields.get("type"); !ok {
		p.missing(fields, n, field, "type", "required field is missing: type %s (an API key of the app's tenant) or %s (a JWT checked against a JWKS)", model.AuthKey, model.AuthJWT)
	}
	for name, dst := range map[string]*[]string{"algorithms": &a.Algorithms, "claims": &a.Claims} {
		if kv, ok := fields.get(name); ok {
			*dst = p.stringList(kv.value, join(field, name))
		}
	}
	kvFile, hasFile := fields.get("jwks_file")
	kvSet, hasSet := fields.get("jwks")
	switch {
	case hasFile && hasSet:
		p.errorf(kvSet.key, join(field, "jwks"), "give the keys once: jwks_file or jwks, not both")
	case hasFile:
		if rel, ok := p.str(kvFile.value, join(field, "jwks_file")); ok {
			if path := p.localPath(kvFile.value, join(field, "jwks_file"), rel, "JWKS file", "jwks.json"); path != "" {
				data, err := readBounded(path, rel, model.MaxJWKSBytes)
				if err != nil {
					p.errorf(kvFile.value, join(field, "jwks_file"), "%v", err)
				} else {
					a.JWKS = string(data)
				}
			}
		}
	case hasSet:
		a.JWKS = p.jwksValue(kvSet.value, join(field, "jwks"))
	}
	if len(p.errs) > before {
		return nil, false
	}
	c, err := model.CheckRouteAuth(a)
	if err != nil {
		p.errorf(n, field, "%v", err)
		return nil, false
	}
	return c, true
}

// jwksValue is the JSON of an inline key set: a YAML map, or a string of
// JSON as copied from the issuer.
func (p *parser) jwksValue(n *yaml.Node, field string) string {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!str" {
		return n.Value
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(n, field, "must be a key set ({keys: [...]}) or a string of its JSON, not %s", describe(n))
		return ""
	}
	var v any
	if err := n.Decode(&v); err != nil {
		p.errorf(n, field, "%v", err)
		return ""
	}
	data, err := json.Marshal(v)
	if err != nil {
		p.errorf(n, field, "cannot be written as JSON: %v", err)
		return ""
	}
	return string(data)
}

// stringList reads a list of strings.
func (p *parser) stringList(n *yaml.Node, field string) []string {
	if n.Kind != yaml.SequenceNode {
		p.errorf(n, field, "must be a list of strings, not %s", describe(n))
		return nil
	}
	var out []string
	for i, item := range n.Content {
		if s, ok := p.str(deref(item), fmt.Sprintf("%s[%d]", field, i)); ok {
			out = append(out, s)
		}
	}
	return out
}

// readBounded reads a file of at most limit bytes; rel names it in errors.
func readBounded(path, rel string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("cannot read the JWKS file %s (relative to the manifest): %w", rel, err)
	}
	defer f.Close()
	data := make([]byte, limit+1)
	n, _ := io.ReadFull(f, data)
	if int64(n) > limit {
		return nil, fmt.Errorf("the JWKS file %s is over the limit of %d bytes", rel, limit)
	}
	return data[:n], nil
}
