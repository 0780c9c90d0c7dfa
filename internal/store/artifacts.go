package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// PutArtifact stores data under its sha256 (hex) and returns it. It is
// idempotent: an artifact that is already stored is not rewritten.
func (s *Store) PutArtifact(ctx context.Context, data []byte) (string, error) {
	sum := sha256.Sum256(data)
	sha := hex.EncodeToString(sum[:])
	ok, err := s.HasArtifact(ctx, sha)
	if err != nil {
		return "", err
	}
	if ok {
		return sha, nil
	}
	if err := s.CheckSpace(); err != nil {
		return "", err
	}
	if _, err := s.artifacts.PutBytes(ctx, sha, data); err != nil {
		return "", fmt.Errorf("put artifact %s: %w", sha, err)
	}
	return sha, nil
}

// GetArtifact returns the artifact stored under sha, or an error wrapping
// ErrNotFound. The bytes are checked against sha before they are returned.
func (s *Store) GetArtifact(ctx context.Context, sha string) ([]byte, error) {
	if !validSHA(sha) {
		return nil, fmt.Errorf("get artifact %q: %w (not a sha256 hex digest)", sha, ErrNotFound)
	}
	data, err := s.artifacts.GetBytes(ctx, sha)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("get artifact %s: %w", sha, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get artifact %s: %w", sha, err)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != sha {
		return nil, fmt.Errorf("get artifact %s: stored bytes do not match their digest", sha)
	}
	return data, nil
}

// HasArtifact reports whether an artifact with this sha256 is stored.
func (s *Store) HasArtifact(ctx context.Context, sha string) (bool, error) {
	if !validSHA(sha) {
		return false, nil
	}
	_, err := s.artifacts.GetInfo(ctx, sha)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("artifact %s: %w", sha, err)
	}
	return true, nil
}

// validSHA reports whether sha is 64 lowercase hex digits.
func validSHA(sha string) bool {
	if len(sha) != sha256.Size*2 {
		return false
	}
	for i := 0; i < len(sha); i++ {
		c := sha[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
