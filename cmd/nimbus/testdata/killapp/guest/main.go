// Command killapp is the guest of TestKillWithEventsInFlight (cmd/nimbus).
// For every event delivered it:
//
//  1. if the event has the extension gated=1, waits until the key "gate"
//     of the bucket "state" reads "open" (polling; after 45 s it answers
//     503, so the delivery is retried);
//  2. adds one to the key "invocations";
//  3. appends the time this run started (Unix nanoseconds) to the key
//     seen.<event id>, whose value so lists every run that got this far;
//  4. waits PAUSE (from the environment), so that a kill often lands
//     between a run's writes and its acknowledgement, and answers 200.
//
// Both writes are compare-and-swap, so concurrent runs lose nothing.
//
// POST /killapp/job?id=ID[&gated=1] (the test sends it with Prefer:
// respond-async) is handled the same way, with the id and gate from the
// query.
//
// GET /killapp/stats answers {"invocations": N, "seen": {"<id>": [t1, ...]}};
// with ?brief=1, only the invocations.
package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	nimbus "github.com/nimbus-dev/nimbus/sdk/go"
)

var state = nimbus.Bucket("state")

func init() {
	nimbus.HandleFunc(serve)
}

func main() {}

func serve(w http.ResponseWriter, r *http.Request) {
	id, gated := r.Header.Get("Ce-Id"), r.Header.Get("Ce-Gated") == "1"
	if id == "" && r.Method == http.MethodPost {
		// POST /killapp/job?id=...&gated=1, sent as an async invocation:
		// recorded like an event with that id.
		id, gated = r.URL.Query().Get("id"), r.URL.Query().Get("gated") == "1"
	}
	if id == "" { // an HTTP request, not an event
		stats(w, r.URL.Query().Get("brief") == "1")
		return
	}
	started := time.Now()
	if gated {
		if err := waitGate(45 * time.Second); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
	}
	err := update("invocations", func(old []byte) []byte {
		n, _ := strconv.Atoi(string(old))
		return []byte(strconv.Itoa(n + 1))
	})
	if err == nil {
		err = update("seen."+id, func(old []byte) []byte {
			if len(old) > 0 {
				old = append(old, ' ')
			}
			return strconv.AppendInt(old, started.UnixNano(), 10)
		})
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if d, err := time.ParseDuration(os.Getenv("PAUSE")); err == nil {
		time.Sleep(d)
	}
}

// waitGate polls the key "gate" until it reads "open", for at most max.
func waitGate(max time.Duration) error {
	for deadline := time.Now().Add(max); ; time.Sleep(20 * time.Millisecond) {
		v, _, err := state.Get("gate")
		if err == nil && string(v) == "open" {
			return nil
		}
		if err != nil && !errors.Is(err, nimbus.ErrNotFound) {
			return err
		}
		if time.Now().After(deadline) {
			return errors.New("gate still closed")
		}
	}
}

// update replaces key's value (nil if there is none) with next(value),
// with compare-and-swap: a concurrent write makes it read and try again.
func update(key string, next func([]byte) []byte) error {
	for {
		v, rev, err := state.Get(key)
		switch {
		case errors.Is(err, nimbus.ErrNotFound):
			v, rev = nil, 0
		case err != nil:
			return err
		}
		_, err = state.Put(key, next(v), nimbus.IfRevision(rev))
		if !errors.Is(err, nimbus.ErrRevisionMismatch) {
			return err
		}
	}
}

func stats(w http.ResponseWriter, brief bool) {
	out := struct {
		Invocations int                `json:"invocations"`
		Seen        map[string][]int64 `json:"seen,omitempty"`
	}{}
	v, _, err := state.Get("invocations")
	if err != nil && !errors.Is(err, nimbus.ErrNotFound) {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	out.Invocations, _ = strconv.Atoi(string(v))
	if !brief {
		keys, err := state.List("seen.")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		out.Seen = make(map[string][]int64, len(keys))
		for _, k := range keys {
			v, _, err := state.Get(k)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			var runs []int64
			for _, f := range strings.Fields(string(v)) {
				t, _ := strconv.ParseInt(f, 10, 64)
				runs = append(runs, t)
			}
			out.Seen[strings.TrimPrefix(k, "seen.")] = runs
		}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}
