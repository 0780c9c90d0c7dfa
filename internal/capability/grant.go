package capability

import (
	"fmt"
	"strings"

	"github.com/nimbus-dev/nimbus/internal/model"
)

// Kinds of capability: what a grant in a function's capabilities: lets it
// do.
const (
	// KindLog lets the function write log lines. Written "log".
	KindLog = "log"
	// KindKV lets the function use one bucket of its app. Written
	// "kv:<bucket>" (read-write) or "kv:<bucket>:read" (read-only).
	KindKV = "kv"
	// KindPublish lets the function publish events to one topic of its
	// app. Written "publish:<topic>".
	KindPublish = "publish"
	// KindHTTP lets the function make outbound HTTP requests to the hosts
	// a grant names. Written "http:[METHODS ][SCHEME://]HOST[:PORT]", such
	// as "http:api.stripe.com", "http:*.example.com:443" or
	// "http:POST https://api.stripe.com" (see ParseHTTP).
	KindHTTP = "http"
	// KindSecret lets the function read one secret of its app. Written
	// "secret:<NAME>", such as "secret:STRIPE_KEY".
	KindSecret = "secret"
	// KindSubscribe lets a workflow wait for events of one topic of its
	// app (WaitForTopic). Written "subscribe:<topic>".
	KindSubscribe = "subscribe"
)

// Access levels of a kv grant (Grant.Access).
const (
	AccessReadWrite = "read-write"
	AccessRead      = "read"
)

// Kinds returns every kind of capability a function may be granted, in
// documentation order. A grant is a kind with its resource (see Parse).
func Kinds() []string {
	return []string{KindLog, KindKV, KindPublish, KindSubscribe, KindHTTP, KindSecret}
}

// forms lists the grant syntaxes, for error messages.
const forms = "log, kv:<bucket>, kv:<bucket>:read, publish:<topic>, subscribe:<topic>, http:<host>, secret:<NAME>"

// Grant is one parsed grant, or (in a DeniedError) the grant a call needs.
type Grant struct {
	// Kind is KindLog, KindKV, KindPublish, KindHTTP or KindSecret.
	Kind string
	// Resource is the bucket (kv), topic (publish), host pattern (http:
	// "api.example.com", "*.example.com", "*", "10.0.0.5", "[fd00::1]")
	// or secret name; "" for log.
	Resource string
	// Access is AccessReadWrite or AccessRead for kv; "" otherwise.
	Access string
	// Scheme is "http" or "https" for an http grant that names one; ""
	// allows both.
	Scheme string
	// Port is an http grant's port; 0 is the scheme's default (80 for
	// http, 443 for https).
	Port int
	// Methods are an http grant's methods, comma-separated, upper case
	// ("GET,POST"); "" allows every method.
	Methods string
}

// String returns the grant as written in a manifest: "log", "kv:counts",
// "kv:counts:read", "publish:orders". Parse(g.String()) == g.
func (g Grant) String() string {
	if g.Kind == KindHTTP {
		return g.httpString()
	}
	switch {
	case g.Resource == "":
		return g.Kind
	case g.Kind == KindKV && g.Access == AccessRead:
		return g.Kind + ":" + g.Resource + ":" + AccessRead
	}
	return g.Kind + ":" + g.Resource
}

// Allows reports whether g permits what need asks for: the same kind and
// resource, and for a kv write (need.Access AccessReadWrite) a read-write
// grant. A read-write kv grant allows reads.
func (g Grant) Allows(need Grant) bool {
	if g.Kind == KindHTTP && need.Kind == KindHTTP {
		return g.allowsHTTP(need)
	}
	if g.Kind != need.Kind || g.Resource != need.Resource {
		return false
	}
	return need.Access != AccessReadWrite || g.Access == AccessReadWrite
}

// UnknownKindError is a grant of a kind this build does not know.
type UnknownKindError struct {
	// Grant is the grant as written.
	Grant string
	// Kind is its kind (the part before the first ':').
	Kind string
	// Suggestion, when set, is the known kind the writer probably meant;
	// the manifest, which owns typo suggestions, fills it in.
	Suggestion string
}

func (e *UnknownKindError) Error() string {
	hint := ""
	if e.Suggestion != "" {
		hint = fmt.Sprintf(": did you mean %q?", e.Suggestion)
	}
	return fmt.Sprintf("unknown capability %q%s (known: %s)", e.Grant, hint, forms)
}

