// Command egress is a test guest (Nimbus SDK) that calls an outside service
// with a secret: GET /pay?to=URL reads the secret STRIPE_KEY, sends it as
// a bearer token to URL with nimbus.Fetch and answers the upstream's status,
// whether the upstream saw the token (it echoes headers back), and the
// sha256 of the secret it read (never the secret). /secret?name=N reads a
// secret and answers its error, if any.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"

	nimbus "github.com/nimbus-dev/nimbus/sdk/go"
)

func init() {
	nimbus.HandleFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/secret":
			if _, err := nimbus.Secret(r.URL.Query().Get("name")); err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			fmt.Fprint(w, "ok")
		case "/pay":
			key, err := nimbus.Secret("STRIPE_KEY")
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			req, _ := http.NewRequest(http.MethodPost, r.URL.Query().Get("to"), nil)
			req.Header.Set("Authorization", "Bearer "+key)
			client := &http.Client{Transport: &nimbus.Transport{}}
			resp, err := client.Do(req)
			if err != nil {
				nimbus.Log(nimbus.LevelWarn, "payment call failed: "+err.Error())
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			defer resp.Body.Close()
			h := sha256.Sum256([]byte(key))
			fmt.Fprintf(w, "status=%d auth=%v key=%s", resp.StatusCode, resp.Header.Get("Echo-Authorization") == "Bearer "+key, hex.EncodeToString(h[:8]))
		}
	})
}

func main() {}
