package security_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/security"
	"github.com/nimbus-dev/nimbus/internal/store"
)

// openStore opens a real embedded JetStream store in a fresh directory and
// closes it when the test ends.
func openStore(t testing.TB, dir string) *store.Store {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(context.Background(), store.Options{DataDir: dir, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestCreateVerify(t *testing.T) {
	ctx := context.Background()
	tokens := security.NewTokens(openStore(t, t.TempDir()).Security())

	tok, err := tokens.Create(ctx, "ci", []security.Scope{security.ScopeRead, security.ScopeDeploy})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, security.TokenPrefix) {
		t.Fatalf("token %q lacks prefix %q", tok, security.TokenPrefix)
	}
	id, err := tokens.Verify(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	if id.Name != "ci" || !slices.Equal(id.Scopes, []security.Scope{security.ScopeRead, security.ScopeDeploy}) {
		t.Fatalf("identity = %+v", id)
	}
	if id.CreatedAt.IsZero() {
		t.Fatal("identity has no creation time")
	}

	other, err := tokens.Create(ctx, "ci", []security.Scope{security.ScopeRead})
	if err != nil {
		t.Fatal(err)
	}
	if other == tok {
		t.Fatal("two tokens for the same name are equal")
	}
}

func TestScopes(t *testing.T) {
	all := []security.Scope{security.ScopeRead, security.ScopeInvoke, security.ScopeDeploy, security.ScopeAdmin}
	for _, tc := range []struct {
		have  []security.Scope
		allow []security.Scope
	}{
		{have: nil, allow: nil},
		{have: []security.Scope{security.ScopeRead}, allow: []security.Scope{security.ScopeRead}},
		{have: []security.Scope{security.ScopeInvoke, security.ScopeDeploy}, allow: []security.Scope{security.ScopeInvoke, security.ScopeDeploy}},
		// Admin implies every scope.
		{have: []security.Scope{security.ScopeAdmin}, allow: all},
	} {
		id := &security.Identity{Name: "x", Scopes: tc.have}
		for _, s := range all {
			if got, want := id.Allows(s), slices.Contains(tc.allow, s); got != want {
				t.Errorf("scopes %v: Allows(%s) = %v, want %v", tc.have, s, got, want)
			}
		}
	}
}

// TestStoredAsHash checks the record at rest: it is keyed by the token's
// sha256 and never contains the token or any part of its secret.
func TestStoredAsHash(t *testing.T) {
	ctx := context.Background()
	kv := openStore(t, t.TempDir()).Security()
	tokens := security.NewTokens(kv)
	tok, err := tokens.Create(ctx, "ci", []security.Scope{security.ScopeRead})
	if err != nil {
		t.Fatal(err)
	}
	secret := strings.TrimPrefix(tok, security.TokenPrefix)

	keys, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for k := range keys.Keys() {
		found = append(found, k)
		if strings.Contains(k, secret) {
			t.Errorf("key %q contains the token", k)
		}
		e, err := kv.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(e.Value(), []byte(secret)) {
			t.Errorf("record %q contains the token: %s", k, e.Value())
		}
	}
	h := sha256.Sum256([]byte(tok))
	if want := "tokens." + hex.EncodeToString(h[:]); !slices.Equal(found, []string{want}) {
		t.Fatalf("keys = %v, want [%s]", found, want)
	}
}

func TestVerifyRejects(t *testing.T) {
	ctx := context.Background()
	tokens := security.NewTokens(openStore(t, t.TempDir()).Security())
	if _, err := tokens.Create(ctx, "ci", []security.Scope{security.ScopeAdmin}); err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{
		"empty":        "",
		"no prefix":    "Bearer abc",
		"too long":     security.TokenPrefix + strings.Repeat("a", 200),
		"unknown":      security.TokenPrefix + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		"prefix alone": security.TokenPrefix,
	} {
		id, err := tokens.Verify(ctx, tok)
		if !errors.Is(err, security.ErrUnauthorized) {
			t.Errorf("%s: Verify = %+v, %v; want ErrUnauthorized", name, id, err)
		}
	}
}

// TestDeletedRecord: a token whose record is gone from the bucket is refused,
// by a Tokens that has not answered for it before (a restarted server) and by
// one that has: without a running Watch nothing is cached.
func TestDeletedRecord(t *testing.T) {
	ctx := context.Background()
	kv := openStore(t, t.TempDir()).Security()
	running := security.NewTokens(kv)
	tok, err := running.Create(ctx, "gone", []security.Scope{security.ScopeRead})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := running.Verify(ctx, tok); err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256([]byte(tok))
	if err := kv.Delete(ctx, "tokens."+hex.EncodeToString(h[:])); err != nil {
		t.Fatal(err)
	}
	if _, err := security.NewTokens(kv).Verify(ctx, tok); !errors.Is(err, security.ErrUnauthorized) {
		t.Fatalf("Verify after delete = %v, want ErrUnauthorized", err)
	}
	if _, err := running.Verify(ctx, tok); !errors.Is(err, security.ErrUnauthorized) {
		t.Fatalf("Verify after delete, by the Tokens that verified it before = %v, want ErrUnauthorized", err)
	}
}

// TestEnsureAdmin: the first start creates one admin token; later starts,
// including after a restart on the same data directory, create none, and the
// first token still works.
func TestEnsureAdmin(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st := openStore(t, dir)
	tokens := security.NewTokens(st.Security())
	tok, created, err := tokens.EnsureAdmin(ctx)
	if err != nil || !created || tok == "" {
		t.Fatalf("first EnsureAdmin = %q, %v, %v", tok, created, err)
	}
	id, err := tokens.Verify(ctx, tok)
	if err != nil || !id.Allows(security.ScopeAdmin) {
		t.Fatalf("admin token: %+v, %v", id, err)
	}
	if again, created, err := tokens.EnsureAdmin(ctx); err != nil || created || again != "" {
		t.Fatalf("second EnsureAdmin = %q, %v, %v", again, created, err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	tokens = security.NewTokens(openStore(t, dir).Security())
	if again, created, err := tokens.EnsureAdmin(ctx); err != nil || created || again != "" {
		t.Fatalf("EnsureAdmin after restart = %q, %v, %v", again, created, err)
	}
	if _, err := tokens.Verify(ctx, tok); err != nil {
		t.Fatalf("admin token after restart: %v", err)
	}
}

// TestEnsureAdminRace: servers starting together on one store create exactly
// one admin token between them.
func TestEnsureAdminRace(t *testing.T) {
	ctx := context.Background()
	kv := openStore(t, t.TempDir()).Security()
	const n = 8
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		created []string
	)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, ok, err := security.NewTokens(kv).EnsureAdmin(ctx)
			if err != nil {
				t.Error(err)
				return
			}
			if ok {
				mu.Lock()
				created = append(created, tok)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(created) != 1 {
		t.Fatalf("%d admin tokens reported created, want 1", len(created))
	}
	if _, err := security.NewTokens(kv).Verify(ctx, created[0]); err != nil {
		t.Fatalf("the reported admin token: %v", err)
	}
}
