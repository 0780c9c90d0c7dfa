// Command counter is the key-value example: POST /count/{name} adds one to
// a counter kept in the bucket "counts", GET /count/{name} reads it.
// Increments use compare-and-swap, so concurrent requests never lose one.
package main

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	nimbus "github.com/nimbus-dev/nimbus/sdk/go"
)

var counts = nimbus.Bucket("counts")

func init() {
	nimbus.HandleFunc(func(w http.ResponseWriter, r *http.Request) {
		key := "count." + r.PathValue("name")
		if r.Method == http.MethodGet {
			v, _, err := counts.Get(key)
			if errors.Is(err, nimbus.ErrNotFound) {
				v = []byte("0")
			} else if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			fmt.Fprintf(w, "%s\n", v)
			return
		}
		for {
			v, rev, err := counts.Get(key)
			n := 0
			switch {
			case errors.Is(err, nimbus.ErrNotFound):
				rev = 0 // create: the key must not exist yet
			case err != nil:
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			default:
				n, _ = strconv.Atoi(string(v))
			}
			_, err = counts.Put(key, []byte(strconv.Itoa(n+1)), nimbus.IfRevision(rev))
			if errors.Is(err, nimbus.ErrRevisionMismatch) {
				continue // someone else incremented first: read again
			}
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			fmt.Fprintf(w, "%d\n", n+1)
			return
		}
	})
}

func main() {}
