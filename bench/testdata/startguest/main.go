// Command startguest is the guest of the bench's latency scenario: for each
// event it logs "start <event id> <Unix ns>", the wall-clock time at which
// its handler began, and answers 200. The bench reads the lines back from
// the node's logs and subtracts the time it began publishing the event.
package main

import (
	"net/http"
	"strconv"
	"time"

	nimbus "github.com/nimbus-dev/nimbus/sdk/go"
)

func init() {
	nimbus.HandleFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now().UnixNano() // first thing: the function has started
		nimbus.Log(nimbus.LevelInfo, "start "+r.Header.Get("Ce-Id")+" "+strconv.FormatInt(now, 10))
	})
}

func main() {}
