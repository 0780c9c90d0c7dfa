package security

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbus-dev/nimbus/internal/model"
)

// Errors of the secrets store.
var (
	// ErrSecretNotFound: the app has no secret of that name.
	ErrSecretNotFound = errors.New("secret not found")
	// ErrInvalidSecret: a malformed app or secret name, or a value that
	// is empty or over MaxSecretBytes.
	ErrInvalidSecret = errors.New("invalid secret")
	// ErrSecretCrypto: a record does not decrypt with the keys this node
	// has (another master key, or a record altered at rest).
	ErrSecretCrypto = errors.New("secret does not decrypt")
)

// MaxSecretBytes caps a secret's value.
const MaxSecretBytes = 64 << 10

// SecretInfo is what may be shown of a secret: never its value.
type SecretInfo struct {
	Name string `json:"name"`
	// Version counts the times the secret was set, from 1.
	Version   uint64    `json:"version"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Secrets stores the apps' secrets encrypted at rest in the security
// bucket, with envelope encryption: each app has a random 256-bit data key
// (key secrets.<app>.key), stored wrapped (AES-256-GCM) by the node's
// master key with the app's name as additional data; each secret (key
// secrets.<app>.s.<NAME>) is AES-256-GCM under its app's data key with
// "app/NAME" as additional data, so a record moved to another app or name
// does not decrypt. The master key never enters the store (see
// MasterKeys). Every Get reads the store: a secret set again is seen by
// the next read. Values never appear in errors or logs.
type Secrets struct {
	kv   jetstream.KeyValue
	keys *MasterKeys

	mu   sync.Mutex
	deks map[string]cipher.AEAD // app -> its data key, unwrapped
}

// NewSecrets keeps secrets in kv (the security bucket) under keys.
func NewSecrets(kv jetstream.KeyValue, keys *MasterKeys) *Secrets {
	return &Secrets{kv: kv, keys: keys, deks: map[string]cipher.AEAD{}}
}

type dekRecord struct {
	// KeyID names the master key that wraps the data key.
	KeyID   string `json:"kid"`
	Wrapped []byte `json:"wrapped"` // nonce || ciphertext
}

type secretRecord struct {
	Version   uint64    `json:"version"`
	UpdatedAt time.Time `json:"updated_at"`
	Sealed    []byte    `json:"sealed"` // nonce || ciphertext
}

func dekKey(app string) string          { return "secrets." + app + ".key" }
func secretKey(app, name string) string { return "secrets." + app + ".s." + name }

func checkNames(app, name string) error {
	if !model.ValidName(app) {
		return fmt.Errorf("%w: %q is not an app name", ErrInvalidSecret, app)
	}
	if name != "" && !model.ValidSecretName(name) {
		return fmt.Errorf("%w: %q is not a secret name: %s", ErrInvalidSecret, name, model.SecretNameRule)
	}
	return nil
}

// Set stores value as app's secret name and returns its new version.
func (s *Secrets) Set(ctx context.Context, app, name string, value []byte) (SecretInfo, error) {
	if err := checkNames(app, name); err != nil {
		return SecretInfo{}, err
	}
	if name == "" {
		return SecretInfo{}, fmt.Errorf("%w: the secret needs a name", ErrInvalidSecret)
	}
	if len(value) == 0 || len(value) > MaxSecretBytes {
		return SecretInfo{}, fmt.Errorf("%w: a value is 1 byte to %d KiB, not %d bytes", ErrInvalidSecret, MaxSecretBytes>>10, len(value))
	}
	aead, err := s.dek(ctx, app, true)
	if err != nil {
		return SecretInfo{}, err
	}
	key := secretKey(app, name)
	for {
		rec := secretRecord{Version: 1}
		var rev uint64
		if e, err := s.kv.Get(ctx, key); err == nil {
			var old secretRecord
			if err := json.Unmarshal(e.Value(), &old); err != nil {
				return SecretInfo{}, fmt.Errorf("secret %s/%s: %w", app, name, err)
			}
			rec.Version, rev = old.Version+1, e.Revision()
		} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
			return SecretInfo{}, fmt.Errorf("read secret %s/%s: %w", app, name, err)
		}
		rec.UpdatedAt = time.Now().UTC()
		rec.Sealed = seal(aead, value, []byte(app+"/"+name))
		data, _ := json.Marshal(rec) // plain struct: never fails
		if rev == 0 {
			_, err = s.kv.Create(ctx, key, data)
		} else {
			_, err = s.kv.Update(ctx, key, data, rev)
		}
		switch {
		case err == nil:
			return SecretInfo{Name: name, Version: rec.Version, UpdatedAt: rec.UpdatedAt}, nil
		case errors.Is(err, jetstream.ErrKeyExists) || strings.Contains(err.Error(), "wrong last sequence"):
			continue // set concurrently: count from the other write
		}
		return SecretInfo{}, fmt.Errorf("store secret %s/%s: %w", app, name, err)
	}
}

// Get returns the current value of app's secret name; ok is false when it
// is not set. The caller owns the returned slice.
func (s *Secrets) Get(ctx context.Context, app, name string) (value []byte, ok bool, err error) {
	if err := checkNames(app, name); err != nil {
		return nil, false, err
	}
	e, err := s.kv.Get(ctx, secretKey(app, name))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read secret %s/%s: %w", app, name, err)
	}
	var rec secretRecord
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return nil, false, fmt.Errorf("secret %s/%s: %w", app, name, err)
	}
	aead, err := s.dek(ctx, app, false)
	if err != nil {
		return nil, false, err
	}
	v, err := open(aead, rec.Sealed, []byte(app+"/"+name))
	if err != nil {
		return nil, false, fmt.Errorf("secret %s/%s: %w", app, name, ErrSecretCrypto)
	}
	return v, true, nil
}

// List returns app's secrets, sorted by name: names, versions and times,
// never values.
func (s *Secrets) List(ctx context.Context, app string) ([]SecretInfo, error) {
	if err := checkNames(app, ""); err != nil {
		return nil, err
	}
	lister, err := s.kv.ListKeysFiltered(ctx, "secrets."+app+".s.*")
	if err != nil {
		return nil, fmt.Errorf("list secrets of %s: %w", app, err)
	}
	out := []SecretInfo{}
	for k := range lister.Keys() {
		e, err := s.kv.Get(ctx, k)
		if err != nil {
			continue // deleted meanwhile
		}
		var rec secretRecord
		if json.Unmarshal(e.Value(), &rec) != nil {
			continue
		}
		out = append(out, SecretInfo{Name: strings.TrimPrefix(k, "secrets."+app+".s."), Version: rec.Version, UpdatedAt: rec.UpdatedAt})
	}
	slices.SortFunc(out, func(a, b SecretInfo) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Delete removes app's secret name; ErrSecretNotFound if it is not set.
func (s *Secrets) Delete(ctx context.Context, app, name string) error {
	if err := checkNames(app, name); err != nil {
		return err
	}
	key := secretKey(app, name)
	if _, err := s.kv.Get(ctx, key); errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("%w: app %s has no secret %s", ErrSecretNotFound, app, name)
	}
	if err := s.kv.Purge(ctx, key); err != nil {
		return fmt.Errorf("delete secret %s/%s: %w", app, name, err)
	}
	return nil
}

// Rewrap wraps every app's data key with the current master key, those
// wrapped by a previous one (MasterKeys.Previous) included, and returns
// how many it rewrapped: the step that retires an old master key.
func (s *Secrets) Rewrap(ctx context.Context) (int, error) {
	cur, err := s.keys.current()
	if err != nil {
		return 0, err
	}
	lister, err := s.kv.ListKeysFiltered(ctx, "secrets.*.key")
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("list data keys: %w", err)
	}
	n := 0
	for k := range lister.Keys() {
		app := strings.TrimSuffix(strings.TrimPrefix(k, "secrets."), ".key")
		e, err := s.kv.Get(ctx, k)
		if err != nil {
			return n, fmt.Errorf("read data key of %s: %w", app, err)
		}
		var rec dekRecord
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			return n, fmt.Errorf("data key of %s: %w", app, err)
		}
		if rec.KeyID == cur.id {
			continue
		}
		dek, err := s.keys.unwrap(rec, app)
		if err != nil {
			return n, err
		}
		rec = dekRecord{KeyID: cur.id, Wrapped: seal(cur.aead, dek, []byte("dek/"+app))}
		data, _ := json.Marshal(rec)
		if _, err := s.kv.Update(ctx, k, data, e.Revision()); err != nil {
			return n, fmt.Errorf("rewrap data key of %s: %w", app, err)
		}
		n++
	}
	return n, nil
}

// dek returns app's data key, creating it when create is set and the app
// has none (then ok is never false).
func (s *Secrets) dek(ctx context.Context, app string, create bool) (cipher.AEAD, error) {
	s.mu.Lock()
	aead := s.deks[app]
	s.mu.Unlock()
	if aead != nil {
		return aead, nil
	}
	for {
		e, err := s.kv.Get(ctx, dekKey(app))
		if errors.Is(err, jetstream.ErrKeyNotFound) && create {
			cur, err := s.keys.current()
			if err != nil {
				return nil, err
			}
			dek := make([]byte, 32)
			rand.Read(dek) // never fails (crypto/rand, Go 1.24+)
			data, _ := json.Marshal(dekRecord{KeyID: cur.id, Wrapped: seal(cur.aead, dek, []byte("dek/"+app))})
			if _, err := s.kv.Create(ctx, dekKey(app), data); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
				return nil, fmt.Errorf("store data key of %s: %w", app, err)
			}
			continue // read back what won
		}
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, fmt.Errorf("%w: app %s has no data key", ErrSecretCrypto, app)
		}
		if err != nil {
			return nil, fmt.Errorf("read data key of %s: %w", app, err)
		}
		var rec dekRecord
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			return nil, fmt.Errorf("data key of %s: %w", app, err)
		}
		dek, err := s.keys.unwrap(rec, app)
		if err != nil {
			return nil, err
		}
		aead := newAEAD(dek)
		clear(dek)
		s.mu.Lock()
		s.deks[app] = aead
		s.mu.Unlock()
		return aead, nil
	}
}

func newAEAD(key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(err) // keys are 32 bytes by construction
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return aead
}

// seal encrypts plain with a random nonce: nonce || ciphertext.
func seal(aead cipher.AEAD, plain, ad []byte) []byte {
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plain)+aead.Overhead())
	rand.Read(nonce)
	return aead.Seal(nonce, nonce, plain, ad)
}

func open(aead cipher.AEAD, sealed, ad []byte) ([]byte, error) {
	if len(sealed) < aead.NonceSize() {
		return nil, errors.New("short ciphertext")
	}
	return aead.Open(nil, sealed[:aead.NonceSize()], sealed[aead.NonceSize():], ad)
}
