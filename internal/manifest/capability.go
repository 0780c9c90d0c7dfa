package manifest

import (
	"fmt"
	"slices"
	"strings"

	"github.com/nimbus-dev/nimbus/internal/model"
	"gopkg.in/yaml.v3"
)

// Capability kinds: what a grant in capabilities: lets a function do.
const (
	// CapLog lets the function write log lines (nimbus.log). Written "log".
	CapLog = "log"
	// CapKV lets the function use one bucket of its app. Written
	// "kv:<bucket>" (read-write) or "kv:<bucket>:read" (read-only).
	CapKV = "kv"
	// CapPublish lets the function publish events to one topic of its app.
	// Written "publish:<topic>".
	CapPublish = "publish"
)

// Access levels of a kv grant (Capability.Access).
const (
	AccessReadWrite = "read-write"
	AccessRead      = "read"
)

// KnownCapabilities is every kind of capability a function may be granted,
// in documentation order. A grant is a kind with its resource (see
// ParseCapability); the schema test keeps docs/manifest.schema.json in
// agreement.
var KnownCapabilities = []string{CapLog, CapKV, CapPublish}

// capabilityForms lists the grant syntaxes, for error messages.
const capabilityForms = "log, kv:<bucket>, kv:<bucket>:read, publish:<topic>"

// Capability is one parsed grant.
type Capability struct {
	// Kind is CapLog, CapKV or CapPublish.
	Kind string
	// Resource is the bucket (kv) or topic (publish); "" for log.
	Resource string
	// Access is AccessReadWrite or AccessRead for kv; "" otherwise.
	Access string
}

// String returns the grant as written in a manifest: "log", "kv:counts",
// "kv:counts:read", "publish:orders". ParseCapability(c.String()) == c.
func (c Capability) String() string {
	switch {
	case c.Resource == "":
		return c.Kind
	case c.Kind == CapKV && c.Access == AccessRead:
		return c.Kind + ":" + c.Resource + ":" + AccessRead
	}
	return c.Kind + ":" + c.Resource
}

// Allows reports whether c grants kind on resource with access ("" or
// AccessRead asks for reading, AccessReadWrite for writing). A read-write
// kv grant allows reads. Host functions check grants with it.
func (c Capability) Allows(kind, resource, access string) bool {
	if c.Kind != kind || c.Resource != resource {
		return false
	}
	if kind == CapKV && access == AccessReadWrite {
		return c.Access == AccessReadWrite
	}
	return true
}

// ParseCapability parses one grant as written in capabilities:. It checks
// the syntax only (known kind, resource name, access); whether the bucket or
// topic is declared is the manifest's business. Errors say what to write
// instead.
func ParseCapability(s string) (Capability, error) {
	if strings.TrimSpace(s) == "" {
		return Capability{}, fmt.Errorf("empty capability: write one of %s", capabilityForms)
	}
	parts := strings.Split(s, ":")
	kind := parts[0]
	if !slices.Contains(KnownCapabilities, kind) {
		hint := ""
		if sug := suggest(kind, KnownCapabilities); sug != "" {
			hint = fmt.Sprintf(": did you mean %q?", sug)
		}
		return Capability{}, fmt.Errorf("unknown capability %q%s (known: %s)", s, hint, capabilityForms)
	}
	c := Capability{Kind: kind}
	switch kind {
	case CapLog:
		if len(parts) > 1 {
			return Capability{}, fmt.Errorf("%q: log takes no bucket or topic: write log", s)
		}
		return c, nil
	case CapKV:
		if len(parts) == 1 || parts[1] == "" {
			return Capability{}, fmt.Errorf("%q needs a bucket: write kv:<bucket> (read-write) or kv:<bucket>:read (read-only), such as kv:counts", s)
		}
		c.Resource, c.Access = parts[1], AccessReadWrite
		switch {
		case len(parts) == 3 && parts[2] == AccessRead:
			c.Access = AccessRead
		case len(parts) == 3:
			return Capability{}, fmt.Errorf("%q: unknown access %q: write kv:%s for read-write or kv:%s:read for read-only", s, parts[2], parts[1], parts[1])
		case len(parts) > 3:
			return Capability{}, fmt.Errorf("%q has too many parts: write kv:%s or kv:%s:read", s, parts[1], parts[1])
		}
	case CapPublish:
		if len(parts) == 1 || parts[1] == "" {
			return Capability{}, fmt.Errorf("%q needs a topic: write publish:<topic>, such as publish:orders", s)
		}
		if len(parts) > 2 {
			return Capability{}, fmt.Errorf("%q: publish takes a topic and nothing after it: write publish:%s", s, parts[1])
		}
		c.Resource = parts[1]
	}
	if !model.ValidName(c.Resource) {
		what := "bucket"
		if kind == CapPublish {
			what = "topic"
		}
		return Capability{}, fmt.Errorf("%q: %q is not a valid %s name: use 1 to 63 lowercase letters, digits and '-', starting with a letter and not ending with '-'", s, c.Resource, what)
	}
	return c, nil
}

