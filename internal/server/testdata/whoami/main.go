// Command whoami is a test guest (Nimbus SDK) that answers what the
// gateway told it of the caller: each X-Nimbus-Auth-* header as
// "Name: value" lines, sorted, and whether an Authorization header
// reached it.
package main

import (
	"fmt"
	"net/http"
	"sort"
	"strings"

	nimbus "github.com/nimbus-dev/nimbus/sdk/go"
)

func init() {
	nimbus.HandleFunc(func(w http.ResponseWriter, r *http.Request) {
		var lines []string
		for name, vs := range r.Header {
			if strings.HasPrefix(http.CanonicalHeaderKey(name), "X-Nimbus-Auth") {
				lines = append(lines, http.CanonicalHeaderKey(name)+": "+strings.Join(vs, ","))
			}
		}
		sort.Strings(lines)
		lines = append(lines, fmt.Sprintf("authorization: %v", r.Header.Get("Authorization") != ""))
		fmt.Fprintln(w, strings.Join(lines, "\n"))
	})
}

func main() {}
