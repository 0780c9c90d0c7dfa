// Command sdkguest is the test guest of the SDK contract. Each path
// exercises one behaviour of the runtime; see runtime_test.go.
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	nimbus "github.com/nimbus-dev/nimbus/sdk/go"
)

var (
	count int      // requests this instance served
	keep  [][]byte // the memory bomb's hoard
	sink  int
)

func init() {
	nimbus.HandleFunc(serve)
}

func serve(w http.ResponseWriter, r *http.Request) {
	count++
	switch {
	case strings.HasPrefix(r.URL.Path, "/hello"):
		name := r.PathValue("name")
		if name == "" {
			name = "world"
		}
		w.Header().Set("X-Invocation", nimbus.InvocationID(r))
		w.Header().Set("X-Trace", nimbus.TraceParent(r))
		w.Header().Set("X-Route", r.Pattern)
		fmt.Fprintf(w, "hello, %s", name)
	case r.URL.Path == "/echo":
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", r.Header.Get("Content-Type"))
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "%s %s?%s host=%s remote=%s len=%d body=", r.Method, r.URL.Path, r.URL.RawQuery, r.Host, r.RemoteAddr, r.ContentLength)
		w.Write(b)
	case r.URL.Path == "/count":
		fmt.Fprint(w, count)
	case r.URL.Path == "/log":
		if err := nimbus.Logf(nimbus.LevelWarn, "log from guest %d", count); err != nil {
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, err.Error())
			return
		}
		fmt.Fprint(w, "logged")
	case r.URL.Path == "/stdio":
		fmt.Println("to stdout")
		fmt.Fprint(os.Stderr, "to stderr, no newline")
		fmt.Fprint(w, "ok")
	case r.URL.Path == "/flood": // n lines on stdout, which is log output
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		for i := range n {
			fmt.Println("flood line", i)
		}
		fmt.Fprint(w, "flooded ", n)
	case r.URL.Path == "/env":
		fmt.Fprint(w, os.Getenv(r.URL.Query().Get("key")))
	case r.URL.Path == "/panic":
		panic("boom")
	case r.URL.Path == "/bomb":
		for {
			b := make([]byte, 1<<20)
			for i := 0; i < len(b); i += 4096 {
				b[i] = 1
			}
			keep = append(keep, b)
		}
	case r.URL.Path == "/loop":
		fmt.Println("looping") // tests wait for this line: the guest is spinning
		for i := 0; ; i++ {
			sink = i
		}
	case r.URL.Path == "/huge":
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.Write(make([]byte, n))
	default:
		http.NotFound(w, r)
	}
}

func main() {}
