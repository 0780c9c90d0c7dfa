package security_test

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"path/filepath"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/security"
)

// BenchmarkSecretGet is a secret read as a function's nimbus.Secret makes
// it (one JetStream KV read, the record decoded, AES-GCM open with the
// app's cached data key), beside its two parts measured alone: the raw KV
// read of the same record, and the AES-GCM open of a value of the same
// size.
//
//	go test -run '^$' -bench SecretGet ./internal/security
func BenchmarkSecretGet(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	st := openStore(b, filepath.Join(dir, "data"))
	sec := security.NewSecrets(st.Security(), security.NewMasterKeys(security.MasterKeyConfig{File: filepath.Join(dir, "keys", "master.key")}))
	value := []byte("sk_live_0123456789abcdefghijklmnopqrstuv")
	if _, err := sec.Set(ctx, "shop", "STRIPE_KEY", value); err != nil {
		b.Fatal(err)
	}
	b.Run("secrets", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok, err := sec.Get(ctx, "shop", "STRIPE_KEY"); err != nil || !ok {
				b.Fatal(err)
			}
		}
	})
	b.Run("raw-kv-get", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := st.Security().Get(ctx, "secrets.shop.s.STRIPE_KEY"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("raw-aes-gcm-open", func(b *testing.B) {
		key := make([]byte, 32)
		rand.Read(key)
		block, _ := aes.NewCipher(key)
		aead, _ := cipher.NewGCM(block)
		nonce := make([]byte, aead.NonceSize())
		sealed := aead.Seal(nil, nonce, value, []byte("shop/STRIPE_KEY"))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := aead.Open(nil, nonce, sealed, []byte("shop/STRIPE_KEY")); err != nil {
				b.Fatal(err)
			}
		}
	})
}
