package jwtauth_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/security/jwtauth"
	"github.com/nimbus-dev/nimbus/internal/security/jwtauth/jwttest"
)

// clock is a settable clock for the verifier's refresh bounds.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// TestRotationRefetchesOnUnknownKidAtABoundedRate: a token signed with a
// key the cached set lacks makes one refetch; more unknown kids within
// MinRefresh make none, however many arrive at once.
func TestRotationRefetchesOnUnknownKidAtABoundedRate(t *testing.T) {
	t.Parallel()
	iss := jwttest.New("https://issuer.test/")
	iss.AddKey(t, "k1", "EdDSA")
	url := iss.Serve(t)
	clk := &clock{now: time.Now()}
	v, err := jwtauth.New(&model.RouteAuth{Type: model.AuthJWT, Issuer: iss.Name, Audience: "api", JWKSURL: url},
		jwtauth.Options{Now: clk.Now, MinRefresh: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if c, err := v.Verify(ctx, iss.Token(t, "k1", iss.Claims("api", "alice"))); err != nil || c.Subject != "alice" {
		t.Fatalf("first token: %v %+v", err, c)
	}
	if got := iss.Requests.Load(); got != 1 {
		t.Fatalf("JWKS fetched %d times for the first token, want 1", got)
	}
	// The issuer rotates: k2 appears. The first k2 token refetches at once
	// only after MinRefresh; inside it, the kid stays unknown.
	iss.AddKey(t, "k2", "ES256")
	k2 := iss.Token(t, "k2", iss.Claims("api", "bob"))
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := v.Verify(ctx, k2); !errors.Is(err, jwtauth.ErrInvalidToken) {
				t.Errorf("k2 within MinRefresh: %v, want ErrInvalidToken", err)
			}
		}()
	}
	wg.Wait()
	if _, err := v.Verify(ctx, k2); !errors.Is(err, jwtauth.ErrInvalidToken) || !strings.Contains(err.Error(), `key id "k2" is not in the issuer's key set`) {
		t.Fatalf("k2 within MinRefresh: %v", err)
	}
	if got := iss.Requests.Load(); got != 1 {
		t.Fatalf("JWKS fetched %d times within MinRefresh, want 1", got)
	}
	clk.Add(11 * time.Second)
	if c, err := v.Verify(ctx, k2); err != nil || c.Subject != "bob" {
		t.Fatalf("k2 after MinRefresh: %v", err)
	}
	if got := iss.Requests.Load(); got != 2 {
		t.Fatalf("JWKS fetched %d times, want 2", got)
	}
	// A set older than TTL is fetched again on use.
	clk.Add(jwtauth.DefaultTTL + time.Second)
	if _, err := v.Verify(ctx, k2); err != nil {
		t.Fatal(err)
	}
	if got := iss.Requests.Load(); got != 3 {
		t.Fatalf("JWKS fetched %d times after TTL, want 3", got)
	}
}