func (p *parser) capabilities(key, n *yaml.Node, path string) []string {
	if n.Kind != yaml.SequenceNode {
		if isNull(n) {
			return nil
		}
		p.errorf(valueOrKey(n, key), path, "must be a list, such as [log, kv:counts], not %s", describe(n))
		return nil
	}
	var out []string
	seen := map[string]int{}
	kvAt := map[string]int{} // bucket -> index of its first kv grant
	for i, item := range n.Content {
		item = deref(item)
		field := fmt.Sprintf("%s[%d]", path, i)
		s, ok := p.str(item, field)
		if !ok {
			continue
		}
		c, err := ParseCapability(s)
		if err != nil {
			p.errorf(item, field, "%s", err.Error())
			continue
		}
		if first, dup := seen[s]; dup {
			p.errorf(item, field, "capability %q is listed twice (first at %s[%d])", s, path, first)
			continue
		}
		seen[s] = i
		switch c.Kind {
		case CapKV:
			if !p.declared(item, field, "bucket", c.Resource, p.bucketNames, fmt.Sprintf("capability %q names", s)) {
				continue
			}
			if first, ok := kvAt[c.Resource]; ok {
				p.errorf(item, field, "capability %q overlaps %s[%d]: kv:%s grants read-write and kv:%s:read read-only; keep one", s, path, first, c.Resource, c.Resource)
				continue
			}
			kvAt[c.Resource] = i
		case CapPublish:
			if c.Resource == model.DeadLetterTopic {
				p.errorf(item, field, "capability %q is not allowed: only Nimbus writes to %s (a delivery lands there after its trigger's max_attempts); to give up on an event, fail it", s, model.DeadLetterTopic)
				continue
			}
			if !p.declared(item, field, "topic", c.Resource, p.topicNames, fmt.Sprintf("capability %q names", s)) {
				continue
			}
		}
		out = append(out, s)
	}
	return out
}

// declared reports whether name is among the declared names of what
// ("topic" or "bucket"), and reports an error that lists them if not.
// prefix starts the message, such as `capability "kv:x" names`.
func (p *parser) declared(n *yaml.Node, field, what, name string, names []string, prefix string) bool {
	if slices.Contains(names, name) {
		return true
	}
	hint := ""
	if sug := suggestName(name, names); sug != "" {
		hint = fmt.Sprintf(": did you mean %q?", sug)
	}
	list := "none are declared"
	if len(names) > 0 {
		list = "declared: " + strings.Join(names, ", ")
	}
	if what == "topic" && slices.Contains(names, model.DeadLetterTopic) && !slices.Contains(p.topicNames, model.DeadLetterTopic) {
		list = "none are declared; dead-letter is implicit"
		if len(p.topicNames) > 0 {
			list = "declared: " + strings.Join(p.topicNames, ", ") + "; dead-letter is implicit"
		}
	}
	subject := fmt.Sprintf("%s %q is not declared", what, name)
	if prefix != "" {
		subject = fmt.Sprintf("%s %s %q, which is not declared", prefix, what, name)
	}
	if hint != "" {
		p.errorf(n, field, "%s%s (%s)", subject, hint, list)
		return false
	}
	p.errorf(n, field, "%s (%s); declare it at the top level: %ss: {%s: {}}", subject, list, what, name)
	return false
}

// suggestName is suggest for names the user chose (topics, buckets), which
// are compared as written.
func suggestName(s string, names []string) string {
	best, bestD := "", 1<<30
	for _, c := range names {
		if d := editDistance(s, c); d < bestD {
			best, bestD = c, d
		}
	}
	limit := 1
	if len(s) >= 5 {
		limit = 2
	}
	if bestD <= limit && bestD*3 <= len(s)+1 {
		return best
	}
	return ""
}
