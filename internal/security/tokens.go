package security

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrUnauthorized means a token is missing, malformed or unknown.
var ErrUnauthorized = errors.New("unauthorized")

// TokenPrefix starts every Nimbus API token, so a leaked one is easy to spot
// in code and logs.
const TokenPrefix = "nmb_"

// Scope names what a token may do.
type Scope string

// Scopes, from least to most power. Admin implies all others.
const (
	ScopeRead   Scope = "read"
	ScopeInvoke Scope = "invoke"
	ScopeDeploy Scope = "deploy"
	ScopeAdmin  Scope = "admin"
)

// Identity is who presented a token.
type Identity struct {
	Name      string    `json:"name"`
	Scopes    []Scope   `json:"scopes"`
	CreatedAt time.Time `json:"created_at"`
}

// Allows reports whether the identity holds scope s.
func (id *Identity) Allows(s Scope) bool {
	for _, have := range id.Scopes {
		if have == s || have == ScopeAdmin {
			return true
		}
	}
	return false
}

// Tokens stores and checks API tokens.
type Tokens struct {
	kv jetstream.KeyValue

	mu    sync.Mutex
	cache map[[32]byte]*Identity // hash -> identity, positive answers only
}

// NewTokens uses kv (the security bucket) as its store.
func NewTokens(kv jetstream.KeyValue) *Tokens {
	return &Tokens{kv: kv, cache: map[[32]byte]*Identity{}}
}

const adminMarker = "admin.created"

// EnsureAdmin creates the admin token on the first start and returns it
// with created=true; later calls return "" and false. The plaintext exists
// only in the return value.
func (t *Tokens) EnsureAdmin(ctx context.Context) (token string, created bool, err error) {
	if _, err := t.kv.Get(ctx, adminMarker); err == nil {
		return "", false, nil
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", false, fmt.Errorf("read admin marker: %w", err)
	}
	token, err = t.Create(ctx, "admin", []Scope{ScopeAdmin})
	if err != nil {
		return "", false, err
	}
	if _, err := t.kv.Create(ctx, adminMarker, []byte(time.Now().UTC().Format(time.RFC3339))); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return "", false, nil // another process won the race; its token stands
		}
		return "", false, fmt.Errorf("record admin token: %w", err)
	}
	return token, true, nil
}

// Create makes a new token with the given scopes and returns its plaintext.
func (t *Tokens) Create(ctx context.Context, name string, scopes []Scope) (string, error) {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("token randomness: %w", err)
	}
	token := TokenPrefix + base64.RawURLEncoding.EncodeToString(raw[:])
	id := Identity{Name: name, Scopes: scopes, CreatedAt: time.Now().UTC()}
	data, err := json.Marshal(id)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256([]byte(token))
	if _, err := t.kv.Create(ctx, tokenKey(h), data); err != nil {
		return "", fmt.Errorf("store token: %w", err)
	}
	return token, nil
}

// Verify returns the identity of a token, or ErrUnauthorized.
func (t *Tokens) Verify(ctx context.Context, token string) (*Identity, error) {
	if !strings.HasPrefix(token, TokenPrefix) || len(token) > 128 {
		return nil, fmt.Errorf("%w: token is not a Nimbus token (they start with %q)", ErrUnauthorized, TokenPrefix)
	}
	h := sha256.Sum256([]byte(token))
	t.mu.Lock()
	id := t.cache[h]
	t.mu.Unlock()
	if id != nil {
		return id, nil
	}
	e, err := t.kv.Get(ctx, tokenKey(h))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("%w: unknown token", ErrUnauthorized)
	}
	if err != nil {
		return nil, fmt.Errorf("look up token: %w", err)
	}
	id = &Identity{}
	if err := json.Unmarshal(e.Value(), id); err != nil {
		return nil, fmt.Errorf("token record: %w", err)
	}
	t.mu.Lock()
	t.cache[h] = id
	t.mu.Unlock()
	return id, nil
}

func tokenKey(h [32]byte) string { return "tokens." + hex.EncodeToString(h[:]) }