// Parse parses one grant as written in a function's capabilities: list. It
// checks the syntax only (known kind, resource name, access); whether the
// bucket or topic is declared is the manifest's business. An unknown kind
// is an *UnknownKindError; every error says what to write instead.
func Parse(s string) (Grant, error) {
	if strings.TrimSpace(s) == "" {
		return Grant{}, fmt.Errorf("empty capability: write one of %s", forms)
	}
	if s == KindHTTP {
		return parseHTTP(s, "")
	}
	if rest, ok := strings.CutPrefix(s, KindHTTP+":"); ok {
		return parseHTTP(s, rest)
	}
	parts := strings.Split(s, ":")
	g := Grant{Kind: parts[0]}
	switch g.Kind {
	case KindLog:
		if len(parts) > 1 {
			return Grant{}, fmt.Errorf("%q: log takes no bucket or topic: write log", s)
		}
		return g, nil
	case KindKV:
		if len(parts) == 1 || parts[1] == "" {
			return Grant{}, fmt.Errorf("%q needs a bucket: write kv:<bucket> (read-write) or kv:<bucket>:read (read-only), such as kv:counts", s)
		}
		g.Resource, g.Access = parts[1], AccessReadWrite
		switch {
		case len(parts) == 3 && parts[2] == AccessRead:
			g.Access = AccessRead
		case len(parts) == 3:
			return Grant{}, fmt.Errorf("%q: unknown access %q: write kv:%s for read-write or kv:%s:read for read-only", s, parts[2], parts[1], parts[1])
		case len(parts) > 3:
			return Grant{}, fmt.Errorf("%q has too many parts: write kv:%s or kv:%s:read", s, parts[1], parts[1])
		}
	case KindPublish:
		if len(parts) == 1 || parts[1] == "" {
			return Grant{}, fmt.Errorf("%q needs a topic: write publish:<topic>, such as publish:orders", s)
		}
		if len(parts) > 2 {
			return Grant{}, fmt.Errorf("%q: publish takes a topic and nothing after it: write publish:%s", s, parts[1])
		}
		g.Resource = parts[1]
	case KindSubscribe:
		if len(parts) == 1 || parts[1] == "" {
			return Grant{}, fmt.Errorf("%q needs a topic: write subscribe:<topic>, such as subscribe:payments", s)
		}
		if len(parts) > 2 {
			return Grant{}, fmt.Errorf("%q: subscribe takes a topic and nothing after it: write subscribe:%s", s, parts[1])
		}
		g.Resource = parts[1]
	case KindSecret:
		if len(parts) == 1 || parts[1] == "" {
			return Grant{}, fmt.Errorf("%q needs a name: write secret:<NAME>, such as secret:STRIPE_KEY", s)
		}
		if len(parts) > 2 {
			return Grant{}, fmt.Errorf("%q: secret takes a name and nothing after it: write secret:%s", s, parts[1])
		}
		if !model.ValidSecretName(parts[1]) {
			return Grant{}, fmt.Errorf("%q: %q is not a valid secret name: %s", s, parts[1], model.SecretNameRule)
		}
		g.Resource = parts[1]
		return g, nil
	default:
		return Grant{}, &UnknownKindError{Grant: s, Kind: g.Kind}
	}
	if !model.ValidName(g.Resource) {
		what := "bucket"
		if g.Kind == KindPublish || g.Kind == KindSubscribe {
			what = "topic"
		}
		return Grant{}, fmt.Errorf("%q: %q is not a valid %s name: use 1 to 63 lowercase letters, digits and '-', starting with a letter and not ending with '-'", s, g.Resource, what)
	}
	return g, nil
}

// Grants is the set of capabilities granted to a function. The zero value
// grants nothing.
type Grants struct {
	list []Grant
}

// NewGrants parses a function's capabilities list. An entry that does not
// parse grants nothing: the manifest refuses such entries, so only a
// hand-made spec has them, and a bare "kv" must not open every bucket.
func NewGrants(capabilities []string) Grants {
	var g Grants
	for _, s := range capabilities {
		if p, err := Parse(s); err == nil {
			g.list = append(g.list, p)
		}
	}
	return g
}

// Allows reports whether any grant in g allows need (see Grant.Allows).
func (g Grants) Allows(need Grant) bool {
	for _, have := range g.list {
		if have.Allows(need) {
			return true
		}
	}
	return false
}

// The grants the services check for. A kv read needs "kv:B:read" (which
// "kv:B" also allows), a write "kv:B".
func logGrant() Grant                 { return Grant{Kind: KindLog} }
func publishGrant(topic string) Grant { return Grant{Kind: KindPublish, Resource: topic} }
func subscribeGrant(topic string) Grant {
	return Grant{Kind: KindSubscribe, Resource: topic}
}
func secretGrant(name string) Grant { return Grant{Kind: KindSecret, Resource: name} }
func kvGrant(bucket string, write bool) Grant {
	if write {
		return Grant{Kind: KindKV, Resource: bucket, Access: AccessReadWrite}
	}
	return Grant{Kind: KindKV, Resource: bucket, Access: AccessRead}
}
