package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbus-dev/nimbus/internal/audit"
	"github.com/nimbus-dev/nimbus/internal/store"
)

// TestAuditVerifyAfterKill kills a real `nimbus up` with SIGKILL while
// clients create and revoke keys (each an audited action) as fast as the
// node answers, restarts it on the same data directory, and checks that
// `nimbus audit verify` passes and that every key the node acknowledged
// has its audit entry. Then the stream is tampered with, as someone with
// the node's files would (the node stopped): an entry edited in place, or
// one removed, and `audit verify` exits 1 naming that entry.
func TestAuditVerifyAfterKill(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary, kills and restarts a node")
	}
	tmp := t.TempDir()
	c := newCLI(t, tmp)
	data := filepath.Join(tmp, "data")
	srv, f, stderr := c.up(tmp, data)
	api, admin := f["API"], f["admin"]
	if api == "" || admin == "" {
		t.Fatalf("no API URL or admin token in:\n%s", f["out"])
	}

	// Two clients: create a key, revoke it, again. The ids of the keys
	// whose creation was answered 201 must be in the log after the kill.
	client := &http.Client{Timeout: 10 * time.Second}
	var (
		mu    sync.Mutex
		acked []string
		stop  = make(chan struct{})
		wg    sync.WaitGroup
	)
	enough := make(chan struct{})
	var once sync.Once
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id, err := createKey(client, api, admin, fmt.Sprintf("burst-%d-%d", w, i))
				if err != nil {
					return // the node is gone
				}
				mu.Lock()
				acked = append(acked, id)
				if len(acked) >= 40 {
					once.Do(func() { close(enough) })
				}
				mu.Unlock()
				if revokeKey(client, api, admin, id) != nil {
					return
				}
			}
		}()
	}
	select {
	case <-enough:
	case <-time.After(2 * time.Minute):
		t.Fatalf("40 keys were not created in 2 minutes\n%s", stderr)
	}
	if err := srv.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	srv.Wait()
	if ws, ok := srv.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("nimbus up did not die of SIGKILL: %v", srv.ProcessState)
	}
	close(stop)
	wg.Wait()

	srv2, _, _ := c.up(tmp, data)
	out, err := c.run("audit", "verify")
	if err != nil || !strings.Contains(out, "audit log verified:") {
		t.Fatalf("audit verify after the kill: %v\n%s", err, out)
	}
	out, err = c.run("audit", "ls", "--action", "key.create", "--json")
	var entries []audit.Entry
	if err != nil || json.Unmarshal([]byte(out), &entries) != nil {
		t.Fatalf("audit ls: %v\n%s", err, out)
	}
	logged := map[string]bool{}
	for _, e := range entries {
		logged[e.Target] = true
	}
	mu.Lock()
	for _, id := range acked {
		if !logged[id] {
			t.Errorf("key %s was acknowledged before the kill but its key.create is not in the audit log", id)
		}
	}
	t.Logf("%d keys acknowledged before the kill; %d key.create entries after the restart", len(acked), len(entries))
	mu.Unlock()
	var rep audit.Report
	out, err = c.run("audit", "verify", "--json")
	if err != nil || json.Unmarshal([]byte(out), &rep) != nil || rep.Entries < len(acked) {
		t.Fatalf("audit verify --json: %v\n%s", err, out)
	}

	// Stop the node; keep a copy of its data to tamper with in another way.
	srv2.Process.Signal(syscall.SIGKILL)
	srv2.Wait()
	data2 := filepath.Join(tmp, "data2")
	if out, err := exec.Command("cp", "-a", data, data2).CombinedOutput(); err != nil {
		t.Fatalf("copy the data directory: %v\n%s", err, out)
	}
	edited, removed := uint64(rep.Entries/2), uint64(rep.Entries/3)
	tamper(t, data, func(e map[string]any, raw []byte) ([]byte, bool) {
		if uint64(e["seq"].(float64)) == edited {
			return bytes.Replace(raw, []byte(`"actor":"`), []byte(`"actor":"someone else, not `), 1), true
		}
		return raw, true
	})
	tamper(t, data2, func(e map[string]any, raw []byte) ([]byte, bool) {
		return raw, uint64(e["seq"].(float64)) != removed
	})

	for _, tc := range []struct {
		data, want string
	}{
		{data, fmt.Sprintf("audit log BROKEN at entry %d (stream sequence %d): entry %d was altered", edited, edited, edited)},
		{data2, fmt.Sprintf("audit log BROKEN at entry %d (stream sequence %d): entry %d is missing", removed, removed, removed)},
	} {
		srv, f, _ := c.up(tmp, tc.data)
		// The copy's admin token is the original's; the CLI config knows
		// it for the original directory only.
		env := []string{"NIMBUS_URL=" + f["API"], "NIMBUS_TOKEN=" + admin}
		stdout, stderr, err := c.runWith(env, "audit", "verify")
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(stdout, tc.want) {
			t.Fatalf("audit verify of %s: %v\n%s%s\nwant %q", filepath.Base(tc.data), err, stdout, stderr, tc.want)
		}
		srv.Process.Signal(syscall.SIGKILL)
		srv.Wait()
	}
}

// createKey creates a read key through the API and returns its id.
func createKey(client *http.Client, api, admin, name string) (string, error) {
	body, _ := json.Marshal(map[string]any{"name": name, "scopes": []string{"read"}})
	req, _ := http.NewRequest(http.MethodPost, api+"/api/v1/tokens", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+admin)
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var created struct {
		ID string `json:"id"`
	}
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(b, &created) != nil || created.ID == "" {
		return "", fmt.Errorf("create key: %d %s", resp.StatusCode, b)
	}
	return created.ID, nil
}

func revokeKey(client *http.Client, api, admin, id string) error {
	req, _ := http.NewRequest(http.MethodDelete, api+"/api/v1/tokens/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+admin)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("revoke key %s: %d", id, resp.StatusCode)
	}
	return nil
}

// tamper rewrites the audit stream of the stopped node's data directory
// with what edit makes of each entry (false drops it), keeping each
// entry's stored hash header, as someone with the node's files could.
// The stream denies deletes and purges, so it is made again.
func tamper(t *testing.T, data string, edit func(e map[string]any, raw []byte) ([]byte, bool)) {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, store.Options{DataDir: data, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	js := st.JetStream()
	s, err := js.Stream(ctx, audit.Stream)
	if err != nil {
		t.Fatal(err)
	}
	info := s.CachedInfo()
	var msgs []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	if err := js.DeleteStream(ctx, audit.Stream); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, info.Config); err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		var e map[string]any
		if err := json.Unmarshal(m.Data, &e); err != nil {
			t.Fatal(err)
		}
		data, keep := edit(e, m.Data)
		if !keep {
			continue
		}
		h := nats.Header{audit.HeaderHash: []string{m.Header.Get(audit.HeaderHash)}}
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: audit.Subject, Data: data, Header: h}); err != nil {
			t.Fatal(err)
		}
	}
}
