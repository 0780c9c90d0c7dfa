//go:build linux

package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/api"
	"github.com/nimbus-dev/nimbus/internal/apierror"
	"github.com/nimbus-dev/nimbus/internal/guesttest"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/server"
	"github.com/nimbus-dev/nimbus/internal/store"
)

// TestDiskFullAnswers507 runs a node on a small real filesystem (a tmpfs;
// it needs root, which CI has) and fills it: a publish gets 507 disk_full
// saying what to do, a deploy is refused the same way, and once space is
// freed publishes are accepted again by the same node.
func TestDiskFullAnswers507(t *testing.T) {
	disk := t.TempDir()
	if err := syscall.Mount("tmpfs", disk, "tmpfs", 0, "size=256m"); err != nil {
		t.Skipf("cannot mount a small filesystem for the test (needs root): %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(disk, syscall.MNT_DETACH) })
	counter := guesttest.MustBuild(t, counterDir, guesttest.Reactor)
	srv, err := server.Start(context.Background(), server.Config{
		DataDir: filepath.Join(disk, "data"), CacheDir: cacheDir, Listen: "127.0.0.1:0", APIListen: "127.0.0.1:0",
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		DiskReserve: 32 << 20,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close(context.Background()) })
	if _, err := srv.PutArtifact(context.Background(), counter); err != nil {
		t.Fatal(err)
	}
	topics := []model.Topic{{Name: "orders", MaxEventBytes: 1 << 16, RetentionMS: 3_600_000},
		{Name: model.DeadLetterTopic, MaxEventBytes: 1 << 20, RetentionMS: 3_600_000}}
	spec := model.Spec{Functions: []model.Function{fn("sub", counter)}, Topics: topics}
	if _, _, err := srv.Deploy(context.Background(), "shop", spec); err != nil {
		t.Fatal(err)
	}
	n := 0
	post := func() (int, apierror.Body) {
		n++
		resp, err := http.Post(srv.GatewayURL()+"/_nimbus/events/shop/orders", "application/cloudevents+json",
			strings.NewReader(fmt.Sprintf(`{"specversion":"1.0","id":"e%d","source":"/s","type":"t"}`, n)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b apierror.Body
		json.NewDecoder(resp.Body).Decode(&b)
		return resp.StatusCode, b
	}
	if code, b := post(); code != http.StatusAccepted {
		t.Fatalf("publish on a disk with room: %d %+v", code, b.Error)
	}

	var st syscall.Statfs_t
	if err := syscall.Statfs(disk, &st); err != nil {
		t.Fatal(err)
	}
	filler := filepath.Join(disk, "filler")
	if err := os.WriteFile(filler, make([]byte, int64(st.Bavail)*st.Bsize-16<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	code, b := post()
	for deadline := time.Now().Add(30 * time.Second); code == http.StatusAccepted && time.Now().Before(deadline); {
		code, b = post() // accepted until the store reads the free space again
	}
	if code != http.StatusInsufficientStorage || b.Error == nil || b.Error.Code != "disk_full" ||
		!strings.Contains(b.Error.Message, "Free space on that filesystem") {
		t.Fatalf("publish with 16 MiB free, 32 MiB reserve: %d %+v", code, b.Error)
	}
	if _, _, err := srv.Deploy(context.Background(), "other", spec); !errors.Is(err, store.ErrDiskFull) {
		t.Fatalf("deploy on a full disk: %v, want ErrDiskFull", err)
	}
	// The operator sees it: the status API and the metrics.
	status := func() api.Status {
		_, _, _, raw := apiCall(t, srv, srv.AdminToken(), "GET", "/api/v1/status", nil)
		var st api.Status
		if err := json.Unmarshal(raw, &st); err != nil || st.Storage == nil {
			t.Fatalf("status %s: %v", raw, err)
		}
		return st
	}
	if st := status(); st.Storage.State != "disk_full" || st.Storage.FreeBytes >= st.Storage.ReserveBytes ||
		!strings.Contains(st.Storage.Message, "Free space on that filesystem") {
		t.Fatalf("status on a full disk: %+v", *st.Storage)
	}
	_, metrics, _ := get(t, srv.APIURL()+"/metrics")
	for _, m := range []string{"nimbus_store_free_bytes ", "nimbus_store_reserve_bytes 3.3554432e+07", "nimbus_store_stopped_streams 0"} {
		if !strings.Contains(metrics, m) {
			t.Errorf("/metrics lacks %q", m)
		}
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); code != http.StatusAccepted && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		code, b = post()
	}
	if code != http.StatusAccepted {
		t.Fatalf("publish after space was freed: %d %+v", code, b.Error)
	}
	if st := status(); st.Storage.State != "ok" || st.Storage.Message != "" {
		t.Fatalf("status after space was freed: %+v", *st.Storage)
	}
	// A tenant's key does not see the node's disk.
	_, _, _, raw := apiCall(t, srv, tenantKey(t, srv, "team-a"), "GET", "/api/v1/status", nil)
	if strings.Contains(string(raw), "storage") {
		t.Fatalf("a tenant's status shows the node's storage: %s", raw)
	}
}
