package security_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/security"
)

func TestSecretsEnvelope(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st := openStore(t, filepath.Join(dir, "data"))
	keyFile := filepath.Join(dir, "keys", "master.key")
	sec := security.NewSecrets(st.Security(), security.NewMasterKeys(security.MasterKeyConfig{File: keyFile}))
	if _, err := os.Stat(keyFile); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the master key exists before any secret: %v", err)
	}
	value := []byte("sk_live_TESTVALUE_9f8e7d")
	info, err := sec.Set(ctx, "shop", "STRIPE_KEY", value)
	if err != nil || info.Version != 1 {
		t.Fatalf("Set = %+v, %v", info, err)
	}
	fi, err := os.Stat(keyFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("master key file: %v, %v", fi, err)
	}
	got, ok, err := sec.Get(ctx, "shop", "STRIPE_KEY")
	if err != nil || !ok || !bytes.Equal(got, value) {
		t.Fatalf("Get = %q, %v, %v", got, ok, err)
	}
	// At rest, nothing holds the value in clear.
	lister, _ := st.Security().ListKeys(ctx)
	for k := range lister.Keys() {
		e, _ := st.Security().Get(ctx, k)
		if bytes.Contains(e.Value(), value) || bytes.Contains([]byte(k), value) {
			t.Fatalf("record %s holds the value in clear", k)
		}
	}
	// Rotation without redeploy: the next read sees the new value.
	if info, err := sec.Set(ctx, "shop", "STRIPE_KEY", []byte("v2")); err != nil || info.Version != 2 {
		t.Fatalf("Set again = %+v, %v", info, err)
	}
	if got, _, _ := sec.Get(ctx, "shop", "STRIPE_KEY"); string(got) != "v2" {
		t.Fatalf("after set: %q", got)
	}
	list, err := sec.List(ctx, "shop")
	if err != nil || len(list) != 1 || list[0].Name != "STRIPE_KEY" || list[0].Version != 2 {
		t.Fatalf("List = %+v, %v", list, err)
	}
	if _, ok, err := sec.Get(ctx, "other", "STRIPE_KEY"); ok || err != nil {
		t.Fatalf("another app's read: %v, %v", ok, err)
	}
	// A record copied to another name does not decrypt (the name is
	// additional data).
	e, _ := st.Security().Get(ctx, "secrets.shop.s.STRIPE_KEY")
	st.Security().Put(ctx, "secrets.shop.s.OTHER", e.Value())
	if _, _, err := sec.Get(ctx, "shop", "OTHER"); !errors.Is(err, security.ErrSecretCrypto) {
		t.Fatalf("moved record: err = %v, want ErrSecretCrypto", err)
	}
	if err := sec.Delete(ctx, "shop", "STRIPE_KEY"); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := sec.Get(ctx, "shop", "STRIPE_KEY"); ok {
		t.Fatal("deleted secret still reads")
	}
	if err := sec.Delete(ctx, "shop", "STRIPE_KEY"); !errors.Is(err, security.ErrSecretNotFound) {
		t.Fatalf("delete again: %v", err)
	}
	for _, c := range []struct{ app, name string }{{"Shop", "A"}, {"shop", "a-b"}, {"shop", ""}} {
		if _, err := sec.Set(ctx, c.app, c.name, []byte("x")); !errors.Is(err, security.ErrInvalidSecret) {
			t.Errorf("Set(%q, %q): %v", c.app, c.name, err)
		}
	}
}

// TestMasterKeyRotation: a new master key with the old one as previous
// opens every secret, Rewrap moves the data keys, and then the old key is
// no longer needed; a node with the wrong key cannot read.
func TestMasterKeyRotation(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st := openStore(t, filepath.Join(dir, "data"))
	oldFile, newFile := filepath.Join(dir, "old.key"), filepath.Join(dir, "new.key")
	old := security.NewSecrets(st.Security(), security.NewMasterKeys(security.MasterKeyConfig{File: oldFile}))
	if _, err := old.Set(ctx, "shop", "K", []byte("value-1")); err != nil {
		t.Fatal(err)
	}
	wrong := security.NewSecrets(st.Security(), security.NewMasterKeys(security.MasterKeyConfig{File: newFile}))
	if _, _, err := wrong.Get(ctx, "shop", "K"); !errors.Is(err, security.ErrSecretCrypto) {
		t.Fatalf("another master key: err = %v, want ErrSecretCrypto", err)
	}
	rotating := security.NewSecrets(st.Security(), security.NewMasterKeys(security.MasterKeyConfig{File: newFile, PreviousFiles: []string{oldFile}}))
	if n, err := rotating.Rewrap(ctx); err != nil || n != 1 {
		t.Fatalf("Rewrap = %d, %v", n, err)
	}
	after := security.NewSecrets(st.Security(), security.NewMasterKeys(security.MasterKeyConfig{File: newFile}))
	if v, ok, err := after.Get(ctx, "shop", "K"); err != nil || !ok || string(v) != "value-1" {
		t.Fatalf("after rotation: %q, %v, %v", v, ok, err)
	}
	os.Chmod(newFile, 0o644)
	loose := security.NewSecrets(st.Security(), security.NewMasterKeys(security.MasterKeyConfig{File: newFile}))
	if _, _, err := loose.Get(ctx, "shop", "K"); err == nil || !bytes.Contains([]byte(err.Error()), []byte("chmod 600")) {
		t.Fatalf("key file readable by others: err = %v", err)
	}
}
