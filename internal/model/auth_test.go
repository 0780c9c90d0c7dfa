package model

import (
	"errors"
	"strings"
	"testing"
)

const testJWKS = `{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`

func authFn(auth *RouteAuth) Function {
	return Function{Name: "f", Runtime: "wasm", Module: strings.Repeat("a", 64), MemoryBytes: 1 << 20,
		TimeoutMS: 1000, Concurrency: 1, MaxInstances: 1, MaxRequestBytes: 1, MaxResponseBytes: 1,
		Routes: []Route{{Method: "GET", Path: "/x", Auth: auth}}}
}

// TestRouteAuthRefusals: each bad auth is refused at plan time with a
// message naming the field and the fix.
func TestRouteAuthRefusals(t *testing.T) {
	t.Parallel()
	jwt := func(f func(a *RouteAuth)) *RouteAuth {
		a := &RouteAuth{Type: AuthJWT, Issuer: "https://iss.example/", Audience: "api", JWKSURL: "https://iss.example/jwks.json"}
		f(a)
		return a
	}
	for _, c := range []struct {
		name string
		auth *RouteAuth
		want string
	}{
		{"no type", &RouteAuth{}, "auth needs a type: key"},
		{"unknown type", &RouteAuth{Type: "basic"}, `auth type "basic" is not known`},
		{"key with jwt fields", &RouteAuth{Type: AuthKey, Issuer: "x"}, "auth type key takes no other fields"},
		{"no issuer", jwt(func(a *RouteAuth) { a.Issuer = "" }), "auth type jwt needs issuer"},
		{"no audience", jwt(func(a *RouteAuth) { a.Audience = " " }), "auth type jwt needs audience"},
		{"no keys", jwt(func(a *RouteAuth) { a.JWKSURL = "" }), "needs the issuer's keys: jwks_url"},
		{"both keys", jwt(func(a *RouteAuth) { a.JWKS = testJWKS }), "both jwks_url and jwks"},
		{"http not loopback", jwt(func(a *RouteAuth) { a.JWKSURL = "http://iss.example/jwks" }), "uses http"},
		{"relative url", jwt(func(a *RouteAuth) { a.JWKSURL = "/jwks" }), "not an absolute URL"},
		{"ftp", jwt(func(a *RouteAuth) { a.JWKSURL = "ftp://iss.example/jwks" }), "scheme must be https"},
		{"creds in url", jwt(func(a *RouteAuth) { a.JWKSURL = "https://u:p@iss.example/jwks" }), "must not carry credentials"},
		{"alg none", jwt(func(a *RouteAuth) { a.Algorithms = []string{"none"} }), `algorithm "none" is refused`},
		{"alg hmac", jwt(func(a *RouteAuth) { a.Algorithms = []string{"HS256"} }), `algorithm "HS256" is refused`},
		{"alg unknown", jwt(func(a *RouteAuth) { a.Algorithms = []string{"rs256"} }), `algorithm "rs256" is not known`},
		{"bad claim", jwt(func(a *RouteAuth) { a.Claims = []string{"https://x/roles"} }), "cannot be forwarded"},
		{"sub claim", jwt(func(a *RouteAuth) { a.Claims = []string{"sub"} }), "sub is always forwarded"},
		{"jwks not json", jwt(func(a *RouteAuth) { a.JWKSURL, a.JWKS = "", "{" }), "not a JSON Web Key Set"},
		{"jwks empty", jwt(func(a *RouteAuth) { a.JWKSURL, a.JWKS = "", `{"keys":[]}` }), "has no keys"},
		{"jwks private", jwt(func(a *RouteAuth) { a.JWKSURL, a.JWKS = "", `{"keys":[{"kty":"EC","d":"x"}]}` }), "is a private key"},
		{"jwks symmetric", jwt(func(a *RouteAuth) { a.JWKSURL, a.JWKS = "", `{"keys":[{"kty":"oct","k":"x"}]}` }), "symmetric key"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Plan("app", []Function{authFn(c.auth)})
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), `route "GET /x"`) {
				t.Fatalf("err = %v; want ErrInvalid naming the route and %q", err, c.want)
			}
		})
	}
}

// TestRouteAuthCanonical: defaults are filled, lists sorted, a public
// route keeps the id it had, and auth is part of the content address.
func TestRouteAuthCanonical(t *testing.T) {
	t.Parallel()
	public, err := Plan("app", []Function{authFn(nil)})
	if err != nil {
		t.Fatal(err)
	}
	key, err := Plan("app", []Function{authFn(&RouteAuth{Type: AuthKey})})
	if err != nil || key.ID == public.ID {
		t.Fatalf("auth key did not change the revision: %v", err)
	}
	a, err := Plan("app", []Function{authFn(&RouteAuth{Type: AuthJWT, Issuer: "i", Audience: "a", JWKS: testJWKS,
		Algorithms: []string{"RS256", "EdDSA", "RS256"}, Claims: []string{"roles", "email", "roles"}})})
	if err != nil {
		t.Fatal(err)
	}
	got := a.Functions[0].Routes[0].Auth
	if strings.Join(got.Algorithms, ",") != "EdDSA,RS256" || strings.Join(got.Claims, ",") != "email,roles" {
		t.Fatalf("canonical auth = %+v", got)
	}
	b, _ := Plan("app", []Function{authFn(&RouteAuth{Type: AuthJWT, Issuer: "i", Audience: "a", JWKS: testJWKS,
		Algorithms: []string{"EdDSA", "RS256"}, Claims: []string{"email", "roles"}})})
	if b.ID != a.ID {
		t.Fatal("order of algorithms or claims changed the revision id")
	}
	d, err := Plan("app", []Function{authFn(&RouteAuth{Type: AuthJWT, Issuer: "i", Audience: "a", JWKSURL: "http://127.0.0.1:9/jwks"})})
	if err != nil || strings.Join(d.Functions[0].Routes[0].Auth.Algorithms, ",") != strings.Join(DefaultJWTAlgorithms, ",") {
		t.Fatalf("defaults: %v %+v", err, d)
	}
	// One path twice with different auth is a conflict, not two routes.
	f := authFn(&RouteAuth{Type: AuthKey})
	f.Routes = append(f.Routes, Route{Method: "GET", Path: "/x"})
	if _, err := Plan("app", []Function{f}); !errors.Is(err, ErrConflict) {
		t.Fatalf("same route with and without auth: %v, want a conflict", err)
	}
}
