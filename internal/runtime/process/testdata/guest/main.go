// Command guest is the process runtime's test guest: an HTTP server on
// $PORT with one endpoint per behaviour the tests need, hostile ones
// included.
package main

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

func main() {
	if os.Getenv("GUEST_FAIL_START") != "" {
		fmt.Fprintln(os.Stderr, "cannot start: GUEST_FAIL_START is set")
		os.Exit(2)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Echo-Method", r.Method)
		w.Header().Set("X-Echo-Query", r.URL.RawQuery)
		w.Header().Set("X-Echo-Test", r.Header.Get("X-Test"))
		w.Header().Set("X-Echo-Invocation", r.Header.Get("X-Nimbus-Invocation-Id"))
		w.WriteHeader(201)
		w.Write(body)
	})
	mux.HandleFunc("/env", func(w http.ResponseWriter, r *http.Request) {
		env := os.Environ()
		sort.Strings(env)
		json.NewEncoder(w).Encode(env)
	})
	mux.HandleFunc("/whoami", func(w http.ResponseWriter, r *http.Request) {
		wd, _ := os.Getwd()
		host, _ := os.Hostname()
		groups, _ := os.Getgroups()
		// Threads of this process with any root id (real, effective,
		// saved or filesystem uid or gid).
		root := 0
		tasks, _ := os.ReadDir("/proc/self/task")
		for _, task := range tasks {
			st, _ := os.ReadFile("/proc/self/task/" + task.Name() + "/status")
			for _, l := range strings.Split(string(st), "\n") {
				if f := strings.Fields(l); len(f) == 5 && (f[0] == "Uid:" || f[0] == "Gid:") && slices.Contains(f[1:], "0") {
					root++
				}
			}
		}
		// Threads whose scheduling policy is not SCHED_BATCH (3): field 41
		// of their stat, the 39th after the command's closing parenthesis.
		nonbatch := 0
		for _, task := range tasks {
			st, _ := os.ReadFile("/proc/self/task/" + task.Name() + "/stat")
			_, rest, _ := strings.Cut(string(st), ") ")
			if f := strings.Fields(rest); len(f) < 39 || f[38] != "3" {
				nonbatch++
			}
		}
		fmt.Fprintf(w, "uid=%d pid=%d wd=%s host=%s euid=%d gid=%d egid=%d groups=%v threads=%d rootids=%d nonbatch=%d",
			os.Getuid(), os.Getpid(), wd, host, os.Geteuid(), os.Getgid(), os.Getegid(), groups, len(tasks), root, nonbatch)
	})
	mux.HandleFunc("/log", func(w http.ResponseWriter, r *http.Request) {
		fmt.Println("to stdout", r.URL.Query().Get("tag"))
		fmt.Fprintln(os.Stderr, "to stderr", r.URL.Query().Get("tag"))
		w.Write([]byte("logged"))
	})
	mux.HandleFunc("/crash", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(os.Stderr, "boom: crashing on purpose")
		os.Exit(3)
	})
	mux.HandleFunc("/exit-later", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("bye"))
		go func() { time.Sleep(10 * time.Millisecond); os.Exit(4) }()
	})
	mux.HandleFunc("/sleep", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(time.Duration(atoi(r.URL.Query().Get("ms"), 0)) * time.Millisecond):
			w.Write([]byte("slept"))
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("/loop", func(w http.ResponseWriter, r *http.Request) {
		for {
		}
	})
	mux.HandleFunc("/membomb", func(w http.ResponseWriter, r *http.Request) {
		var keep [][]byte
		for {
			b := make([]byte, 1<<20)
			for i := range b {
				b[i] = 1
			}
			keep = append(keep, b)
		}
	})
	mux.HandleFunc("/forkbomb", func(w http.ResponseWriter, r *http.Request) {
		// Each shell starts two more, forever.
		cmd := exec.Command("/bin/sh", "-c", `b() { b & b & wait; }; b`)
		if err := cmd.Start(); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		time.Sleep(time.Duration(atoi(r.URL.Query().Get("ms"), 300)) * time.Millisecond)
		w.Write([]byte("bombed"))
	})
	mux.HandleFunc("/spawn", func(w http.ResponseWriter, r *http.Request) {
		cmd := exec.Command("/bin/sleep", "1000")
		if err := cmd.Start(); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprint(w, cmd.Process.Pid)
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(strings.Repeat("x", atoi(r.URL.Query().Get("n"), 0))))
	})
	mux.HandleFunc("/headerbomb", func(w http.ResponseWriter, r *http.Request) {
		// An answer whose head never ends, written on the raw connection:
		// one endless header line, endless headers, or endless 1xx answers.
		c, bw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer c.Close()
		chunk := strings.Repeat("a", 1000)
		switch r.URL.Query().Get("kind") {
		case "line":
			bw.WriteString("HTTP/1.1 200 OK\r\nX-Long: ")
			for bw.Flush() == nil {
				bw.WriteString(chunk)
			}
		case "headers":
			bw.WriteString("HTTP/1.1 200 OK\r\n")
			for i := 0; bw.Flush() == nil; i++ {
				fmt.Fprintf(bw, "X-H%d: %s\r\n", i, chunk)
			}
		case "1xx":
			for bw.Flush() == nil {
				bw.WriteString("HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n")
			}
		}
	})
	mux.HandleFunc("/dial", func(w http.ResponseWriter, r *http.Request) {
		c, err := net.DialTimeout("tcp", r.URL.Query().Get("addr"), time.Second)
		if err != nil {
			fmt.Fprint(w, "dial failed: ", err)
			return
		}
		c.Close()
		fmt.Fprint(w, "dial ok")
	})
	mux.HandleFunc("/write", func(w http.ResponseWriter, r *http.Request) {
		if err := os.WriteFile("written.txt", []byte("x"), 0o644); err == nil {
			fmt.Fprint(w, "app dir writable; ")
		} else {
			fmt.Fprint(w, "app dir read-only; ")
		}
		if err := os.WriteFile(os.Getenv("TMPDIR")+"/t.txt", []byte("x"), 0o644); err == nil {
			fmt.Fprint(w, "tmp writable")
		} else {
			fmt.Fprint(w, "tmp failed: ", err)
		}
	})
	mux.HandleFunc("/read", func(w http.ResponseWriter, r *http.Request) {
		_, err := os.ReadFile(r.URL.Query().Get("path"))
		if err != nil {
			fmt.Fprint(w, "read failed: ", err)
			return
		}
		fmt.Fprint(w, "read ok")
	})
	mux.HandleFunc("/fill", func(w http.ResponseWriter, r *http.Request) {
		// Writes $TMPDIR/fill in 64KiB blocks until a write fails or n
		// bytes are written, and says how far it got.
		f, err := os.Create(os.Getenv("TMPDIR") + "/fill")
		if err != nil {
			fmt.Fprint(w, "create failed: ", err)
			return
		}
		defer f.Close()
		block := make([]byte, 64<<10)
		n := atoi(r.URL.Query().Get("n"), 0)
		written := 0
		for written < n {
			k, err := f.Write(block)
			written += k
			if err != nil {
				fmt.Fprintf(w, "wrote %d: %v", written, err)
				return
			}
		}
		fmt.Fprintf(w, "wrote %d", written)
	})
	mux.HandleFunc("/cat", func(w http.ResponseWriter, r *http.Request) {
		b, err := os.ReadFile(r.URL.Query().Get("path"))
		if err != nil {
			fmt.Fprint(w, "read failed: ", err)
			return
		}
		w.Write(b)
	})
	mux.HandleFunc("/ls", func(w http.ResponseWriter, r *http.Request) {
		ents, err := os.ReadDir(r.URL.Query().Get("path"))
		if err != nil {
			fmt.Fprint(w, "ls failed: ", err)
			return
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		fmt.Fprint(w, strings.Join(names, " "))
	})
	mux.HandleFunc("/api", func(w http.ResponseWriter, r *http.Request) {
		// Calls the platform API: ?method=PUT&path=/kv/b/k&body=v[&token=t],
		// passing the invocation id on; answers "status body".
		q := r.URL.Query()
		req, err := http.NewRequest(q.Get("method"), os.Getenv("NIMBUS_API")+q.Get("path"), strings.NewReader(q.Get("body")))
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		token := os.Getenv("NIMBUS_TOKEN")
		if q.Has("token") {
			token = q.Get("token")
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("X-Nimbus-Invocation-Id", r.Header.Get("X-Nimbus-Invocation-Id"))
		if n := atoi(q.Get("pad"), 0); n > 0 {
			req.Header.Set("X-Pad", strings.Repeat("p", n))
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			fmt.Fprint(w, "call failed: ", err)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		fmt.Fprintf(w, "%d %s", resp.StatusCode, body)
	})
	mux.HandleFunc("/fetch", func(w http.ResponseWriter, r *http.Request) {
		// GETs ?url= with the proxy the environment names (as most HTTP
		// clients do); ?insecure=1 skips TLS verification (a test server's
		// certificate). Answers "status body" or "fetch failed: ...".
		tr := &http.Transport{Proxy: http.ProxyFromEnvironment,
			TLSClientConfig: &tls.Config{InsecureSkipVerify: r.URL.Query().Get("insecure") == "1"}}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get(r.URL.Query().Get("url"))
		if err != nil {
			fmt.Fprint(w, "fetch failed: ", err)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		fmt.Fprintf(w, "%d %s", resp.StatusCode, body)
	})
	mux.HandleFunc("/tunnels", func(w http.ResponseWriter, r *http.Request) {
		// Opens ?n= CONNECT tunnels to ?addr= through $HTTPS_PROXY at once
		// and answers how many the proxy opened.
		proxy := strings.TrimPrefix(os.Getenv("HTTPS_PROXY"), "http://")
		ok := 0
		for range atoi(r.URL.Query().Get("n"), 0) {
			c, err := net.DialTimeout("tcp", proxy, time.Second)
			if err != nil {
				break
			}
			defer c.Close()
			fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", r.URL.Query().Get("addr"), r.URL.Query().Get("addr"))
			buf := make([]byte, 12)
			if _, err := io.ReadFull(c, buf); err == nil && string(buf) == "HTTP/1.1 200" {
				ok++
			}
		}
		fmt.Fprintf(w, "%d", ok)
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	if err := http.ListenAndServe(":"+os.Getenv("PORT"), mux); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func atoi(s string, def int) int {
	if n, err := strconv.Atoi(s); err == nil {
		return n
	}
	return def
}
