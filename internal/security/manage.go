package security

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbus-dev/nimbus/internal/model"
)

// Errors of token management.
var (
	// ErrInvalid means a token request is malformed: a bad name, an
	// unknown scope, a negative lifetime.
	ErrInvalid = errors.New("invalid token request")
	// ErrTokenNotFound means no token has the id or name given.
	ErrTokenNotFound = errors.New("token not found")
	// ErrAmbiguous means a name or id prefix matches several tokens.
	ErrAmbiguous = errors.New("ambiguous token reference")
)

// Scopes returns every scope, from least to most power.
func Scopes() []Scope { return []Scope{ScopeRead, ScopeInvoke, ScopeDeploy, ScopeSecrets, ScopeAdmin} }

// ParseScopes checks scope names ("read", "invoke", "deploy", "admin") and
// returns them without duplicates, in their order of power. Commas separate
// several scopes in one string.
func ParseScopes(names []string) ([]Scope, error) {
	seen := map[Scope]bool{}
	for _, n := range names {
		for _, part := range strings.Split(n, ",") {
			s := Scope(strings.ToLower(strings.TrimSpace(part)))
			if s == "" {
				continue
			}
			if !slices.Contains(Scopes(), s) {
				return nil, fmt.Errorf("%w: unknown scope %q (scopes: read, invoke, deploy, secrets, admin)", ErrInvalid, part)
			}
			seen[s] = true
		}
	}
	var out []Scope
	for _, s := range Scopes() {
		if seen[s] {
			out = append(out, s)
		}
	}
	return out, nil
}

// TokenSpec is what Issue makes a token from.
type TokenSpec struct {
	// Name says what the token is for (ci, alice); 1 to 64 letters, digits
	// and . _ @ -. Names need not be unique; ids are.
	Name string
	// Scopes the token carries; at least one (see ParseScopes).
	Scopes []Scope
	// TTL is the token's lifetime; 0 means it never expires.
	TTL time.Duration
	// CreatedBy names who issued it.
	CreatedBy string
	// Tenant binds the token to one tenant (a name under model's name
	// rule); empty: node-wide.
	Tenant string
}

// TokenInfo describes a stored token; it never holds the secret.
type TokenInfo struct {
	// ID is the first 12 hex digits of the token's sha256: what `token ls`
	// shows and `token revoke` takes.
	ID string `json:"id"`
	Identity
}

var tokenName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

// MaxTTL bounds a token's lifetime (ten years): a longer one is a typo.
const MaxTTL = 10 * 365 * 24 * time.Hour

// Issue makes a new token from spec and returns its plaintext (shown to the
// user once; only its sha256 is stored) and its description. Errors wrap
// ErrInvalid when spec is malformed.
func (t *Tokens) Issue(ctx context.Context, spec TokenSpec) (string, TokenInfo, error) {
	if !tokenName.MatchString(spec.Name) {
		return "", TokenInfo{}, fmt.Errorf("%w: name %q: use 1 to 64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit", ErrInvalid, spec.Name)
	}
	scopes, err := ParseScopes(scopeStrings(spec.Scopes))
	if err != nil {
		return "", TokenInfo{}, err
	}
	if len(scopes) == 0 {
		return "", TokenInfo{}, fmt.Errorf("%w: a token needs at least one scope (read, invoke, deploy, secrets, admin)", ErrInvalid)
	}
	if spec.TTL < 0 || spec.TTL > MaxTTL {
		return "", TokenInfo{}, fmt.Errorf("%w: lifetime %s: use a positive duration up to 10 years, or none for a token that does not expire", ErrInvalid, spec.TTL)
	}
	if spec.Tenant != "" && !model.ValidName(spec.Tenant) {
		return "", TokenInfo{}, fmt.Errorf("%w: tenant %q: use %s", ErrInvalid, spec.Tenant, model.NameRule)
	}
	now := time.Now().UTC()
	id := Identity{Name: spec.Name, Scopes: scopes, CreatedAt: now, CreatedBy: spec.CreatedBy, Tenant: spec.Tenant}
	if spec.TTL > 0 {
		exp := now.Add(spec.TTL)
		id.ExpiresAt = &exp
	}
	return t.store(ctx, id)
}

func scopeStrings(s []Scope) []string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = string(v)
	}
	return out
}

