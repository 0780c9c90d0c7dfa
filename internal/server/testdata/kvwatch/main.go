// Command kvwatch is a test guest (Nimbus SDK) for bucket triggers: invoked
// with a bucket change, it records what it saw in the bucket "seen", under
// "seen.<key>": "<type> <revision> <op> <content-type> <body>".
package main

import (
	"fmt"
	"io"
	"net/http"

	nimbus "github.com/nimbus-dev/nimbus/sdk/go"
)

var seen = nimbus.Bucket("seen")

func init() {
	nimbus.HandleFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Ce-Id") == "" {
			http.Error(w, "not an event", http.StatusBadRequest)
			return
		}
		body, _ := io.ReadAll(r.Body)
		rec := fmt.Sprintf("%s %s %s %s %s", r.Header.Get("Ce-Type"), r.Header.Get("Ce-Nimbuskvrevision"),
			r.Header.Get("Ce-Nimbuskvop"), r.Header.Get("Content-Type"), body)
		if _, err := seen.Put("seen."+r.Header.Get("Ce-Subject"), []byte(rec)); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
}

func main() {}
