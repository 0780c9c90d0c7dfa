package manifest

import (
	"fmt"
	"net/textproto"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/nimbus-dev/nimbus/internal/model"
	"gopkg.in/yaml.v3"
)

// flowFields are the fields of a function's flow block, in documentation
// order.
var flowFields = []string{"max_concurrency", "key", "key_concurrency", "rate", "debounce", "priority"}

// Limits of flow control.
const (
	MaxFlowConcurrency               = 10000
	MaxRateLimit                     = 1000000
	MinRatePeriod      time.Duration = 10 * time.Millisecond
	MaxRatePeriod      time.Duration = 24 * time.Hour
	MinDebounce        time.Duration = 10 * time.Millisecond
	MaxDebounce        time.Duration = 24 * time.Hour
	MaxPriority                      = 9
	DefaultPriority                  = model.DefaultPriority
)

// Flow is a function's validated flow control. It applies to every
// invocation of the function: HTTP requests, events, cron firings and async
// invocations.
type Flow struct {
	// MaxConcurrency caps invocations running at once; 0: no cap beyond
	// max_instances.
	MaxConcurrency int
	// Key groups invocations for KeyConcurrency, Rate and Debounce (see
	// FlowKey); "": Rate and Debounce apply to the function as a whole.
	Key            string
	KeyConcurrency int   // 0: no cap; needs Key
	Rate           *Rate // nil: no cap
	Debounce       time.Duration
	Priority       int // 0 to 9, default 5
}

// Rate is Limit invocations per Period.
type Rate struct {
	Limit  int
	Period time.Duration
}

// String formats r as written in a manifest, such as 100/1s.
func (r Rate) String() string { return fmt.Sprintf("%d/%s", r.Limit, FormatDuration(r.Period)) }

// Registry returns the registry record of f.
func (f *Flow) Registry() *model.Flow {
	if f == nil {
		return nil
	}
	r := &model.Flow{MaxConcurrency: f.MaxConcurrency, Key: f.Key, KeyConcurrency: f.KeyConcurrency,
		DebounceMS: f.Debounce.Milliseconds(), Priority: f.Priority}
	if f.Rate != nil {
		r.Rate = &model.Rate{Limit: f.Rate.Limit, PeriodMS: f.Rate.Period.Milliseconds()}
	}
	return r
}

var rateRe = regexp.MustCompile(`^([0-9]+)/([0-9.]*[a-zµ]+[0-9a-zµ.]*)$`)

// ParseRate parses a rate limit written "N/period": 100/1s, 10/1m, 5/500ms;
// the period may be a bare unit (100/s, 10/m, 1/h).
func ParseRate(s string) (Rate, error) {
	m := rateRe.FindStringSubmatch(strings.ReplaceAll(s, " ", ""))
	if m == nil {
		return Rate{}, fmt.Errorf("%q is not a rate: write N/period, such as 100/1s, 10/1m or 100/s", s)
	}
	n, err := strconv.Atoi(m[1])
	if err != nil || n < 1 || n > MaxRateLimit {
		return Rate{}, fmt.Errorf("%q: the count %s is out of range: use 1 to %d", s, m[1], MaxRateLimit)
	}
	period := m[2]
	if period == "s" || period == "m" || period == "h" || period == "ms" {
		period = "1" + period
	}
	d, err := time.ParseDuration(period)
	if err != nil {
		return Rate{}, fmt.Errorf("%q: %q is not a period: use a duration such as 1s, 1m or 500ms", s, m[2])
	}
	if d < MinRatePeriod || d > MaxRatePeriod {
		return Rate{}, fmt.Errorf("%q: the period %s is out of range: use %s to %s", s, m[2], FormatDuration(MinRatePeriod), FormatDuration(MaxRatePeriod))
	}
	return Rate{Limit: n, Period: d}, nil
}

var (
	extensionRe  = regexp.MustCompile(`^[a-z0-9]{1,64}$`)
	headerNameRe = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")
	queryNameRe  = regexp.MustCompile(`^[^\x00-\x20\x7f&=#]{1,256}$`)
)

// notKeys are CloudEvents attributes that make no sense as a key.
var notKeys = map[string]string{
	"id":              "is different for every event, so as a key it would limit nothing",
	"specversion":     "is the same for every event, so as a key it would group them all",
	"time":            "is a timestamp, so as a key it would group nothing useful",
	"datacontenttype": "describes the data's format, not what it is about",
	"dataschema":      "describes the data's format, not what it is about",
	"data":            "is the payload; keys are taken from attributes",
}

const eventKeyForms = "event.subject, event.source, event.type or event.<extension>, where <extension> is a CloudEvents extension attribute name of lowercase letters and digits"

// EventKey checks an ordering key, a CloudEvents attribute written
// "event.subject", "event.source", "event.type" or "event.<extension>", and
// returns it.
func EventKey(s string) (string, error) {
	attr, ok := strings.CutPrefix(s, "event.")
	if !ok {
		if extensionRe.MatchString(s) {
			return "", fmt.Errorf("%q is not an event attribute: did you mean %q? Use %s", s, "event."+s, eventKeyForms)
		}
		return "", fmt.Errorf("%q is not an event attribute: use %s", s, eventKeyForms)
	}
	if why, bad := notKeys[attr]; bad {
		return "", fmt.Errorf("%q %s: use %s", s, why, eventKeyForms)
	}
	if !extensionRe.MatchString(attr) {
		return "", fmt.Errorf("%q is not an event attribute: use %s", s, eventKeyForms)
	}
	return s, nil
}

