package store

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// BenchmarkPublish measures one acknowledged JetStream publish (a 200-byte
// message, one at a time) on a file stream in the three durability modes
// that matter for docs/storage.md:
//
//   - sync_always: the server runs with SyncAlways (what Open does); every
//     acknowledged publish is fsynced.
//   - sync_default: nats-server's default (fsync every 2 minutes).
//   - sync_always_async_stream: SyncAlways server, stream in async persist
//     mode (what NIMBUS_LOGS does).
//
// Run: go test -run '^$' -bench BenchmarkPublish -benchtime 2s -count 3 ./internal/store/
func BenchmarkPublish(b *testing.B) {
	cases := []struct {
		name       string
		syncAlways bool
		persist    jetstream.PersistModeType
	}{
		{"sync_always", true, jetstream.DefaultPersistMode},
		{"sync_default", false, jetstream.DefaultPersistMode},
		{"sync_always_async_stream", true, jetstream.AsyncPersistMode},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			js := benchServer(b, c.syncAlways)
			ctx := context.Background()
			if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
				Name: "BENCH", Subjects: []string{"bench.>"}, Storage: jetstream.FileStorage, PersistMode: c.persist,
			}); err != nil {
				b.Fatal(err)
			}
			msg := make([]byte, 200)
			b.ResetTimer()
			for b.Loop() {
				if _, err := js.Publish(ctx, "bench.x", msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func benchServer(b *testing.B, syncAlways bool) jetstream.JetStream {
	b.Helper()
	ns, err := server.NewServer(&server.Options{
		JetStream: true, StoreDir: filepath.Join(b.TempDir(), "js"), SyncAlways: syncAlways,
		DontListen: true, NoSigs: true, NoLog: true,
	})
	if err != nil {
		b.Fatal(err)
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		b.Fatal("server not ready")
	}
	nc, err := nats.Connect("", nats.InProcessServer(ns))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		nc.Close()
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	return js
}
