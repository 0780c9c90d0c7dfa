package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// connectWithSeed connects to url as an external client authenticating
// with the NKey seed file at seed, the way docs/storage.md tells users to.
func connectWithSeed(t *testing.T, url, seed string) *nats.Conn {
	t.Helper()
	opt, err := nats.NkeyOptionFromSeed(seed)
	if err != nil {
		t.Fatalf("NkeyOptionFromSeed(%s): %v", seed, err)
	}
	nc, err := nats.Connect(url, opt, nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("connect to %s with %s: %v", url, seed, err)
	}
	return nc
}

// TestListenRequiresAuth: a listener refuses anonymous clients and admits
// the holder of the seed file, which is private to its owner and the same
// across restarts.
func TestListenRequiresAuth(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, "127.0.0.1:0")
	url, seed := s.ClientURL(), s.ClientSeedFile()
	if want := filepath.Join(dir, ClientSeedFile); seed != want {
		t.Fatalf("ClientSeedFile = %q, want %q", seed, want)
	}
	fi, err := os.Stat(seed)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("%s mode = %04o, want 0600", seed, perm)
	}
	first, err := os.ReadFile(seed)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(first), "SU") {
		t.Errorf("seed file holds %.2q..., want a user NKey seed (SU...)", first)
	}

	for name, opts := range map[string][]nats.Option{
		"anonymous":  nil,
		"user/pass":  {nats.UserInfo("nimbus", "nimbus")},
		"token":      {nats.Token("nimbus")},
		"other nkey": {otherNkey(t)},
	} {
		nc, err := nats.Connect(url, append(opts, nats.Timeout(5*time.Second), nats.NoReconnect())...)
		if err == nil {
			nc.Close()
			t.Errorf("%s connection to %s accepted, want refused", name, url)
		} else if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
			t.Errorf("%s connection err = %v, want an authorization error", name, err)
		}
	}

	// The seed's holder can use everything, JetStream included.
	nc := connectWithSeed(t, url, seed)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.KeyValue(ctx, RegistryBucket); err != nil {
		t.Errorf("external client: KeyValue(%s): %v", RegistryBucket, err)
	}
	nc.Close()
	s.Close()

	// Restart: the same seed, still accepted.
	s = openStore(t, dir, "127.0.0.1:0")
	defer s.Close()
	again, err := os.ReadFile(seed)
	if err != nil || string(again) != string(first) {
		t.Fatalf("seed after restart = %q, %v; want it unchanged", again, err)
	}
	connectWithSeed(t, s.ClientURL(), seed).Close()
}

func otherNkey(t *testing.T) nats.Option {
	t.Helper()
	path := filepath.Join(t.TempDir(), "other.nk")
	if _, err := createSeed(path); err != nil {
		t.Fatal(err)
	}
	opt, err := nats.NkeyOptionFromSeed(path)
	if err != nil {
		t.Fatal(err)
	}
	return opt
}

// TestNoListenerNoSeed: without a listener no seed file is written.
func TestNoListenerNoSeed(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, "")
	defer s.Close()
	if got := s.ClientSeedFile(); got != "" {
		t.Errorf("ClientSeedFile = %q, want empty", got)
	}
	if _, err := os.Stat(filepath.Join(dir, ClientSeedFile)); !os.IsNotExist(err) {
		t.Errorf("stat %s: %v, want not exist", ClientSeedFile, err)
	}
}

// TestSeedFileRefused: a seed readable by others, or not a seed, stops
// Open with an error that says how to fix it.
func TestSeedFileRefused(t *testing.T) {
	tests := []struct {
		name    string
		content string
		mode    os.FileMode
		want    string
	}{
		{"readable by others", "", 0o644, "chmod 600"},
		{"garbage", "not a seed\n", 0o600, "delete it"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, ClientSeedFile)
			if tt.content == "" {
				if _, err := createSeed(path); err != nil {
					t.Fatal(err)
				}
			} else if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tt.mode); err != nil {
				t.Fatal(err)
			}
			_, err := Open(context.Background(), Options{DataDir: dir, Listen: "127.0.0.1:0", Logger: testLogger()})
			if !errors.Is(err, ErrSeedFile) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open err = %v, want ErrSeedFile saying %q", err, tt.want)
			}
		})
	}
}
