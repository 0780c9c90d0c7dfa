package manifest

import (
	"fmt"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/nimbus-dev/nimbus/internal/model"
)

// processFields are the function fields that only a process function
// takes.
var processFields = []string{"command", "contract", "readiness", "isolation"}

// process reads the fields of a process function (command, contract,
// readiness, isolation) into f.Process, and refuses them on any other
// runtime.
func (p *parser) process(fields fieldSet, key *yaml.Node, path string, f *Function) {
	if f.Runtime != RuntimeProcess {
		for _, name := range processFields {
			if kv, ok := fields.get(name); ok {
				p.errorf(kv.key, path+"."+name, "is only for runtime: process (this function's runtime is %s)", f.Runtime)
			}
		}
		return
	}
	pr := &model.Process{Contract: model.ContractHTTP, Isolation: model.IsolationSandbox}
	f.Process = pr
	if kv, ok := fields.get("command"); ok {
		pr.Command = p.command(kv.key, kv.value, path+".command")
	} else {
		p.missing(fields, key, path, "command", "required field is missing for runtime process: the program to start and its arguments, such as command: [python3, app.py]")
	}
	if kv, ok := fields.get("contract"); ok {
		if s, ok := p.str(kv.value, path+".contract"); ok {
			switch s {
			case model.ContractHTTP, model.ContractLambda:
			default:
				p.errorf(kv.value, path+".contract", "unknown contract %q: use %q (serve HTTP on $PORT) or %q (the AWS Lambda Runtime API)", s, model.ContractHTTP, model.ContractLambda)
			}
			pr.Contract = s
		}
	}
	if kv, ok := fields.get("readiness"); ok {
		if s, ok := p.str(kv.value, path+".readiness"); ok {
			if !strings.HasPrefix(s, "/") || strings.ContainsFunc(s, func(c rune) bool { return c <= ' ' || c == 0x7f }) {
				p.errorf(kv.value, path+".readiness", "%q is not a path: give the path Nimbus polls until it answers, such as /healthz", s)
			} else if pr.Contract == model.ContractLambda {
				p.errorf(kv.value, path+".readiness", "is for contract http: a Lambda runtime is ready when it asks for its first invocation; remove it")
			}
			pr.ReadinessPath = s
		}
	}
	if kv, ok := fields.get("isolation"); ok {
		if s, ok := p.str(kv.value, path+".isolation"); ok {
			if s != model.IsolationSandbox && s != model.IsolationNone {
				p.errorf(kv.value, path+".isolation", "unknown isolation %q: use %q (the default) or %q to run the process unisolated on a host that cannot sandbox it", s, model.IsolationSandbox, model.IsolationNone)
			}
			pr.Isolation = s
		}
	}
}

// command reads a command: a non-empty list of strings.
func (p *parser) command(key, n *yaml.Node, field string) []string {
	if n.Kind != yaml.SequenceNode {
		hint := ""
		if n.Kind == yaml.ScalarNode && n.Tag == "!!str" {
			hint = fmt.Sprintf(": write it as a list, such as [%s]", strings.Join(strings.Fields(n.Value), ", "))
		}
		p.errorf(valueOrKey(n, key), field, "must be a list of strings (the program and its arguments), not %s%s", describe(n), hint)
		return nil
	}
	if len(n.Content) == 0 {
		p.errorf(n, field, "must not be empty: give the program to start and its arguments")
		return nil
	}
	var out []string
	for i, c := range n.Content {
		c = deref(c)
		if c.Kind != yaml.ScalarNode || c.Tag == "!!null" || c.Kind == yaml.ScalarNode && c.Tag != "!!str" && c.Tag != "!!int" && c.Tag != "!!float" {
			p.errorf(c, fmt.Sprintf("%s[%d]", field, i), "must be a string, not %s", describe(c))
			continue
		}
		if i == 0 && strings.TrimSpace(c.Value) == "" {
			p.errorf(c, field+"[0]", "the program must not be empty")
		}
		out = append(out, c.Value)
	}
	return out
}
