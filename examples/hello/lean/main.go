// Command lean is the hello function written against the SDK's lean API:
// a nimbus.HandleRequest handler reads the request in place (no net/http
// maps, one allocation per request) and writes its answer into buffers
// reused from one request to the next. In a Go guest that is several
// times less work per request than a net/http handler; docs/functions.md
// says when to choose which.
package main

import (
	"cmp"
	"os"

	nimbus "github.com/nimbus-dev/nimbus/sdk/go"
)

// greeting comes from env: in nimbus.yaml, the same for every instance of
// a revision, so it is read once.
var greeting = cmp.Or(os.Getenv("GREETING"), "hello")

func init() {
	nimbus.HandleRequest(func(w *nimbus.Response, r *nimbus.Request) {
		if r.Method == "POST" {
			if ct := r.Header("Content-Type"); ct != "" {
				w.SetHeader("Content-Type", ct)
			}
			w.Write(r.Body)
			return
		}
		name := cmp.Or(r.PathValue("name"), "world")
		w.WriteString(greeting)
		w.WriteString(", ")
		w.WriteString(name)
		w.WriteString("\n")
	})
}

func main() {}
