package jwtauth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/nimbus-dev/nimbus/internal/model"
)

// ErrInvalidToken means the request's token does not admit it: malformed,
// signed with an algorithm or key the route does not accept, a signature
// that does not verify, or claims that do not match (expired, another
// issuer or audience). The message says which. The gateway answers 401.
var ErrInvalidToken = errors.New("invalid token")

// ErrKeysUnavailable means no key set could be had from the route's
// jwks_url: the token could not be checked at all. The gateway answers 503.
var ErrKeysUnavailable = errors.New("issuer keys unavailable")

// Defaults of Options.
const (
	DefaultTTL          = 10 * time.Minute
	DefaultMinRefresh   = 10 * time.Second
	DefaultLeeway       = time.Minute
	DefaultFetchTimeout = 5 * time.Second
	maxTokenBytes       = 16 << 10
	maxClaimValue       = 4 << 10
)

// Options tune a Verifier; the zero value means the defaults.
type Options struct {
	// Client fetches jwks_url. Default: a client with DefaultFetchTimeout.
	// A node passes one that dials through its egress guard.
	Client *http.Client
	// TTL is how long a fetched set is used before it is fetched again.
	// Default DefaultTTL.
	TTL time.Duration
	// MinRefresh is the least time between two fetches. Default
	// DefaultMinRefresh; a negative value means none (tests).
	MinRefresh time.Duration
	// Leeway is the clock skew allowed on exp, nbf and iat. Default
	// DefaultLeeway.
	Leeway time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Claims are what a verified token says of its bearer.
type Claims struct {
	// Subject is the token's sub claim ("" if it has none).
	Subject string
	// Forward holds the route's forwarded claims that the token carries,
	// by name: strings as they are, other values as JSON.
	Forward map[string]string
}

// Verifier checks the tokens of one route auth configuration. It is safe
// for concurrent use.
type Verifier struct {
	auth *model.RouteAuth
	algs []jose.SignatureAlgorithm
	opts Options

	fetch sync.Mutex // held while fetching; orders fetches

	mu        sync.Mutex
	keys      *jose.JSONWebKeySet // nil until the first successful fetch
	fetchedAt time.Time           // of keys
	triedAt   time.Time           // of the last fetch, successful or not
	fetches   int                 // fetches attempted, for tests and metrics
}

// New makes a verifier of auth (type jwt, as model.CheckRouteAuth
// returns it). An inline key set is parsed now: a bad one is an error
// wrapping model.ErrInvalid.
func New(auth *model.RouteAuth, opts Options) (*Verifier, error) {
	if auth == nil || auth.Type != model.AuthJWT {
		return nil, fmt.Errorf("%w: jwtauth: auth is not of type %s", model.ErrInvalid, model.AuthJWT)
	}
	a, err := model.CheckRouteAuth(auth)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", model.ErrInvalid, err)
	}
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: DefaultFetchTimeout}
	}
	if opts.TTL <= 0 {
		opts.TTL = DefaultTTL
	}
	if opts.MinRefresh == 0 {
		opts.MinRefresh = DefaultMinRefresh
	}
	if opts.Leeway <= 0 {
		opts.Leeway = DefaultLeeway
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	v := &Verifier{auth: a, opts: opts}
	for _, alg := range a.Algorithms {
		v.algs = append(v.algs, jose.SignatureAlgorithm(alg))
	}
	if a.JWKS != "" {
		set, err := parseSet([]byte(a.JWKS))
		if err != nil {
			return nil, fmt.Errorf("%w: auth jwks: %w", model.ErrInvalid, err)
		}
		v.keys = set
	}
	return v, nil
}

// Fetches reports how many times the verifier fetched its key set.
func (v *Verifier) Fetches() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.fetches
}

// header is the part of a JWS header read before verification, for
// messages and key lookup.
type header struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
}