// TestIssuerDownIsUnavailableNotInvalid: without any key set the token
// cannot be judged (503 at the gateway); a set fetched before keeps
// serving when the issuer goes away.
func TestIssuerDownIsUnavailableNotInvalid(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String() + "/jwks.json"
	ln.Close() // nothing listens there now
	iss := jwttest.New("https://issuer.test/")
	iss.AddKey(t, "k1", "EdDSA")
	v, err := jwtauth.New(&model.RouteAuth{Type: model.AuthJWT, Issuer: iss.Name, Audience: "api", JWKSURL: url}, jwtauth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(context.Background(), iss.Token(t, "k1", iss.Claims("api", "a")))
	if !errors.Is(err, jwtauth.ErrKeysUnavailable) {
		t.Fatalf("issuer down: %v, want ErrKeysUnavailable", err)
	}
	// A second token within MinRefresh does not dial again.
	_, err = v.Verify(context.Background(), iss.Token(t, "k1", iss.Claims("api", "a")))
	if !errors.Is(err, jwtauth.ErrKeysUnavailable) || v.Fetches() != 1 {
		t.Fatalf("second try: %v after %d fetches, want ErrKeysUnavailable after 1", err, v.Fetches())
	}

	up := jwttest.New(iss.Name)
	up.AddKey(t, "k1", "ES256")
	srvURL := up.Serve(t)
	clk := &clock{now: time.Now()}
	v2, _ := jwtauth.New(&model.RouteAuth{Type: model.AuthJWT, Issuer: iss.Name, Audience: "api", JWKSURL: srvURL},
		jwtauth.Options{Now: clk.Now, Client: &http.Client{}})
	if _, err := v2.Verify(context.Background(), up.Token(t, "k1", up.Claims("api", "a"))); err != nil {
		t.Fatal(err)
	}
	up.Down.Store(true)
	clk.Add(jwtauth.DefaultTTL + time.Second)
	if _, err := v2.Verify(context.Background(), up.Token(t, "k1", up.Claims("api", "a"))); err != nil {
		t.Fatalf("stale set with the issuer down: %v, want the set kept", err)
	}
	if got := up.Requests.Load(); got != 2 {
		t.Fatalf("JWKS requests = %d, want 2 (first fetch, refresh past TTL)", got)
	}
}

// TestInlineKeysNeverFetch: a route with inline keys verifies offline.
func TestInlineKeysNeverFetch(t *testing.T) {
	t.Parallel()
	iss := jwttest.New("https://issuer.test/")
	iss.AddKey(t, "k1", "RS256")
	v, err := jwtauth.New(&model.RouteAuth{Type: model.AuthJWT, Issuer: iss.Name, Audience: "api", JWKS: iss.JWKS(t),
		Algorithms: []string{"RS256"}, Claims: []string{"roles", "email"}}, jwtauth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cl := iss.Claims("api", "carol")
	cl["roles"] = []string{"admin", "ops"}
	cl["email"] = "carol@example.com"
	c, err := v.Verify(context.Background(), iss.Token(t, "k1", cl))
	if err != nil {
		t.Fatal(err)
	}
	if c.Subject != "carol" || c.Forward["roles"] != `["admin","ops"]` || c.Forward["email"] != "carol@example.com" || v.Fetches() != 0 {
		t.Fatalf("claims = %+v after %d fetches", c, v.Fetches())
	}
	if _, err := v.Verify(context.Background(), iss.Token(t, "k1", map[string]any{"iss": iss.Name, "aud": "api", "sub": "x"})); err == nil ||
		!strings.Contains(err.Error(), "no exp claim") {
		t.Fatalf("token without exp: %v", err)
	}
}

// TestKeyChoiceAndClockChecks: a token without kid passes only against a
// one-key set; a key published for another algorithm is not used; iat in
// the future is refused; 60 s of skew on exp is allowed.
func TestKeyChoiceAndClockChecks(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	one := jwttest.New("https://issuer.test/")
	one.AddKey(t, "k1", "EdDSA")
	v1, err := jwtauth.New(&model.RouteAuth{Type: model.AuthJWT, Issuer: one.Name, Audience: "api", JWKS: one.JWKS(t)}, jwtauth.Options{})
	if err != nil {
		t.Fatal(err)
	}
	two := jwttest.New(one.Name)
	two.AddKey(t, "k1", "EdDSA")
	two.AddKey(t, "k2", "EdDSA")
	v2, _ := jwtauth.New(&model.RouteAuth{Type: model.AuthJWT, Issuer: one.Name, Audience: "api", JWKS: two.JWKS(t)}, jwtauth.Options{})
	if _, err := v1.Verify(ctx, one.TokenNoKid(t, "k1", one.Claims("api", "a"))); err != nil {
		t.Fatalf("no kid, one key: %v", err)
	}
	if _, err := v2.Verify(ctx, two.TokenNoKid(t, "k1", two.Claims("api", "a"))); err == nil || !strings.Contains(err.Error(), "names no key (kid) and the issuer's key set holds 2 keys") {
		t.Fatalf("no kid, two keys: %v", err)
	}
	// A key published for ES256 is not used for an EdDSA token with its kid.
	es := jwttest.New(one.Name)
	es.AddKey(t, "k1", "ES256")
	vES, _ := jwtauth.New(&model.RouteAuth{Type: model.AuthJWT, Issuer: one.Name, Audience: "api", JWKS: es.JWKS(t)}, jwtauth.Options{})
	if _, err := vES.Verify(ctx, one.Token(t, "k1", one.Claims("api", "a"))); err == nil || !strings.Contains(err.Error(), `published for algorithm "ES256"`) {
		t.Fatalf("key of another algorithm: %v", err)
	}
	c := one.Claims("api", "a")
	c["iat"] = time.Now().Add(time.Hour).Unix()
	if _, err := v1.Verify(ctx, one.Token(t, "k1", c)); !errors.Is(err, jwtauth.ErrInvalidToken) {
		t.Fatalf("iat in the future: %v", err)
	}
	c = one.Claims("api", "a")
	c["exp"] = time.Now().Add(-30 * time.Second).Unix()
	if _, err := v1.Verify(ctx, one.Token(t, "k1", c)); err != nil {
		t.Fatalf("expired 30s ago, within the leeway: %v", err)
	}
}

// TestOversizedKeySetIsRefused: a JWKS answer over 64 KiB is not read.
func TestOversizedKeySetIsRefused(t *testing.T) {
	t.Parallel()
	iss := jwttest.New("https://issuer.test/")
	iss.AddKey(t, "k1", "EdDSA")
	set := iss.JWKS(t)
	big := strings.Replace(set, `"keys":[`, `"pad":"`+strings.Repeat("x", model.MaxJWKSBytes)+`","keys":[`, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(big)) }))
	defer srv.Close()
	v, _ := jwtauth.New(&model.RouteAuth{Type: model.AuthJWT, Issuer: iss.Name, Audience: "api", JWKSURL: srv.URL}, jwtauth.Options{})
	_, err := v.Verify(context.Background(), iss.Token(t, "k1", iss.Claims("api", "a")))
	if !errors.Is(err, jwtauth.ErrKeysUnavailable) || !strings.Contains(err.Error(), "over 65536 bytes") {
		t.Fatalf("oversized set: %v", err)
	}
}
