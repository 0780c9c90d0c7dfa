// Command constguest is an SDK guest whose handler writes a constant: the
// warm scenario runs it to show what the SDK costs (decoding the request,
// building the *http.Request, encoding the response) apart from the
// handler's own work.
package main

import (
	"net/http"

	nimbus "github.com/nimbus-dev/nimbus/sdk/go"
)

var hello = []byte("hello, bench\n")

func init() {
	nimbus.HandleFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Type"] = []string{"text/plain; charset=utf-8"}
		w.Write(hello)
	})
}

func main() {}
