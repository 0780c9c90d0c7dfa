// Command capguest is the guest of the bench's egress scenario: GET
// /fetch?url=U&n=N makes N sequential nimbus.Fetch GETs of U, reading each
// body; GET /secret?name=S&n=N reads the secret S N times. n=0 answers at
// once, which is the cost of the request itself, to subtract.
package main

import (
	"io"
	"net/http"
	"strconv"

	nimbus "github.com/nimbus-dev/nimbus/sdk/go"
)

func init() {
	nimbus.HandleFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		n, _ := strconv.Atoi(q.Get("n"))
		switch r.URL.Path {
		case "/fetch":
			for range n {
				req, _ := http.NewRequest(http.MethodGet, q.Get("url"), nil)
				resp, err := nimbus.Fetch(req)
				if err != nil {
					http.Error(w, err.Error(), http.StatusBadGateway)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					http.Error(w, "upstream "+resp.Status, http.StatusBadGateway)
					return
				}
			}
		case "/secret":
			for range n {
				if _, err := nimbus.Secret(q.Get("name")); err != nil {
					http.Error(w, err.Error(), http.StatusBadGateway)
					return
				}
			}
		}
	})
}

func main() {}
