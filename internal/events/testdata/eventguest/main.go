// Command eventguest is the test guest of the trigger dispatcher. It is
// invoked with a CloudEvent in binary mode; what it does depends on the
// event's type:
//
//	fast   200, empty body (benchmarks)
//	ok     200, body lists the ce-* headers it saw (one "name=value" a line)
//	fail   500 (a poison event)
//	flaky  500 while the delivery attempt (Nimbus-Attempt) is at most the
//	       event's "failtimes" extension, then 200
//	other  200
//
// Every answer carries X-Trace (the invocation's traceparent) and
// X-Attempt (the Nimbus-Attempt header it saw).
package main

import (
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"

	nimbus "github.com/nimbus-dev/nimbus/sdk/go"
)

func init() {
	nimbus.HandleFunc(serve)
}

func serve(w http.ResponseWriter, r *http.Request) {
	attempt := r.Header.Get("Nimbus-Attempt")
	w.Header().Set("X-Trace", nimbus.TraceParent(r))
	w.Header().Set("X-Attempt", attempt)
	switch r.Header.Get("Ce-Type") {
	case "fast":
		return // 200, nothing else: the benchmark's minimal path
	case "fail":
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprint(w, "poison event")
		return
	case "flaky":
		n, _ := strconv.Atoi(r.Header.Get("Ce-Failtimes"))
		a, _ := strconv.Atoi(attempt)
		if a <= n {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "flaky: attempt %d of %d failing", a, n)
			return
		}
	}
	var lines []string
	for k, vs := range r.Header {
		if strings.HasPrefix(strings.ToLower(k), "ce-") {
			lines = append(lines, strings.ToLower(k)+"="+strings.Join(vs, ","))
		}
	}
	sort.Strings(lines)
	lines = append(lines, "content-type="+r.Header.Get("Content-Type"))
	fmt.Fprintln(w, strings.Join(lines, "\n"))
}

func main() {}
