// Command ledgerguest is the workflow of TestKillLedgerExactlyOnce: Steps
// steps, each POSTing to the loopback ledger at URL (outbound HTTP through
// the host, nimbus.Fetch) with the step's idempotency key, and returning
// the sequence number the ledger gave that key. A step cut by a kill runs
// again with the same key; the ledger answers it as a duplicate with the
// first sequence number.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	nimbus "github.com/nimbus-dev/nimbus/sdk/go"
)

// In is a run's input.
type In struct {
	URL   string `json:"url"`
	Steps int    `json:"steps"`
}

// Out is a run's result: the ledger's sequence number of each step's key,
// as journaled.
type Out struct {
	Seqs []uint64 `json:"seqs"`
}

// post applies key at the ledger and returns its sequence number.
func post(url, key string) (uint64, error) {
	req, err := http.NewRequest(http.MethodPost, url, nil)
	if err != nil {
		return 0, nimbus.NonRetryable(err)
	}
	req.Header.Set("Idempotency-Key", key)
	resp, err := nimbus.Fetch(req)
	if err != nil {
		return 0, err
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("ledger: %d %s", resp.StatusCode, b)
	}
	var ans struct{ Seq uint64 }
	if err := json.Unmarshal(b, &ans); err != nil || ans.Seq == 0 {
		return 0, fmt.Errorf("ledger answered %q", b)
	}
	return ans.Seq, nil
}

func run(wf *nimbus.Workflow, in In) (Out, error) {
	var out Out
	for i := range in.Steps {
		seq, err := nimbus.Step(wf, "post"+strconv.Itoa(i), func() (uint64, error) {
			return post(in.URL, wf.IdempotencyKey())
		}, nimbus.Retry{MaxAttempts: 10, Backoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
		if err != nil {
			return out, err
		}
		out.Seqs = append(out.Seqs, seq)
	}
	return out, nil
}

func init() { nimbus.RegisterWorkflow(run) }

func main() {}
