// Command process-go is a process function in Go: a plain net/http server
// on $PORT, built natively by deploy (build.command in nimbus.yaml).
package main

import (
	"encoding/json"
	"log"
	"net/http"
	"os"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// No log line per request: each one is stored in the app's logs,
		// which costs more than this handler.
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{
			"runtime":    "go",
			"greeting":   os.Getenv("GREETING"),
			"path":       r.URL.String(),
			"invocation": r.Header.Get("X-Nimbus-Invocation-Id"),
		})
	})
	log.Fatal(http.ListenAndServe(":"+os.Getenv("PORT"), nil))
}
