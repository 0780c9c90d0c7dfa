// Package jwttest is an issuer of JSON Web Tokens for tests: real keys
// (Ed25519, P-256, RSA), a real JWKS served over HTTP on loopback, and
// tokens signed with them, including the malformed ones a verifier must
// refuse.
package jwttest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// Issuer holds signing keys by kid and serves their public halves.
type Issuer struct {
	// Name is the iss claim of its tokens.
	Name string

	mu   sync.Mutex
	keys map[string]key
	// Requests counts the JWKS requests served.
	Requests atomic.Int64
	// Down makes the JWKS endpoint answer 503.
	Down atomic.Bool
	srv  *httptest.Server
}

type key struct {
	alg  jose.SignatureAlgorithm
	priv crypto.Signer
}

// New returns an issuer named name with no keys.
func New(name string) *Issuer { return &Issuer{Name: name, keys: map[string]key{}} }

// AddKey makes a fresh key for alg (EdDSA, ES256 or RS256) under kid.
func (i *Issuer) AddKey(t testing.TB, kid, alg string) {
	t.Helper()
	var priv crypto.Signer
	var err error
	switch alg {
	case "EdDSA":
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	case "ES256":
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "RS256":
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		t.Fatalf("jwttest: algorithm %s not supported", alg)
	}
	if err != nil {
		t.Fatal(err)
	}
	i.mu.Lock()
	i.keys[kid] = key{alg: jose.SignatureAlgorithm(alg), priv: priv}
	i.mu.Unlock()
}

// RemoveKey stops publishing and signing with kid.
func (i *Issuer) RemoveKey(kid string) {
	i.mu.Lock()
	delete(i.keys, kid)
	i.mu.Unlock()
}

// JWKS is the public key set, as the issuer publishes it.
func (i *Issuer) JWKS(t testing.TB) string {
	t.Helper()
	i.mu.Lock()
	defer i.mu.Unlock()
	var set jose.JSONWebKeySet
	for kid, k := range i.keys {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.priv.Public(), KeyID: kid, Algorithm: string(k.alg), Use: "sig"})
	}
	data, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// Serve publishes the key set at /jwks.json on 127.0.0.1 until the test
// ends. It returns the URL of the set.
func (i *Issuer) Serve(t testing.TB) string { return i.ServeOn(t, "127.0.0.1") }

// ServeOn is Serve on another loopback address, such as 127.0.0.2.
func (i *Issuer) ServeOn(t testing.TB, host string) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	i.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/jwks.json" {
			http.NotFound(w, r)
			return
		}
		i.Requests.Add(1)
		if i.Down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(i.JWKS(t)))
	}))
	i.srv.Listener.Close()
	i.srv.Listener = ln
	i.srv.Start()
	t.Cleanup(i.srv.Close)
	return i.srv.URL + "/jwks.json"
}

// Claims returns the standard claims of a valid token for audience aud
// and subject sub, expiring in an hour.
func (i *Issuer) Claims(aud, sub string) map[string]any {
	now := time.Now()
	return map[string]any{"iss": i.Name, "aud": aud, "sub": sub, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
}

// Token signs claims with the key kid, naming kid in the header.
func (i *Issuer) Token(t testing.TB, kid string, claims map[string]any) string {
	t.Helper()
	i.mu.Lock()
	k, ok := i.keys[kid]
	i.mu.Unlock()
	if !ok {
		t.Fatalf("jwttest: no key %q", kid)
	}
	return Sign(t, k.alg, k.priv, kid, claims)
}

// TokenNoKid signs claims with the key kid without naming it in the
// header.
func (i *Issuer) TokenNoKid(t testing.TB, kid string, claims map[string]any) string {
	t.Helper()
	i.mu.Lock()
	k, ok := i.keys[kid]
	i.mu.Unlock()
	if !ok {
		t.Fatalf("jwttest: no key %q", kid)
	}
	return Sign(t, k.alg, k.priv, "", claims)
}

// Sign makes a compact JWS of claims with priv.
func Sign(t testing.TB, alg jose.SignatureAlgorithm, priv crypto.Signer, kid string, claims map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: priv}, opts)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Unsigned is a token with alg "none" and no signature: what a forger
// sends.
func Unsigned(t testing.TB, kid string, claims map[string]any) string {
	t.Helper()
	h, _ := json.Marshal(map[string]string{"alg": "none", "typ": "JWT", "kid": kid})
	p, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(p) + "."
}

// Tamper replaces the payload of a signed token with claims, keeping its
// header and signature.
func Tamper(t testing.TB, token string, claims map[string]any) string {
	t.Helper()
	parts := strings.Split(token, ".")
	p, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	parts[1] = base64.RawURLEncoding.EncodeToString(p)
	return strings.Join(parts, ".")
}
