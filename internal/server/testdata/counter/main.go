// Command counter is a test guest (Nimbus SDK) that proves instance
// exclusivity: each instance has a random id and counts the requests it
// served. If two requests ever ran in one instance at once, the counter
// would skip or repeat, and the guest panics when it sees that.
package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"

	nimbus "github.com/nimbus-dev/nimbus/sdk/go"
)

var (
	id     string
	served int
	sink   int
)

func init() {
	nimbus.HandleFunc(func(w http.ResponseWriter, r *http.Request) {
		if id == "" {
			// Drawn at the first request, not in init: init runs once per
			// revision and node, and every further instance starts from
			// the memory it left (docs/functions.md).
			var b [8]byte
			rand.Read(b[:])
			id = hex.EncodeToString(b[:])
		}
		served++
		n := served
		for i := 0; i < 200000; i++ { // long enough for overlapping requests to collide
			sink += i
		}
		if served != n {
			panic("instance entered by two requests at once")
		}
		fmt.Fprintf(w, "%s %d", id, n)
	})
}

func main() {}
