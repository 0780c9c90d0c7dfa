package store

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// ClientSeedFile is the file under the data directory that holds the NKey
// seed external NATS clients authenticate with when the server listens
// (Options.Listen). It is created on the first such start, with mode 0600,
// and reused on every later one.
const ClientSeedFile = "nats-client.nk"

// ErrSeedFile means the client seed file cannot be used: it is unreadable,
// not a user NKey seed, or readable by users other than its owner.
var ErrSeedFile = errors.New("NATS client seed file unusable")

// auth is who may connect to the embedded server. Every connection must
// authenticate with an NKey (challenge-response: the seed never crosses the
// wire); anonymous connections are refused.
type auth struct {
	// internal signs the in-process connection's challenge. It is made
	// fresh on every Open and never written anywhere.
	internal nkeys.KeyPair
	// clientPub is the public key of ClientSeedFile; "" when the server
	// does not listen (no external client can reach it).
	clientPub string
	// seedPath is the absolute path of ClientSeedFile, "" when not
	// listening.
	seedPath string
}

// newAuth makes the in-process identity and, when listen is set, loads or
// creates the external clients' seed under dataDir.
func newAuth(dataDir string, listen bool) (*auth, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, fmt.Errorf("create in-process NKey: %w", err)
	}
	a := &auth{internal: kp}
	if !listen {
		return a, nil
	}
	a.seedPath = filepath.Join(dataDir, ClientSeedFile)
	a.clientPub, err = loadOrCreateSeed(a.seedPath)
	if err != nil {
		return nil, err
	}
	return a, nil
}

// configure requires an NKey of every client of sopts.
func (a *auth) configure(sopts *server.Options) error {
	pub, err := a.internal.PublicKey()
	if err != nil {
		return fmt.Errorf("in-process NKey: %w", err)
	}
	sopts.Nkeys = []*server.NkeyUser{{Nkey: pub}}
	if a.clientPub != "" {
		sopts.Nkeys = append(sopts.Nkeys, &server.NkeyUser{Nkey: a.clientPub})
	}
	return nil
}

// connectOption authenticates the in-process connection.
func (a *auth) connectOption() (nats.Option, error) {
	pub, err := a.internal.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("in-process NKey: %w", err)
	}
	return nats.Nkey(pub, a.internal.Sign), nil
}

// loadOrCreateSeed returns the public key of the user seed at path,
// creating the seed (mode 0600) if the file does not exist.
func loadOrCreateSeed(path string) (string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return createSeed(path)
	}
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrSeedFile, err)
	}
	if runtime.GOOS != "windows" {
		fi, err := os.Stat(path)
		if err != nil {
			return "", fmt.Errorf("%w: %w", ErrSeedFile, err)
		}
		if perm := fi.Mode().Perm(); perm&0o077 != 0 {
			return "", fmt.Errorf("%w: %s has mode %04o, so other users can read the key to the store: run `chmod 600 %s`",
				ErrSeedFile, path, perm, path)
		}
	}
	kp, err := nkeys.FromSeed(bytes.TrimSpace(data))
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w (delete it to have a new one generated, then update the clients that use it)", ErrSeedFile, path, err)
	}
	defer kp.Wipe()
	pub, err := kp.PublicKey()
	if err != nil || !nkeys.IsValidPublicUserKey(pub) {
		return "", fmt.Errorf("%w: %s is not a user NKey seed (it should start with SU); delete it to have a new one generated", ErrSeedFile, path)
	}
	return pub, nil
}

// createSeed writes a new user seed to path, atomically (temporary file,
// fsync, rename), readable by its owner only.
func createSeed(path string) (string, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return "", fmt.Errorf("create NATS client NKey: %w", err)
	}
	defer kp.Wipe()
	seed, err := kp.Seed()
	if err != nil {
		return "", fmt.Errorf("create NATS client NKey: %w", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return "", fmt.Errorf("create NATS client NKey: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+ClientSeedFile+".*") // mode 0600
	if err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op after the rename
	_, err = f.Write(append(seed, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return pub, nil
}
