// Command hello is the example Nimbus SDK function: GET /hello/{name} greets,
// POST echoes the body back. Build it with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o hello.wasm .
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"

	nimbus "github.com/nimbus-dev/nimbus/sdk/go"
)

func init() {
	nimbus.HandleFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			body, _ := io.ReadAll(r.Body)
			if ct := r.Header.Get("Content-Type"); ct != "" {
				w.Header().Set("Content-Type", ct)
			}
			w.Write(body)
			return
		}
		name := r.PathValue("name")
		if name == "" {
			name = "world"
		}
		// Logging needs `capabilities: [log]`; without it the call is denied
		// and the greeting still works.
		_ = nimbus.Logf(nimbus.LevelInfo, "greeting %s", name)
		greeting := os.Getenv("GREETING") // from env: in nimbus.yaml
		if greeting == "" {
			greeting = "hello"
		}
		fmt.Fprintf(w, "%s, %s\n", greeting, name)
	})
}

func main() {}