// Verify checks raw (a compact JWS) and returns its claims. Errors wrap
// ErrInvalidToken or ErrKeysUnavailable.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Claims, error) {
	if len(raw) > maxTokenBytes {
		return nil, fmt.Errorf("%w: the token is over %d bytes", ErrInvalidToken, maxTokenBytes)
	}
	h, err := peekHeader(raw)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(v.auth.Algorithms, h.Alg) {
		return nil, fmt.Errorf("%w: algorithm %q is not accepted by this route (it accepts %s)", ErrInvalidToken, h.Alg, strings.Join(v.auth.Algorithms, ", "))
	}
	tok, err := jwt.ParseSigned(raw, v.algs)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	key, err := v.key(ctx, h)
	if err != nil {
		return nil, err
	}
	var std jwt.Claims
	var all map[string]any
	if err := tok.Claims(key.Key, &std, &all); err != nil {
		return nil, fmt.Errorf("%w: the signature does not verify with key %q of the issuer's key set", ErrInvalidToken, key.KeyID)
	}
	if std.Expiry == nil {
		return nil, fmt.Errorf("%w: the token has no exp claim: a route accepts only tokens that expire", ErrInvalidToken)
	}
	now := v.opts.Now()
	err = std.ValidateWithLeeway(jwt.Expected{Issuer: v.auth.Issuer, AnyAudience: jwt.Audience{v.auth.Audience}, Time: now}, v.opts.Leeway)
	switch {
	case err == nil:
	case errors.Is(err, jwt.ErrExpired):
		return nil, fmt.Errorf("%w: the token expired at %s", ErrInvalidToken, std.Expiry.Time().UTC().Format(time.RFC3339))
	case errors.Is(err, jwt.ErrInvalidIssuer):
		return nil, fmt.Errorf("%w: the token's issuer %q is not this route's (%q)", ErrInvalidToken, std.Issuer, v.auth.Issuer)
	case errors.Is(err, jwt.ErrInvalidAudience):
		return nil, fmt.Errorf("%w: the token's audience %q does not include this route's (%q)", ErrInvalidToken, []string(std.Audience), v.auth.Audience)
	case errors.Is(err, jwt.ErrNotValidYet):
		return nil, fmt.Errorf("%w: the token is not valid before %s", ErrInvalidToken, std.NotBefore.Time().UTC().Format(time.RFC3339))
	default:
		return nil, fmt.Errorf("%w: %w", ErrInvalidToken, err)
	}
	c := &Claims{Subject: std.Subject}
	for _, name := range v.auth.Claims {
		val, ok := all[name]
		if !ok {
			continue
		}
		s, isString := val.(string)
		if !isString || strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f }) {
			b, _ := json.Marshal(val)
			s = string(b)
		}
		if len(s) > maxClaimValue {
			continue // would not fit a header; the function sees it absent
		}
		if c.Forward == nil {
			c.Forward = map[string]string{}
		}
		c.Forward[name] = s
	}
	return c, nil
}

// peekHeader decodes the protected header of a compact JWS without
// verifying anything.
func peekHeader(raw string) (header, error) {
	var h header
	first, _, ok := strings.Cut(raw, ".")
	if !ok || strings.Count(raw, ".") != 2 {
		return h, fmt.Errorf("%w: not a JWT (a signed JWT has three dot-separated parts)", ErrInvalidToken)
	}
	data, err := base64.RawURLEncoding.DecodeString(first)
	if err != nil || json.Unmarshal(data, &h) != nil {
		return h, fmt.Errorf("%w: the token's header is not base64url JSON", ErrInvalidToken)
	}
	return h, nil
}

// key finds the verification key for a token's header, fetching the key
// set when it has none yet, when it is stale, or when the kid is unknown.
func (v *Verifier) key(ctx context.Context, h header) (*jose.JSONWebKey, error) {
	v.mu.Lock()
	set, fetchedAt := v.keys, v.fetchedAt
	v.mu.Unlock()
	if set != nil {
		k, err := pick(set, h)
		stale := v.auth.JWKSURL != "" && v.opts.Now().Sub(fetchedAt) > v.opts.TTL
		if err == nil && !stale {
			return k, nil
		}
		if v.auth.JWKSURL == "" {
			return nil, err
		}
	}
	set, ferr := v.refresh(ctx)
	if set == nil {
		return nil, ferr
	}
	return pick(set, h)
}