// List describes every stored token (expired ones too), oldest first.
func (t *Tokens) List(ctx context.Context) ([]TokenInfo, error) {
	keys, err := t.kv.ListKeysFiltered(ctx, tokenKeyPrefix+">")
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	var names []string
	for k := range keys.Keys() {
		names = append(names, k)
	}
	out := make([]TokenInfo, 0, len(names))
	for _, k := range names {
		e, err := t.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // revoked while we listed
		}
		if err != nil {
			return nil, fmt.Errorf("read token %s: %w", k, err)
		}
		info := TokenInfo{ID: idOfKey(k)}
		if err := json.Unmarshal(e.Value(), &info.Identity); err != nil {
			return nil, fmt.Errorf("token record %s: %w", info.ID, err)
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// idOfKey is the id of the token recorded under key "tokens.<sha256 hex>".
func idOfKey(key string) string {
	h := strings.TrimPrefix(key, tokenKeyPrefix)
	if len(h) > 12 {
		h = h[:12]
	}
	return h
}

// Revoke deletes the token that ref names: its id, a unique prefix of its id
// (at least 6 hex digits), or its name if exactly one token has it. The
// token is refused from then on: at once by this Tokens, and by every other
// Tokens on the store as soon as their Watch sees the deletion. Errors wrap
// ErrTokenNotFound or ErrAmbiguous.
func (t *Tokens) Revoke(ctx context.Context, ref string) (TokenInfo, error) {
	return t.RevokeIn(ctx, "", ref)
}

// RevokeIn is Revoke among the tokens of tenant only (its keys); "" means
// among every token. A token of another tenant is not found.
func (t *Tokens) RevokeIn(ctx context.Context, tenant, ref string) (TokenInfo, error) {
	all, err := t.List(ctx)
	if err != nil {
		return TokenInfo{}, err
	}
	var byID, byName []TokenInfo
	for _, tok := range all {
		if tenant != "" && tok.Tenant != tenant {
			continue
		}
		if len(ref) >= 6 && strings.HasPrefix(tok.ID, strings.ToLower(ref)) {
			byID = append(byID, tok)
		}
		if tok.Name == ref {
			byName = append(byName, tok)
		}
	}
	match := byID
	if len(match) == 0 {
		match = byName
	}
	switch {
	case len(match) == 0:
		return TokenInfo{}, fmt.Errorf("%w: no token has id or name %q; `nimbus token ls` lists them", ErrTokenNotFound, ref)
	case len(match) > 1:
		ids := make([]string, len(match))
		for i, m := range match {
			ids[i] = m.ID + " (" + m.Name + ")"
		}
		return TokenInfo{}, fmt.Errorf("%w: %q matches %d tokens: %s; revoke one by its id", ErrAmbiguous, ref, len(match), strings.Join(ids, ", "))
	}
	victim := match[0]
	key, err := t.keyOf(ctx, victim.ID)
	if err != nil {
		return TokenInfo{}, err
	}
	if err := t.kv.Purge(ctx, key); err != nil {
		return TokenInfo{}, fmt.Errorf("revoke token %s: %w", victim.ID, err)
	}
	t.forget(key)
	return victim, nil
}

// keyOf finds the record key of the token with this id.
func (t *Tokens) keyOf(ctx context.Context, id string) (string, error) {
	keys, err := t.kv.ListKeysFiltered(ctx, tokenKeyPrefix+">")
	if err != nil {
		return "", fmt.Errorf("list tokens: %w", err)
	}
	found := ""
	for k := range keys.Keys() {
		if idOfKey(k) == id {
			found = k
		}
	}
	if found == "" {
		return "", fmt.Errorf("%w: token %s was revoked meanwhile", ErrTokenNotFound, id)
	}
	return found, nil
}

// forget drops a token record's cached answer and tells a Verify in flight
// not to cache what it read.
func (t *Tokens) forget(key string) {
	t.mu.Lock()
	delete(t.cache, key)
	t.gen++
	t.mu.Unlock()
}

// Watch follows changes to token records (on this node or any other sharing
// the store) and, while it runs, lets Verify cache what it found: each
// change drops the cached answer for its token, so a revocation takes effect
// as soon as it is seen here. It returns nil when ctx ends, or an error if
// the watch cannot start or stops; in both cases caching stops and Verify
// reads the store again. Run it once per Tokens, in its own goroutine.
func (t *Tokens) Watch(ctx context.Context) error {
	w, err := t.kv.Watch(ctx, tokenKeyPrefix+">", jetstream.UpdatesOnly(), jetstream.MetaOnly())
	if err != nil {
		return fmt.Errorf("watch tokens: %w", err)
	}
	defer w.Stop()
	t.mu.Lock()
	t.watching = true
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		t.watching = false
		t.cache = map[string]*Identity{}
		t.gen++
		t.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				if ctx.Err() != nil {
					return nil
				}
				return errors.New("watch tokens: the watch ended")
			}
			if e != nil {
				t.forget(e.Key())
			}
		}
	}
}
