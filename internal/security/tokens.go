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

	"github.com/nimbus-dev/nimbus/internal/model"
)

// ErrUnauthorized means a token is missing, malformed, unknown (never
// issued, or revoked) or expired.
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
	// ScopeSecrets sets, lists and removes apps' secrets (never reads
	// their values: nothing in the API does).
	ScopeSecrets Scope = "secrets"
	ScopeAdmin   Scope = "admin"
)

// Identity is who presented a token.
type Identity struct {
	Name      string    `json:"name"`
	Scopes    []Scope   `json:"scopes"`
	CreatedAt time.Time `json:"created_at"`
	// ExpiresAt is when the token stops working; nil: never.
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	// CreatedBy names the identity that issued the token ("local" for one
	// minted from the data directory); empty for the first admin token.
	CreatedBy string `json:"created_by,omitempty"`
	// Tenant binds the token to one tenant's apps (a key of that tenant);
	// empty: node-wide, every tenant's apps and the node itself (the
	// first admin token, and every token made before tenants existed).
	Tenant string `json:"tenant,omitempty"`
	// ID is the token's public id (TokenInfo.ID), filled by Verify for
	// audit records; not stored.
	ID string `json:"-"`
}

// NodeWide reports whether the identity is bound to no tenant.
func (id *Identity) NodeWide() bool { return id.Tenant == "" }

// Reaches reports whether the identity may act on the apps of tenant t:
// a node-wide identity reaches every tenant, a tenant's key only its own.
func (id *Identity) Reaches(t string) bool {
	return id.Tenant == "" || id.Tenant == model.TenantOr(t)
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

// Expired reports whether the identity's token has expired at now.
func (id *Identity) Expired(now time.Time) bool {
	return id.ExpiresAt != nil && !now.Before(*id.ExpiresAt)
}

// Tokens stores and checks API tokens.
//
// Verify caches the identities it found only while Watch runs: the watch
// sees every change to a token record, from this process or any other on
// the same store, and drops the cached answer, so a revoked token is refused
// as soon as its deletion reaches the watch (at once on the node that
// revoked it). Without a running Watch every Verify reads the store.
type Tokens struct {
	kv jetstream.KeyValue

	mu       sync.Mutex
	cache    map[string]*Identity // record key -> identity, positive answers only
	watching bool                 // Watch is running: the cache may be filled
	gen      uint64               // bumped by every change to a token record
}

// NewTokens uses kv (the security bucket) as its store.
func NewTokens(kv jetstream.KeyValue) *Tokens {
	return &Tokens{kv: kv, cache: map[string]*Identity{}}
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

// Create makes a new token with the given scopes, never expiring, and
// returns its plaintext. Unlike Issue it checks neither the name nor the
// scopes: it is for the platform's own tokens and tests.
func (t *Tokens) Create(ctx context.Context, name string, scopes []Scope) (string, error) {
	token, _, err := t.store(ctx, Identity{Name: name, Scopes: scopes, CreatedAt: time.Now().UTC()})
	return token, err
}

// store records a fresh random token with identity id.
func (t *Tokens) store(ctx context.Context, id Identity) (string, TokenInfo, error) {
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", TokenInfo{}, fmt.Errorf("token randomness: %w", err)
	}
	token := TokenPrefix + base64.RawURLEncoding.EncodeToString(raw[:])
	data, err := json.Marshal(id)
	if err != nil {
		return "", TokenInfo{}, err
	}
	h := sha256.Sum256([]byte(token))
	if _, err := t.kv.Create(ctx, tokenKey(h), data); err != nil {
		return "", TokenInfo{}, fmt.Errorf("store token: %w", err)
	}
	return token, TokenInfo{ID: tokenID(h), Identity: id}, nil
}

// Verify returns the identity of a token, or ErrUnauthorized.
func (t *Tokens) Verify(ctx context.Context, token string) (*Identity, error) {
	if !strings.HasPrefix(token, TokenPrefix) || len(token) > 128 {
		return nil, fmt.Errorf("%w: token is not a Nimbus token (they start with %q)", ErrUnauthorized, TokenPrefix)
	}
	key := tokenKey(sha256.Sum256([]byte(token)))
	t.mu.Lock()
	id, gen, caching := t.cache[key], t.gen, t.watching
	t.mu.Unlock()
	if id == nil {
		e, err := t.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, fmt.Errorf("%w: unknown token (never issued by this server's data directory, or revoked)", ErrUnauthorized)
		}
		if err != nil {
			return nil, fmt.Errorf("look up token: %w", err)
		}
		id = &Identity{}
		if err := json.Unmarshal(e.Value(), id); err != nil {
			return nil, fmt.Errorf("token record: %w", err)
		}
		id.ID = idOfKey(key)
		// Cache only if no token record changed while we read: a change
		// seen by Watch during the read could be this token's revocation,
		// and the answer read before it must not outlive it.
		if caching {
			t.mu.Lock()
			if t.watching && t.gen == gen {
				t.cache[key] = id
			}
			t.mu.Unlock()
		}
	}
	if id.Expired(time.Now()) {
		return nil, fmt.Errorf("%w: token %q expired at %s", ErrUnauthorized, id.Name, id.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return id, nil
}

const tokenKeyPrefix = "tokens."

func tokenKey(h [32]byte) string { return tokenKeyPrefix + hex.EncodeToString(h[:]) }

// tokenID is the public name of a token: the first 12 hex digits of its
// sha256. It reveals nothing of the secret and is unique in practice.
func tokenID(h [32]byte) string { return hex.EncodeToString(h[:6]) }