// pick returns the public key of set for h.
func pick(set *jose.JSONWebKeySet, h header) (*jose.JSONWebKey, error) {
	var cands []jose.JSONWebKey
	if h.Kid != "" {
		cands = set.Key(h.Kid)
		if len(cands) == 0 {
			return nil, fmt.Errorf("%w: key id %q is not in the issuer's key set", ErrInvalidToken, h.Kid)
		}
	} else {
		if len(set.Keys) != 1 {
			return nil, fmt.Errorf("%w: the token names no key (kid) and the issuer's key set holds %d keys", ErrInvalidToken, len(set.Keys))
		}
		cands = set.Keys
	}
	for _, k := range cands {
		if k.Algorithm == "" || k.Algorithm == h.Alg {
			pub := k.Public()
			return &pub, nil
		}
	}
	return nil, fmt.Errorf("%w: key %q is published for algorithm %q, the token says %q", ErrInvalidToken, h.Kid, cands[0].Algorithm, h.Alg)
}

// refresh fetches the key set unless a fetch happened less than
// MinRefresh ago, and returns the newest set it has (nil if none) with
// the reason it has none.
func (v *Verifier) refresh(ctx context.Context) (*jose.JSONWebKeySet, error) {
	seen := v.attempt()
	v.fetch.Lock()
	defer v.fetch.Unlock()
	v.mu.Lock()
	if v.fetches != seen { // another caller fetched while we waited: use its answer
		set := v.keys
		v.mu.Unlock()
		if set == nil {
			return nil, fmt.Errorf("%w: fetching %s failed just now; retried at most every %s", ErrKeysUnavailable, v.auth.JWKSURL, v.opts.MinRefresh)
		}
		return set, nil
	}
	now := v.opts.Now()
	if v.opts.MinRefresh > 0 && !v.triedAt.IsZero() && now.Sub(v.triedAt) < v.opts.MinRefresh {
		set := v.keys
		v.mu.Unlock()
		if set == nil {
			return nil, fmt.Errorf("%w: fetching %s failed; retried at most every %s", ErrKeysUnavailable, v.auth.JWKSURL, v.opts.MinRefresh)
		}
		return set, nil
	}
	v.triedAt = now
	v.fetches++
	v.mu.Unlock()

	set, err := v.get(ctx)
	v.mu.Lock()
	defer v.mu.Unlock()
	if err != nil {
		if v.keys == nil {
			return nil, fmt.Errorf("%w: %w", ErrKeysUnavailable, err)
		}
		return v.keys, nil // the set we had stays until a fetch succeeds
	}
	v.keys, v.fetchedAt = set, v.opts.Now()
	return set, nil
}

func (v *Verifier) attempt() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.fetches
}

// get fetches and parses the key set at JWKSURL.
func (v *Verifier) get(ctx context.Context) (*jose.JSONWebKeySet, error) {
	ctx, cancel := context.WithTimeout(ctx, DefaultFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.auth.JWKSURL, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", v.auth.JWKSURL, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := v.opts.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", v.auth.JWKSURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch %s: status %d", v.auth.JWKSURL, resp.StatusCode)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, model.MaxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", v.auth.JWKSURL, err)
	}
	if len(data) > model.MaxJWKSBytes {
		return nil, fmt.Errorf("fetch %s: the key set is over %d bytes", v.auth.JWKSURL, model.MaxJWKSBytes)
	}
	set, err := parseSet(data)
	if err != nil {
		return nil, fmt.Errorf("fetch %s: %w", v.auth.JWKSURL, err)
	}
	return set, nil
}

// parseSet parses a JWKS and keeps its public signature keys.
func parseSet(data []byte) (*jose.JSONWebKeySet, error) {
	if err := model.CheckJWKS(data); err != nil {
		return nil, err
	}
	var raw jose.JSONWebKeySet
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("not a JSON Web Key Set: %w", err)
	}
	set := &jose.JSONWebKeySet{}
	for _, k := range raw.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		if !k.IsPublic() || !k.Valid() {
			continue
		}
		set.Keys = append(set.Keys, k)
	}
	if len(set.Keys) == 0 {
		return nil, errors.New("the key set has no public signature key")
	}
	return set, nil
}
