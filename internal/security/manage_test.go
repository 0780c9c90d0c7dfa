package security_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/security"
)

func TestParseScopes(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want []security.Scope
		err  bool
	}{
		{in: nil, want: nil},
		{in: []string{"read"}, want: []security.Scope{security.ScopeRead}},
		{in: []string{"deploy,read", "READ"}, want: []security.Scope{security.ScopeRead, security.ScopeDeploy}},
		{in: []string{"admin", " invoke "}, want: []security.Scope{security.ScopeInvoke, security.ScopeAdmin}},
		{in: []string{"write"}, err: true},
	} {
		got, err := security.ParseScopes(tc.in)
		if tc.err {
			if !errors.Is(err, security.ErrInvalid) {
				t.Errorf("ParseScopes(%q) = %v, %v; want ErrInvalid", tc.in, got, err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("ParseScopes(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestIssueValidates(t *testing.T) {
	ctx := context.Background()
	tokens := security.NewTokens(openStore(t, t.TempDir()).Security())
	for name, spec := range map[string]security.TokenSpec{
		"no name":      {Scopes: []security.Scope{security.ScopeRead}},
		"bad name":     {Name: "a b", Scopes: []security.Scope{security.ScopeRead}},
		"long name":    {Name: strings.Repeat("a", 65), Scopes: []security.Scope{security.ScopeRead}},
		"no scope":     {Name: "ci"},
		"bad scope":    {Name: "ci", Scopes: []security.Scope{"root"}},
		"negative ttl": {Name: "ci", Scopes: []security.Scope{security.ScopeRead}, TTL: -time.Hour},
		"huge ttl":     {Name: "ci", Scopes: []security.Scope{security.ScopeRead}, TTL: 11 * 365 * 24 * time.Hour},
	} {
		if tok, _, err := tokens.Issue(ctx, spec); !errors.Is(err, security.ErrInvalid) || tok != "" {
			t.Errorf("%s: Issue = %q, %v; want ErrInvalid", name, tok, err)
		}
	}
	if all, err := tokens.List(ctx); err != nil || len(all) != 0 {
		t.Fatalf("refused requests stored tokens: %+v, %v", all, err)
	}
}

// TestIssueListRevoke: issued tokens are listed without their secret, by
// id; revoking one (by id, id prefix or unique name) refuses it at once and
// leaves the others.
func TestIssueListRevoke(t *testing.T) {
	ctx := context.Background()
	tokens := security.NewTokens(openStore(t, t.TempDir()).Security())
	issue := func(name string, scopes ...security.Scope) (string, security.TokenInfo) {
		t.Helper()
		tok, info, err := tokens.Issue(ctx, security.TokenSpec{Name: name, Scopes: scopes, CreatedBy: "admin"})
		if err != nil {
			t.Fatal(err)
		}
		return tok, info
	}
	ciTok, ci := issue("ci", security.ScopeDeploy, security.ScopeRead)
	aliceTok, alice := issue("alice", security.ScopeRead)
	bobTok, _ := issue("bob", security.ScopeInvoke)
	twin1, _ := issue("twin", security.ScopeRead)
	issue("twin", security.ScopeRead)

	if len(ci.ID) != 12 || strings.Contains(ciTok, ci.ID) || !slices.Equal(ci.Scopes, []security.Scope{security.ScopeRead, security.ScopeDeploy}) || ci.CreatedBy != "admin" {
		t.Fatalf("issued %+v", ci)
	}
	all, err := tokens.List(ctx)
	if err != nil || len(all) != 5 {
		t.Fatalf("List = %+v, %v", all, err)
	}
	for _, info := range all {
		for _, secret := range []string{ciTok, aliceTok, bobTok} {
			if strings.Contains(fmt.Sprintf("%+v", info), strings.TrimPrefix(secret, security.TokenPrefix)) {
				t.Fatalf("List shows a secret: %+v", info)
			}
		}
	}

	// By full id.
	if got, err := tokens.Revoke(ctx, ci.ID); err != nil || got.ID != ci.ID {
		t.Fatalf("Revoke(id) = %+v, %v", got, err)
	}
	if _, err := tokens.Verify(ctx, ciTok); !errors.Is(err, security.ErrUnauthorized) {
		t.Fatalf("revoked token verified: %v", err)
	}
	// By an id prefix.
	if _, err := tokens.Revoke(ctx, alice.ID[:7]); err != nil {
		t.Fatalf("Revoke(id prefix): %v", err)
	}
	// By a unique name.
	if _, err := tokens.Revoke(ctx, "bob"); err != nil {
		t.Fatalf("Revoke(name): %v", err)
	}
	for _, tok := range []string{aliceTok, bobTok} {
		if _, err := tokens.Verify(ctx, tok); !errors.Is(err, security.ErrUnauthorized) {
			t.Fatalf("revoked token verified: %v", err)
		}
	}
	if _, err := tokens.Revoke(ctx, "twin"); !errors.Is(err, security.ErrAmbiguous) {
		t.Fatalf("Revoke of a shared name = %v, want ErrAmbiguous", err)
	}
	if _, err := tokens.Revoke(ctx, "nobody"); !errors.Is(err, security.ErrTokenNotFound) {
		t.Fatalf("Revoke of an unknown name = %v, want ErrTokenNotFound", err)
	}
	if _, err := tokens.Revoke(ctx, ci.ID); !errors.Is(err, security.ErrTokenNotFound) {
		t.Fatalf("second Revoke = %v, want ErrTokenNotFound", err)
	}
	if _, err := tokens.Verify(ctx, twin1); err != nil {
		t.Fatalf("an unrevoked token: %v", err)
	}
	if all, _ := tokens.List(ctx); len(all) != 2 {
		t.Fatalf("after revoking 3 of 5: %+v", all)
	}
}

func TestExpiry(t *testing.T) {
	ctx := context.Background()
	tokens := security.NewTokens(openStore(t, t.TempDir()).Security())
	tok, info, err := tokens.Issue(ctx, security.TokenSpec{Name: "short", Scopes: []security.Scope{security.ScopeRead}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if info.ExpiresAt == nil || info.ExpiresAt.Sub(info.CreatedAt) != time.Hour {
		t.Fatalf("expiry %+v", info)
	}
	id, err := tokens.Verify(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	if id.Expired(time.Now()) || !id.Expired(info.ExpiresAt.Add(time.Second)) || !id.Expired(*info.ExpiresAt) {
		t.Fatalf("Expired is wrong around %v", info.ExpiresAt)
	}
}

// TestRevokeAcrossTokens: two Tokens on one store (two nodes). The one that
// verified a token while its Watch runs caches the answer; a revocation by
// the other reaches it through the watch and the token is refused.
func TestRevokeAcrossTokens(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	kv := openStore(t, t.TempDir()).Security()
	nodeA, nodeB := security.NewTokens(kv), security.NewTokens(kv)
	done := make(chan error, 1)
	go func() { done <- nodeB.Watch(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch: %v", err)
		}
	})
	poll(t, func() error {
		if !nodeB.Watching() {
			return errors.New("node B's watch has not started")
		}
		return nil
	})
	tok, _, err := nodeA.Issue(ctx, security.TokenSpec{Name: "ci", Scopes: []security.Scope{security.ScopeRead}})
	if err != nil {
		t.Fatal(err)
	}
	// The token's creation is itself a change the watch reports; verify
	// until the answer is cached.
	poll(t, func() error {
		if _, err := nodeB.Verify(ctx, tok); err != nil {
			t.Fatal(err)
		}
		if nodeB.Cached() != 1 {
			return errors.New("node B has not cached the token")
		}
		return nil
	})
	if _, err := nodeA.Revoke(ctx, "ci"); err != nil {
		t.Fatal(err)
	}
	poll(t, func() error {
		if _, err := nodeB.Verify(ctx, tok); !errors.Is(err, security.ErrUnauthorized) {
			return fmt.Errorf("node B still accepts the revoked token (%v)", err)
		}
		return nil
	})
	if nodeB.Cached() != 0 {
		t.Fatalf("node B caches %d answers after the revocation", nodeB.Cached())
	}
}

// TestRevokeIsImmediateLocally: with the watch running and the answer
// cached, the Tokens that revokes refuses the token on the very next call.
func TestRevokeIsImmediateLocally(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tokens := security.NewTokens(openStore(t, t.TempDir()).Security())
	go tokens.Watch(ctx)
	poll(t, func() error {
		if !tokens.Watching() {
			return errors.New("watch not started")
		}
		return nil
	})
	tok, info, err := tokens.Issue(ctx, security.TokenSpec{Name: "ci", Scopes: []security.Scope{security.ScopeRead}})
	if err != nil {
		t.Fatal(err)
	}
	poll(t, func() error {
		tokens.Verify(ctx, tok)
		if tokens.Cached() != 1 {
			return errors.New("not cached yet")
		}
		return nil
	})
	if _, err := tokens.Revoke(ctx, info.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := tokens.Verify(ctx, tok); !errors.Is(err, security.ErrUnauthorized) {
		t.Fatalf("Verify right after Revoke = %v, want ErrUnauthorized", err)
	}
}

// poll calls f until it returns nil, for at most 10 seconds.
func poll(t *testing.T, f func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
