package manifest

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/nimbus-dev/nimbus/internal/capability"
	"github.com/nimbus-dev/nimbus/internal/model"
)

// capabilities reads a function's capabilities: list. Each grant is parsed
// by capability.Parse, the one grammar host functions check with (the
// manifest adds its typo suggestion to an unknown kind); the manifest adds
// what needs the whole file: duplicates, overlapping kv grants, the
// dead-letter topic, and undeclared buckets and topics.
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
		c, err := capability.Parse(s)
		if err != nil {
			var unknown *capability.UnknownKindError
			if errors.As(err, &unknown) {
				unknown.Suggestion = suggest(unknown.Kind, capability.Kinds())
			}
			p.errorf(item, field, "%s", err.Error())
			continue
		}
		if first, dup := seen[s]; dup {
			p.errorf(item, field, "capability %q is listed twice (first at %s[%d])", s, path, first)
			continue
		}
		seen[s] = i
		switch c.Kind {
		case capability.KindKV:
			if !p.declared(item, field, "bucket", c.Resource, p.bucketNames, fmt.Sprintf("capability %q names", s)) {
				continue
			}
			if first, ok := kvAt[c.Resource]; ok {
				p.errorf(item, field, "capability %q overlaps %s[%d]: kv:%s grants read-write and kv:%s:read read-only; keep one", s, path, first, c.Resource, c.Resource)
				continue
			}
			kvAt[c.Resource] = i
		case capability.KindPublish:
			if c.Resource == model.DeadLetterTopic {
				p.errorf(item, field, "capability %q is not allowed: only Nimbus writes to %s (a delivery lands there after its trigger's max_attempts); to give up on an event, fail it", s, model.DeadLetterTopic)
				continue
			}
			if !p.declared(item, field, "topic", c.Resource, p.topicNames, fmt.Sprintf("capability %q names", s)) {
				continue
			}
		case capability.KindSubscribe:
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
