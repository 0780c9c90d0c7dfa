// Command wagiguest is the test guest of the WAGI contract: a plain WASI
// command. The query's mode selects a behaviour; see runtime_test.go.
package main

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"sort"
	"strings"
)

// hits starts at 41 from the module's data: every request, on a fresh
// instance, must print 42.
var hits = 41

func main() {
	q, _ := url.ParseQuery(os.Getenv("QUERY_STRING"))
	switch q.Get("mode") {
	case "count":
		hits++
		fmt.Printf("Content-Type: text/plain\n\n%d", hits)
	case "status":
		fmt.Print("Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope")
	case "redirect":
		fmt.Print("Location: /elsewhere\n\n")
	case "env":
		fmt.Print("Content-Type: text/plain\n\n")
		env := os.Environ()
		sort.Strings(env)
		fmt.Print(strings.Join(env, "\n"))
	case "bomb":
		var keep [][]byte
		for {
			b := make([]byte, 1<<20)
			for i := 0; i < len(b); i += 4096 {
				b[i] = 1
			}
			keep = append(keep, b)
		}
	case "loop":
		for i := 0; ; i++ {
			if i < 0 {
				fmt.Print(i)
			}
		}
	case "huge":
		fmt.Print("Content-Type: application/octet-stream\n\n")
		chunk := make([]byte, 64<<10)
		for range 200 { // 12.5MiB
			os.Stdout.Write(chunk)
		}
	case "flood": // a response that never ends
		fmt.Print("Content-Type: text/plain\n\n")
		for {
			fmt.Println("all work and no play makes jack a dull boy")
		}
	case "floodraw": // output that never ends, not even its headers
		chunk := strings.Repeat("x", 1024)
		for {
			fmt.Print(chunk)
		}
	case "fail":
		fmt.Fprintln(os.Stderr, "failing on purpose")
		os.Exit(3)
	case "panic":
		panic("wagi boom")
	case "badcgi":
		fmt.Print("this is not a header\n\nbody")
	default:
		body, _ := io.ReadAll(os.Stdin)
		fmt.Print("Content-Type: text/plain\n")
		fmt.Print("X-Guest: wagi\n\n")
		fmt.Printf("method=%s path=%s query=%s id=%s route=%s body=%s",
			os.Getenv("REQUEST_METHOD"), os.Getenv("PATH_INFO"), os.Getenv("QUERY_STRING"),
			os.Getenv("X_PARAM_ID"), os.Getenv("X_MATCHED_ROUTE"), body)
	}
}
