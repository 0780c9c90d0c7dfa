package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestKillAfterAnsweredStart: a start that waits for the result is
// committed lazily, with the run's first step end (workflow.StartLazy),
// but a start answered before the run ended (its wait elapsed) names the
// run, so it is durable first. Runs started with a short wait, whose
// first step lasts longer than the test, are answered unfinished; the
// node is killed at once with SIGKILL; after a restart every answered run
// exists and completes, under a given id or the one the node chose.
func TestKillAfterAnsweredStart(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary and a guest, kills and restarts a node")
	}
	tmp := t.TempDir()
	c := newCLI(t, tmp)
	data := filepath.Join(tmp, "data")
	app := filepath.Join("testdata", "killwf")
	srv, f, _ := c.up(app, data)
	client := &http.Client{Timeout: 30 * time.Second}
	token := f["admin"] // printed on the first start only
	api := func(method, path string, body any, out any) error {
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, f["API"]+path, rd)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode >= 300 {
			return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
		return json.Unmarshal(b, out)
	}

	// The first step sleeps 3s: no step end is committed before the kill.
	input := json.RawMessage(`{"steps":2,"step_ms":3000}`)
	var ids []string
	for i := range 6 {
		body := map[string]any{"input": input, "wait": "50ms"}
		if i%2 == 0 {
			body["id"] = fmt.Sprintf("answered-%d", i)
		}
		var res struct {
			Run     struct{ ID, State string }
			Created bool
		}
		if err := api("POST", "/api/v1/apps/killwf/workflows/flow/runs", body, &res); err != nil || !res.Created || res.Run.ID == "" {
			t.Fatalf("start %d: %v (created %v, %+v)", i, err, res.Created, res.Run)
		}
		if res.Run.State == "completed" {
			t.Fatalf("run %s completed within its 50ms wait: the test needs it unfinished", res.Run.ID)
		}
		ids = append(ids, res.Run.ID)
	}
	if err := srv.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	srv.Wait()
	_, f, _ = c.up(app, data)

	for _, id := range ids {
		poll(t, 60*time.Second, func() error {
			var info struct{ State, Error string }
			if err := api("GET", "/api/v1/apps/killwf/runs/"+id, nil, &info); err != nil {
				return err
			}
			if info.State == "failed" {
				t.Fatalf("run %s failed: %s", id, info.Error)
			}
			if info.State != "completed" {
				return fmt.Errorf("run %s is %s", id, info.State)
			}
			return nil
		})
	}
}
