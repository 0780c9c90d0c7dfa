package gateway_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/gateway"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/security"
	"github.com/nimbus-dev/nimbus/internal/security/jwtauth"
	"github.com/nimbus-dev/nimbus/internal/security/jwtauth/jwttest"
	"github.com/nimbus-dev/nimbus/internal/store"
)

// hello answers every invocation with the same response, as a warm guest
// would.
type hello struct{ resp *runtime.Response }

func (h hello) Invoke(context.Context, string, string, *runtime.Request) (*runtime.Response, error) {
	return h.resp, nil
}

// discard is a ResponseWriter that keeps nothing but its header map.
type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) WriteHeader(int)             {}

// BenchmarkRoute is the gateway's share of a warm request: routing, the
// request, ids and trace context, the shared invocation handler, the
// response. Its allocations are what the hot path costs per request.
func BenchmarkRoute(b *testing.B) {
	g := gateway.New(hello{&runtime.Response{Status: 200, Body: []byte("hello, bench")}}, slog.New(slog.DiscardHandler))
	rev := &model.Revision{App: "hello", ID: "r", Functions: []model.Function{{
		Name: "hello", MaxRequestBytes: model.DefaultMaxBodyBytes, Routes: []model.Route{{Method: "GET", Path: "/hello/{name}"}},
	}}}
	if err := g.Provision(context.Background(), rev); err != nil {
		b.Fatal(err)
	}
	req := httptest.NewRequest("GET", "/hello/bench", nil)
	w := &discard{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		g.ServeHTTP(w, req)
	}
}

// BenchmarkRouteAuth is BenchmarkRoute on routes with auth, beside a
// public one: the share of a request that checking an API key (a cached
// token lookup once Watch runs; here, with no Watch, a KV read) or a JWT
// (signature and claims, keys cached) adds.
func BenchmarkRouteAuth(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := store.Open(ctx, store.Options{DataDir: b.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	tokens := security.NewTokens(st.Security())
	go tokens.Watch(ctx) // as a node runs it: verified keys are cached
	key, _, err := tokens.Issue(ctx, security.TokenSpec{Name: "bench", Tenant: "team-a", Scopes: []security.Scope{security.ScopeInvoke}})
	if err != nil {
		b.Fatal(err)
	}
	iss := jwttest.New("https://issuer.test/")
	iss.AddKey(b, "k1", "EdDSA")
	iss.AddKey(b, "k2", "ES256")
	iss.AddKey(b, "k3", "RS256")
	g := gateway.New(hello{&runtime.Response{Status: 200, Body: []byte("hello, bench")}}, slog.New(slog.DiscardHandler))
	g.SetAuth(tenantKeys{tokens: tokens, tenants: map[string]string{"hello": "team-a"}}, jwtauth.Options{})
	jwt := &model.RouteAuth{Type: model.AuthJWT, Issuer: iss.Name, Audience: "bench", JWKS: iss.JWKS(b), Algorithms: []string{"EdDSA", "ES256", "RS256"}}
	rev := &model.Revision{App: "hello", ID: "r", Functions: []model.Function{{
		Name: "hello", MaxRequestBytes: model.DefaultMaxBodyBytes, Routes: []model.Route{
			{Method: "GET", Path: "/public"},
			{Method: "GET", Path: "/key", Auth: &model.RouteAuth{Type: model.AuthKey}},
			{Method: "GET", Path: "/jwt", Auth: jwt},
		},
	}}}
	if err := g.Provision(ctx, rev); err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct{ name, path, cred string }{
		{"public", "/public", ""},
		{"key", "/key", key},
		{"jwt-EdDSA", "/jwt", iss.Token(b, "k1", iss.Claims("bench", "alice"))},
		{"jwt-ES256", "/jwt", iss.Token(b, "k2", iss.Claims("bench", "alice"))},
		{"jwt-RS256", "/jwt", iss.Token(b, "k3", iss.Claims("bench", "alice"))},
	} {
		b.Run(c.name, func(b *testing.B) {
			w := &discard{h: http.Header{}}
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				req := httptest.NewRequest("GET", c.path, nil)
				if c.cred != "" {
					req.Header.Set("Authorization", "Bearer "+c.cred)
				}
				rec := &statusWriter{discard: w}
				g.ServeHTTP(rec, req)
				if rec.status != 0 && rec.status != 200 {
					b.Fatalf("%s: status %d", c.path, rec.status)
				}
			}
		})
	}
}

// statusWriter is discard that remembers the status.
type statusWriter struct {
	*discard
	status int
}

func (s *statusWriter) WriteHeader(code int) { s.status = code }

// BenchmarkProvisionNewApp is the gateway's share of deploying one more
// app (Validate and Provision) beside 100 or 10,000 deployed ones: it
// should not grow with them.
func BenchmarkProvisionNewApp(b *testing.B) {
	for _, n := range []int{100, 10000} {
		b.Run(fmt.Sprint(n, "apps"), func(b *testing.B) {
			ctx := context.Background()
			g := gateway.New(hello{}, slog.New(slog.DiscardHandler))
			i := 0
			deploy := func() {
				app := fmt.Sprintf("f%07d", i)
				i++
				rev := &model.Revision{App: app, ID: "r", Functions: []model.Function{{
					Name: "fn", Routes: []model.Route{{Method: "GET", Path: "/" + app + "/{name}"}},
				}}}
				if err := g.Validate(ctx, rev); err != nil {
					b.Fatal(err)
				}
				if err := g.Provision(ctx, rev); err != nil {
					b.Fatal(err)
				}
			}
			for range n {
				deploy()
			}
			b.ResetTimer()
			for b.Loop() {
				deploy()
			}
		})
	}
}
