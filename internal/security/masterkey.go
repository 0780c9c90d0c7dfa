package security

import (
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// MasterKeyConfig says where a node's master key comes from.
type MasterKeyConfig struct {
	// Key is the master key itself, 32 bytes (the server reads it from
	// NIMBUS_MASTER_KEY, base64). When set, File is not read.
	Key []byte
	// File holds the master key, base64 on one line. When it does not
	// exist it is created, with a fresh random key, mode 0600 in a
	// directory of mode 0700, the first time a secret needs it. A file
	// that others may read is refused.
	File string
	// PreviousFiles hold master keys being retired: data keys they wrap
	// still open, and Secrets.Rewrap moves them to the current key.
	PreviousFiles []string
}

// MasterKeys is a node's master key and the previous ones it can still
// open. Nothing is read or generated until a secret needs it, so a node
// that never stores a secret never creates a key.
type MasterKeys struct {
	cfg MasterKeyConfig

	once sync.Once
	cur  *masterKey
	prev map[string]*masterKey // by id
	err  error
}

type masterKey struct {
	id   string // hex of the first 8 bytes of sha256(key): which key wraps a data key, not the key
	aead cipher.AEAD
}

// NewMasterKeys returns the keys cfg names; they are loaded on first use.
func NewMasterKeys(cfg MasterKeyConfig) *MasterKeys {
	return &MasterKeys{cfg: cfg}
}

// ParseMasterKey decodes a master key as NIMBUS_MASTER_KEY and key files
// hold it: 32 bytes in standard base64.
func ParseMasterKey(s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != 32 {
		return nil, errors.New("a master key is 32 random bytes in base64 (44 characters); make one with `head -c 32 /dev/urandom | base64`")
	}
	return b, nil
}

func (k *MasterKeys) load() {
	k.prev = map[string]*masterKey{}
	key := k.cfg.Key
	if key == nil {
		if k.cfg.File == "" {
			k.err = errors.New("no master key: give one with --master-key-file or NIMBUS_MASTER_KEY")
			return
		}
		key, k.err = readOrCreateKey(k.cfg.File)
		if k.err != nil {
			return
		}
	} else if len(key) != 32 {
		k.err = errors.New("the master key must be 32 bytes")
		return
	}
	k.cur = newMasterKey(key)
	for _, f := range k.cfg.PreviousFiles {
		b, err := readKey(f)
		if err != nil {
			k.err = err
			return
		}
		mk := newMasterKey(b)
		k.prev[mk.id] = mk
	}
}

func newMasterKey(key []byte) *masterKey {
	h := sha256.Sum256(key)
	return &masterKey{id: hex.EncodeToString(h[:8]), aead: newAEAD(key)}
}

func (k *MasterKeys) current() (*masterKey, error) {
	k.once.Do(k.load)
	if k.err != nil {
		return nil, fmt.Errorf("master key: %w", k.err)
	}
	return k.cur, nil
}

// unwrap opens a data key of app wrapped by the current or a previous key.
func (k *MasterKeys) unwrap(rec dekRecord, app string) ([]byte, error) {
	cur, err := k.current()
	if err != nil {
		return nil, err
	}
	mk := cur
	if rec.KeyID != cur.id {
		if mk = k.prev[rec.KeyID]; mk == nil {
			return nil, fmt.Errorf("%w: the data key of app %s is wrapped by master key %s, which this node does not have (give it with --master-key-previous)", ErrSecretCrypto, app, rec.KeyID)
		}
	}
	dek, err := open(mk.aead, rec.Wrapped, []byte("dek/"+app))
	if err != nil || len(dek) != 32 {
		return nil, fmt.Errorf("%w: the data key of app %s does not open with master key %s", ErrSecretCrypto, app, rec.KeyID)
	}
	return dek, nil
}

func readKey(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("master key file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("master key file %s has mode %04o: others may read it; chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("master key file: %w", err)
	}
	key, err := ParseMasterKey(string(b))
	if err != nil {
		return nil, fmt.Errorf("master key file %s: %w", path, err)
	}
	return key, nil
}

func readOrCreateKey(path string) ([]byte, error) {
	key, err := readKey(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("master key directory: %w", err)
	}
	key = make([]byte, 32)
	rand.Read(key) // never fails (crypto/rand, Go 1.24+)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return readKey(path) // another process made it first
	}
	if err != nil {
		return nil, fmt.Errorf("create master key file: %w", err)
	}
	_, err = f.WriteString(base64.StdEncoding.EncodeToString(key) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("write master key file: %w", err)
	}
	return key, nil
}
