package capability_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/capability"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		in   string
		want capability.Grant
		err  string
	}{
		{"log", capability.Grant{Kind: capability.KindLog}, ""},
		{"kv:counts", capability.Grant{Kind: capability.KindKV, Resource: "counts", Access: capability.AccessReadWrite}, ""},
		{"kv:counts:read", capability.Grant{Kind: capability.KindKV, Resource: "counts", Access: capability.AccessRead}, ""},
		{"kv:a-1", capability.Grant{Kind: capability.KindKV, Resource: "a-1", Access: capability.AccessReadWrite}, ""},
		{"publish:orders", capability.Grant{Kind: capability.KindPublish, Resource: "orders"}, ""},
		// The grammar accepts the dead-letter topic; the manifest refuses
		// the grant and the publish service refuses the topic.
		{"publish:dead-letter", capability.Grant{Kind: capability.KindPublish, Resource: "dead-letter"}, ""},
		{"kv:counts:write", capability.Grant{}, `unknown access "write"`},
		{"kv:counts:read:read", capability.Grant{}, "too many parts"},
		{"kv", capability.Grant{}, "needs a bucket"},
		{"kv:", capability.Grant{}, "needs a bucket"},
		{"publish", capability.Grant{}, "needs a topic"},
		{"publish:", capability.Grant{}, "needs a topic"},
		{"publish:orders:read", capability.Grant{}, "nothing after it"},
		{"log:x", capability.Grant{}, "log takes no bucket"},
		{"lgo", capability.Grant{}, `unknown capability "lgo" (known: log, kv:<bucket>, kv:<bucket>:read, publish:<topic>, subscribe:<topic>, http:<host>, secret:<NAME>)`},
		{"kv:Counts", capability.Grant{}, "not a valid bucket name"},
		{"kv:a_b", capability.Grant{}, "not a valid bucket name"},
		{"kv:a-", capability.Grant{}, "not a valid bucket name"},
		{"publish:Orders", capability.Grant{}, "not a valid topic name"},
		{"publish:" + strings.Repeat("a", 64), capability.Grant{}, "not a valid topic name"},
		{"http:api.stripe.com", capability.Grant{Kind: capability.KindHTTP, Resource: "api.stripe.com"}, ""},
		{"http:*.example.com:443", capability.Grant{Kind: capability.KindHTTP, Resource: "*.example.com", Port: 443}, ""},
		{"http:https://api.example.com", capability.Grant{Kind: capability.KindHTTP, Resource: "api.example.com", Scheme: "https"}, ""},
		{"http:POST,PUT https://h.example.com:8443", capability.Grant{Kind: capability.KindHTTP, Resource: "h.example.com", Scheme: "https", Port: 8443, Methods: "POST,PUT"}, ""},
		{"http:10.0.0.5:8080", capability.Grant{Kind: capability.KindHTTP, Resource: "10.0.0.5", Port: 8080}, ""},
		{"http:[fd00::1]:80", capability.Grant{Kind: capability.KindHTTP, Resource: "[fd00::1]", Port: 80}, ""},
		{"http:*", capability.Grant{Kind: capability.KindHTTP, Resource: "*"}, ""},
		{"http", capability.Grant{}, "needs a host"},
		{"http:", capability.Grant{}, "needs a host"},
		{"http:API.stripe.com", capability.Grant{}, "write the host as api.stripe.com"},
		{"http:api.stripe.com/v1", capability.Grant{}, "not a path"},
		{"http:ftp://x.com", capability.Grant{}, `scheme "ftp"`},
		{"http:get x.com", capability.Grant{}, "not a method"},
		{"http:GET,GET x.com", capability.Grant{}, "twice"},
		{"http:x.com:0", capability.Grant{}, "not a number from 1 to 65535"},
		{"http:x.com:080", capability.Grant{}, "not a number from 1 to 65535"},
		{"http:*.com", capability.Grant{}, "at least two labels"},
		{"http:2130706433", capability.Grant{}, "other spellings of addresses are refused"},
		{"http:0x7f.0.0.1", capability.Grant{}, "other spellings"},
		{"http:127.1", capability.Grant{}, "other spellings"},
		{"http:fd00::1", capability.Grant{}, "in brackets"},
		{"secret:STRIPE_KEY", capability.Grant{Kind: capability.KindSecret, Resource: "STRIPE_KEY"}, ""},
		{"secret:_x1", capability.Grant{Kind: capability.KindSecret, Resource: "_x1"}, ""},
		{"secret", capability.Grant{}, "needs a name"},
		{"secret:1A", capability.Grant{}, "not a valid secret name"},
		{"secret:A-B", capability.Grant{}, "not a valid secret name"},
		{"secret:A:B", capability.Grant{}, "nothing after it"},
		{"", capability.Grant{}, "empty capability"},
		{" ", capability.Grant{}, "empty capability"},
	} {
		got, err := capability.Parse(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("Parse(%q) error = %v, want it to contain %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
		if got.String() != c.in {
			t.Errorf("%+v.String() = %q, want %q", got, got.String(), c.in)
		}
	}
}

func TestUnknownKindSuggestion(t *testing.T) {
	_, err := capability.Parse("lgo")
	var unknown *capability.UnknownKindError
	if !errors.As(err, &unknown) || unknown.Kind != "lgo" {
		t.Fatalf("Parse(lgo) = %v, want an *UnknownKindError", err)
	}
	unknown.Suggestion = "log"
	if want := `unknown capability "lgo": did you mean "log"? (known: log, kv:<bucket>, kv:<bucket>:read, publish:<topic>, subscribe:<topic>, http:<host>, secret:<NAME>)`; err.Error() != want {
		t.Fatalf("message %q, want %q", err, want)
	}
}

func TestGrantsAllows(t *testing.T) {
	kvRead := capability.Grant{Kind: capability.KindKV, Resource: "counts", Access: capability.AccessRead}
	kvWrite := capability.Grant{Kind: capability.KindKV, Resource: "counts", Access: capability.AccessReadWrite}
	pub := capability.Grant{Kind: capability.KindPublish, Resource: "orders"}
	log := capability.Grant{Kind: capability.KindLog}
	for _, c := range []struct {
		grants []string
		need   capability.Grant
		want   bool
	}{
		{[]string{"kv:counts"}, kvRead, true},
		{[]string{"kv:counts"}, kvWrite, true},
		{[]string{"kv:counts:read"}, kvRead, true},
		{[]string{"kv:counts:read"}, kvWrite, false},
		{[]string{"kv:other"}, kvRead, false},
		{[]string{"kv"}, kvRead, false}, // does not parse: grants nothing
		{[]string{"kv:counts:read", "kv:counts"}, kvWrite, true},
		{[]string{"publish:orders"}, pub, true},
		{[]string{"publish:payments"}, pub, false},
		{[]string{"kv:orders"}, pub, false},
		{[]string{"log"}, log, true},
		{[]string{"log:x"}, log, false},
		{nil, log, false},
	} {
		if got := capability.NewGrants(c.grants).Allows(c.need); got != c.want {
			t.Errorf("%q allows %s: %v, want %v", c.grants, c.need, got, c.want)
		}
	}
	if (capability.Grants{}).Allows(log) {
		t.Error("the zero Grants allows log")
	}
}

func ExampleParse() {
	g, err := capability.Parse("kv:counts:read")
	fmt.Println(g.Kind, g.Resource, g.Access, err)
	_, err = capability.Parse("kv:counts:write")
	fmt.Println(err)
	// Output:
	// kv counts read <nil>
	// "kv:counts:write": unknown access "write": write kv:counts for read-write or kv:counts:read for read-only
}

func TestHTTPGrantAllows(t *testing.T) {
	for _, c := range []struct {
		grant string
		allow []string // method scheme://host[:port]
		deny  []string
	}{
		{"http:api.stripe.com", []string{"GET https://api.stripe.com", "POST http://api.stripe.com"},
			[]string{"GET https://api.stripe.com:8443", "GET https://x.api.stripe.com", "GET https://api.stripe.co"}},
		{"http:https://api.stripe.com", []string{"GET https://api.stripe.com"}, []string{"GET http://api.stripe.com", "GET http://api.stripe.com:443"}},
		{"http:*.example.com:8443", []string{"GET https://a.example.com:8443", "GET http://a.b.example.com:8443"},
			[]string{"GET https://example.com:8443", "GET https://badexample.com:8443", "GET https://a.example.com"}},
		{"http:POST,PUT hooks.example.com", []string{"POST https://hooks.example.com", "PUT http://hooks.example.com"},
			[]string{"GET https://hooks.example.com", "DELETE https://hooks.example.com"}},
		{"http:*", []string{"GET https://anything.example", "GET http://[2001:4860::1]"}, nil},
		{"http:*.example.com", nil, []string{"GET http://[::1]"}},
	} {
		g := capability.NewGrants([]string{c.grant})
		for want, list := range map[bool][]string{true: c.allow, false: c.deny} {
			for _, req := range list {
				if got := g.Allows(capability.HTTPNeed(t, req)); got != want {
					t.Errorf("%s allows %s = %v, want %v", c.grant, req, got, want)
				}
			}
		}
	}
}
