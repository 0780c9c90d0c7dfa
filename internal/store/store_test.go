package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func testLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func openStore(t *testing.T, dir, listen string) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, Options{DataDir: dir, Listen: listen, Logger: testLogger()})
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	return s
}

func TestArtifacts(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir(), "")
	defer s.Close()

	data := []byte("\x00asm fake module bytes")
	sha, err := s.PutArtifact(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(data); sha != hex.EncodeToString(sum[:]) {
		t.Fatalf("sha = %q, want sha256 hex of the data", sha)
	}
	again, err := s.PutArtifact(ctx, data)
	if err != nil || again != sha {
		t.Fatalf("second PutArtifact = %q, %v; want %q, nil", again, err, sha)
	}
	info, err := s.artifacts.GetInfo(ctx, sha)
	if err != nil {
		t.Fatal(err)
	}
	if info.NUID == "" {
		t.Fatal("object info has no NUID")
	}
	// Idempotent: the second put did not rewrite the object.
	sha2, _ := s.PutArtifact(ctx, data)
	info2, _ := s.artifacts.GetInfo(ctx, sha2)
	if info2.NUID != info.NUID {
		t.Fatalf("artifact was rewritten: NUID %s -> %s", info.NUID, info2.NUID)
	}

	got, err := s.GetArtifact(ctx, sha)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("GetArtifact = %q, %v; want %q", got, err, data)
	}
	ok, err := s.HasArtifact(ctx, sha)
	if err != nil || !ok {
		t.Fatalf("HasArtifact = %v, %v; want true", ok, err)
	}

	missing := strings.Repeat("ab", 32)
	for _, sha := range []string{missing, "not-a-sha", "", strings.Repeat("AB", 32)} {
		if _, err := s.GetArtifact(ctx, sha); !errors.Is(err, ErrNotFound) {
			t.Errorf("GetArtifact(%q) err = %v, want ErrNotFound", sha, err)
		}
		if ok, err := s.HasArtifact(ctx, sha); ok || err != nil {
			t.Errorf("HasArtifact(%q) = %v, %v; want false, nil", sha, ok, err)
		}
	}
}

func TestLargeArtifact(t *testing.T) {
	ctx := context.Background()
	s := openStore(t, t.TempDir(), "")
	defer s.Close()
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB: spans chunks
	sha, err := s.PutArtifact(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.GetArtifact(ctx, sha)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("GetArtifact: len %d, %v; want len %d", len(got), err, len(data))
	}
}

func TestRestartKeepsData(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	var shas []string
	for i := range 3 {
		s := openStore(t, dir, "")
		// Everything written before is still there.
		for j, sha := range shas {
			got, err := s.GetArtifact(ctx, sha)
			if err != nil || string(got) != "artifact "+string(rune('a'+j)) {
				t.Fatalf("round %d: artifact %d = %q, %v", i, j, got, err)
			}
			e, err := s.Registry().Get(ctx, "k"+string(rune('a'+j)))
			if err != nil || string(e.Value()) != "v" {
				t.Fatalf("round %d: registry key %d: %v", i, j, err)
			}
			if _, err := s.Security().Get(ctx, "k"+string(rune('a'+j))); err != nil {
				t.Fatalf("round %d: security key %d: %v", i, j, err)
			}
		}
		sha, err := s.PutArtifact(ctx, []byte("artifact "+string(rune('a'+i))))
		if err != nil {
			t.Fatal(err)
		}
		shas = append(shas, sha)
		key := "k" + string(rune('a'+i))
		if _, err := s.Registry().Put(ctx, key, []byte("v")); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Security().Put(ctx, key, []byte("v")); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("round %d: Close: %v", i, err)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("round %d: second Close: %v", i, err)
		}
	}
}

func TestDataDirLocked(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, "")
	_, err := Open(context.Background(), Options{DataDir: dir, Logger: testLogger()})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open err = %v, want ErrLocked", err)
	}
	if !strings.Contains(err.Error(), "another nimbus up") || !strings.Contains(err.Error(), dir) {
		t.Errorf("error %q should say another nimbus up uses %s", err, dir)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Released on Close.
	s = openStore(t, dir, "")
	s.Close()
}

func TestListen(t *testing.T) {
	s := openStore(t, t.TempDir(), "127.0.0.1:0")
	defer s.Close()
	url := s.ClientURL()
	if !strings.HasPrefix(url, "nats://127.0.0.1:") || strings.HasSuffix(url, ":0") || strings.HasSuffix(url, ":-1") {
		t.Fatalf("ClientURL = %q, want nats://127.0.0.1:<port>", url)
	}
	nc := connectWithSeed(t, url, s.ClientSeedFile())
	defer nc.Close()
	sub, err := s.Conn().SubscribeSync("hello")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("hello", []byte("world")); err != nil {
		t.Fatal(err)
	}
	msg, err := sub.NextMsg(5 * time.Second)
	if err != nil || string(msg.Data) != "world" {
		t.Fatalf("NextMsg = %v, %v", msg, err)
	}
}

func TestNoListener(t *testing.T) {
	s := openStore(t, t.TempDir(), "")
	defer s.Close()
	if url := s.ClientURL(); url != "" {
		t.Errorf("ClientURL = %q, want empty", url)
	}
	if addr := s.ns.Addr(); addr != nil {
		t.Errorf("server listens on %v, want no listener", addr)
	}
	if !s.Conn().IsConnected() {
		t.Error("in-process connection is not connected")
	}
}

func TestOpenErrors(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"no data dir", Options{}, "data directory is required"},
		{"bad listen", Options{DataDir: t.TempDir(), Listen: "nope"}, "listen address"},
		{"bad port", Options{DataDir: t.TempDir(), Listen: "127.0.0.1:99999"}, "port must be"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Logger = testLogger()
			_, err := Open(context.Background(), tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open err = %v, want containing %q", err, tt.want)
			}
		})
	}
}

func TestListenPortInUse(t *testing.T) {
	a := openStore(t, t.TempDir(), "127.0.0.1:0")
	defer a.Close()
	addr := strings.TrimPrefix(a.ClientURL(), "nats://")
	_, err := Open(context.Background(), Options{DataDir: t.TempDir(), Listen: addr, Logger: testLogger()})
	if err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("Open on a port in use: err = %v, want an error naming %s", err, addr)
	}
}