const (
	functionKeyForms = "event.subject, event.source, event.type, event.<extension> (a CloudEvents extension attribute), header.<Name> (a request header) or query.<name> (a query parameter)"
	flowKeyForms     = functionKeyForms + "; for a workflow, input.<field> (a field of the run's input)"
)

var inputKeyRe = regexp.MustCompile(`^input\.[^.\s]+(\.[^.\s]+)*$`)

// FlowKey checks a flow key and returns it in canonical form: an event
// attribute (see EventKey), an HTTP request header "header.<Name>" (the
// name canonicalized, header.x-tenant -> header.X-Tenant), a query
// parameter "query.<name>" (case-sensitive), or a field of a workflow
// run's input "input.<field>[.<field>...]" (which only a workflow may use:
// parse.go's flowForKind).
func FlowKey(s string) (string, error) {
	switch {
	case strings.HasPrefix(s, "event."):
		attr := s[len("event."):]
		if why, bad := notKeys[attr]; bad {
			return "", fmt.Errorf("%q %s: use %s", s, why, flowKeyForms)
		}
		if !extensionRe.MatchString(attr) {
			return "", fmt.Errorf("%q is not an event attribute: use %s", s, flowKeyForms)
		}
		return s, nil
	case strings.HasPrefix(s, "header."):
		name := s[len("header."):]
		if !headerNameRe.MatchString(name) {
			return "", fmt.Errorf("%q: %q is not an HTTP header name (use letters, digits and '-', such as header.X-Tenant)", s, name)
		}
		return "header." + textproto.CanonicalMIMEHeaderKey(name), nil
	case strings.HasPrefix(s, "input."):
		if !inputKeyRe.MatchString(s) || len(s) > 256 {
			return "", fmt.Errorf("%q is not a field of the input: use input.<field>, or input.<field>.<field> for a field of an object, such as input.customer or input.data.tenant", s)
		}
		return s, nil
	case strings.HasPrefix(s, "query."):
		name := s[len("query."):]
		if !queryNameRe.MatchString(name) {
			return "", fmt.Errorf("%q: %q is not a query parameter name (no spaces, '&', '=' or '#')", s, name)
		}
		return s, nil
	}
	sug := ""
	if prefix, rest, ok := strings.Cut(s, "."); ok {
		if p := suggest(prefix, []string{"event", "header", "query", "input"}); p != "" {
			sug = p + "." + rest
		}
	} else if extensionRe.MatchString(s) {
		sug = "event." + s
	}
	if sug != "" {
		return "", fmt.Errorf("%q is not a key: did you mean %q? Use %s", s, sug, flowKeyForms)
	}
	return "", fmt.Errorf("%q is not a key: use %s", s, flowKeyForms)
}

func (p *parser) flow(key, n *yaml.Node, path string) *Flow {
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(valueOrKey(n, key), path, "must be a map with any of %s, not %s", strings.Join(flowFields, ", "), describe(n))
		return nil
	}
	f := &Flow{Priority: DefaultPriority}
	fields := p.mapping(n, path, flowFields)
	if kv, ok := fields.get("max_concurrency"); ok {
		if v, ok := p.integer(kv.value, path+".max_concurrency", 1, MaxFlowConcurrency); ok {
			f.MaxConcurrency = v
		}
	}
	keyOK := false
	if kv, ok := fields.get("key"); ok {
		if s, ok := p.str(kv.value, path+".key"); ok {
			if k, err := FlowKey(s); err != nil {
				p.errorf(kv.value, path+".key", "%s", err.Error())
			} else {
				f.Key, keyOK = k, true
			}
		}
	}
	if kv, ok := fields.get("key_concurrency"); ok {
		if v, ok := p.integer(kv.value, path+".key_concurrency", 1, MaxFlowConcurrency); ok {
			_, hasKey := fields.get("key")
			switch {
			case !hasKey && !fields.suggested["key"]:
				p.errorf(kv.key, path+".key_concurrency", "needs key: say what to count per, such as key: event.subject or key: header.X-Tenant (for one limit on the whole function, use max_concurrency)")
			case !keyOK:
				// the key's own error is reported
			case f.MaxConcurrency > 0 && v > f.MaxConcurrency:
				p.errorf(kv.value, path+".key_concurrency", "%d is above max_concurrency %d, so no key could reach it: lower it or raise max_concurrency", v, f.MaxConcurrency)
			default:
				f.KeyConcurrency = v
			}
		}
	}
	if kv, ok := fields.get("rate"); ok {
		if kv.value.Kind != yaml.ScalarNode || kv.value.Tag != "!!str" {
			p.errorf(kv.value, path+".rate", "must be a rate written N/period, such as 100/1s or 10/1m, not %s", describe(kv.value))
		} else if r, err := ParseRate(kv.value.Value); err != nil {
			p.errorf(kv.value, path+".rate", "%s", err.Error())
		} else {
			f.Rate = &r
		}
	}
	if kv, ok := fields.get("debounce"); ok {
		if d, ok := p.durationIn(kv.value, path+".debounce", MinDebounce, MaxDebounce, "2s"); ok {
			f.Debounce = d
		}
	}
	if kv, ok := fields.get("priority"); ok {
		if v, ok := p.integer(kv.value, path+".priority", 0, MaxPriority); ok {
			f.Priority = v
		}
	}
	if *f == (Flow{Priority: DefaultPriority}) {
		return nil // the same as no flow block, and the same revision
	}
	return f
}
